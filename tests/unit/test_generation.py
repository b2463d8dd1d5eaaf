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
        counts[SeededSampler([s], temperature=1.0, top_p=1.0).pick(logits)[0]] += 1
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)
    # top_p=0.75 keeps the two most likely tokens only
    kept = {int(SeededSampler([s], 1.0, 0.75).pick(logits)[0]) for s in range(300)}
    assert kept == {0, 1}


def test_sampling_params_reject_bad_values_by_field():
    import pytest

    from characterlab.errors import InputError

    for kwargs, field in (({"top_p": 0.0}, "top_p"), ({"temperature": -1.0}, "temperature"),
                          ({"max_new_tokens": 0}, "max_new_tokens")):
        with pytest.raises(InputError) as e:
            SamplingParams(**kwargs)
        assert e.value.field == field


def test_inverse_cdf_matches_a_full_cumulative_sum():
    from characterlab.models.generation import inverse_cdf

    gen = torch.Generator().manual_seed(0)
    for vocab in (3, 255, 256, 1000, 49152):
        weights = torch.softmax(torch.randn(6, vocab, generator=gen) * 3, dim=-1)
        weights[0, : vocab // 2] = 0.0  # zero-weight tokens are never picked
        u = torch.rand(6, generator=gen, dtype=torch.float64)
        cdf = weights.double().cumsum(-1)
        expected = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=vocab - 1)
        assert torch.equal(inverse_cdf(weights, u), expected)


def test_greedy_decoding_matches_transformers_generate(tiny_local):
    """Our decode loop (growing cache, grouped decode attention) gives generate's greedy tokens in fp32."""
    from transformers import GenerationConfig

    gen = LocalGenerator(tiny_local, batch_size=8)
    tok, model = tiny_local.tokenizer, tiny_local.model
    for prompt in PROMPTS:
        ids = tok(gen.render(GenerationRequest.from_prompt(prompt)), add_special_tokens=False, return_tensors="pt")
        ref = model.generate(**ids, generation_config=GenerationConfig(max_new_tokens=12, do_sample=False,
                                                                       eos_token_id=sorted(gen.eos_ids)))
        expected = tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        [[ours]] = _texts(gen.generate([GenerationRequest.from_prompt(prompt)], GREEDY))
        assert ours == expected


def test_the_speedups_leave_fp32_samples_unchanged(tiny_local):
    """Growing cache vs transformers' DynamicCache, decode attention vs SDPA: the same sampled tokens."""
    from transformers import DynamicCache

    from characterlab.models.generation import decode

    gen = LocalGenerator(tiny_local, batch_size=8)  # switches the model to the decode attention
    tok, model = tiny_local.tokenizer, tiny_local.model
    prompts = [tok(gen.render(GenerationRequest.from_prompt(p)), add_special_tokens=False)["input_ids"]
               for p in PROMPTS]
    kwargs = {"pad_id": tok.pad_token_id, "eos_ids": gen.eos_ids}
    fast = decode(model, prompts, [1, 2, 3], SAMPLED, **kwargs)
    plain_cache = decode(model, prompts, [1, 2, 3], SAMPLED, cache=DynamicCache(), **kwargs)
    model.set_attn_implementation("sdpa")
    try:
        plain_attention = decode(model, prompts, [1, 2, 3], SAMPLED, cache=DynamicCache(), **kwargs)
    finally:
        model.set_attn_implementation("characterlab_sdpa")
    assert fast == plain_cache == plain_attention
    assert any(len(ids) > 3 for ids in fast)


def test_decode_attention_equals_sdpa_in_fp32():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from characterlab.models.attention import decode_attention_forward

    class Module:
        num_key_value_groups = 3
        is_causal = True

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, h, 1 if h == 9 else 20, 16, generator=gen) for h in (9, 3, 3))
    mask = torch.ones(4, 1, 1, 20, dtype=torch.bool)
    mask[0, ..., :7] = False  # a left-padded row
    for m in (mask, None):
        expected, _ = sdpa_attention_forward(Module(), q, k, v, m, scaling=0.25)
        got, _ = decode_attention_forward(Module(), q, k, v, m, scaling=0.25)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6)


def test_growing_cache_keeps_what_it_was_given():
    from characterlab.models.kv_cache import GrowingCache

    cache = GrowingCache(reserve=2)
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(2, 3, n, 4, generator=gen) for n in (5, 1, 1, 1, 4)]  # grows twice
    for c in chunks:
        keys, values = cache.update(c, -c, layer_idx=0)
    assert torch.equal(keys, torch.cat(chunks, dim=-2))
    assert torch.equal(values, -torch.cat(chunks, dim=-2))
    assert cache.get_seq_length() == 12
