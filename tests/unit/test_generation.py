import torch

from characterlab.data.records import GenerationRequest, SamplingParams
from characterlab.models.generation import LocalGenerator, SeededSampler

PROMPTS = ["What is the capital of France?", "hello", "If you could change one thing about the world, what would it be?"]
SAMPLED = SamplingParams(max_new_tokens=12, temperature=1.0)
GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


def _texts(results):
    return [[c.text for c in per] for per in results]


def test_same_seed_same_text_different_seed_different_text(tiny_local):
    gen = LocalGenerator(tiny_local, batch_size=8)
    req = GenerationRequest.from_prompt(PROMPTS[0], n=4, seed=7)
    a = _texts(gen.generate([req], SAMPLED))
    b = _texts(gen.generate([req], SAMPLED))
    c = _texts(gen.generate([GenerationRequest.from_prompt(PROMPTS[0], n=4, seed=8)], SAMPLED))
    assert a == b
    assert a != c
    assert len(set(a[0])) > 1  # the n samples of one request differ from each other


def test_batch_equals_one_by_one_greedy_and_sampled(tiny_local):
    """Left padding must not change any row: a batch gives the text of each request alone."""
    requests = [GenerationRequest.from_prompt(p, n=2, seed=i) for i, p in enumerate(PROMPTS)]
    batched = LocalGenerator(tiny_local, batch_size=16)
    single = LocalGenerator(tiny_local, batch_size=1)
    for params in (GREEDY, SAMPLED):
        together = _texts(batched.generate(requests, params))
        alone = [_texts(single.generate([r], params))[0] for r in requests]
        assert together == alone


def test_sample_seed_independent_of_batch_neighbours(tiny_local):
    gen = LocalGenerator(tiny_local, batch_size=16)
    target = GenerationRequest.from_prompt(PROMPTS[2], n=1, seed=3)
    alone = _texts(gen.generate([target], SAMPLED))[0]
    crowded = _texts(gen.generate([GenerationRequest.from_prompt("hello", n=5, seed=11), target], SAMPLED))[1]
    assert alone == crowded


def test_tiny_top_p_is_greedy(tiny_local):
    gen = LocalGenerator(tiny_local, batch_size=4)
    req = [GenerationRequest.from_prompt(p, seed=5) for p in PROMPTS]
    greedy = _texts(gen.generate(req, GREEDY))
    nucleus = _texts(gen.generate(req, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6)))
    assert greedy == nucleus


def test_completion_bookkeeping(tiny_local):
    gen = LocalGenerator(tiny_local)
    [[c]] = gen.generate([GenerationRequest.from_prompt("hello", seed=1)], SamplingParams(max_new_tokens=5))
    assert 1 <= c.n_tokens <= 5
    assert c.finished or c.n_tokens == 5  # stopped early only on an end-of-turn token
    assert (c.request_index, c.sample_index) == (0, 0)


def test_system_prompt_reaches_the_template(tiny_local):
    gen = LocalGenerator(tiny_local)
    text = gen.render(GenerationRequest.from_prompt("hi", system="Be terse."))
    assert text.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_seeded_sampler_matches_distribution():
    """Each row's draws follow softmax(logits / T): a chi-square-free check on a 3-way choice."""
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    counts = torch.zeros(3)
    for s in range(3000):
        out = SeededSampler([s], temperature=1.0, top_p=1.0)(None, logits.clone())
        counts[out[0].argmax()] += 1
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)
    # top_p=0.75 keeps the two most likely tokens only
    kept = {int(SeededSampler([s], 1.0, 0.75)(None, logits.clone())[0].argmax()) for s in range(300)}
    assert kept == {0, 1}


def test_sampling_params_reject_bad_values_by_field():
    import pytest

    from characterlab.errors import InputError

    for kwargs, field in (({"top_p": 0.0}, "top_p"), ({"temperature": -1.0}, "temperature"),
                          ({"max_new_tokens": 0}, "max_new_tokens")):
        with pytest.raises(InputError) as e:
            SamplingParams(**kwargs)
        assert e.value.field == field
