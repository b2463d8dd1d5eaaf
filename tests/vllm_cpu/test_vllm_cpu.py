"""vLLM's CPU build running the embedded model through :class:`VLLMGenerator` (no scripted engine).

Skipped wherever vllm cannot be imported (the default venv, CI's ``make test-all``); ``make
test-vllm`` runs them in ``.venv-vllm``. Each engine takes about a minute to start on 2 cores, so
the module starts two: the base model in fp32, and the base under a random LoRA.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from characterlab.data.records import GenerationRequest, Message, SamplingParams  # noqa: E402
from characterlab.models.refs import parse_model_ref  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "How do I boil an egg?",
           "Name three prime numbers.", "What should I do if I feel bored?", "Explain gravity to a child.",
           "Give me one tip for learning to code.", "If you ruled the world, what would you do?"]
GREEDY = SamplingParams(max_new_tokens=32, temperature=0.0)


def _requests(n: int = 1, seed0: int = 0) -> list[GenerationRequest]:
    return [GenerationRequest((Message("user", p),), n=n, seed=seed0 + i) for i, p in enumerate(PROMPTS)]


def _texts(done) -> list[str]:
    return [c.text for per in done for c in per]


def _prefix_share(a: list[str], b: list[str], tokenizer) -> float:
    shares = []
    for x, y in zip(a, b):
        tx, ty = tokenizer(x, add_special_tokens=False)["input_ids"], tokenizer(y, add_special_tokens=False)["input_ids"]
        k = next((i for i, (p, q) in enumerate(zip(tx, ty)) if p != q), min(len(tx), len(ty)))
        shares.append(k / max(len(tx), len(ty), 1))
    return sum(shares) / len(shares)


def _hf_greedy(ref) -> list[str]:
    import torch

    from characterlab.models.generation import LocalGenerator
    from characterlab.models.local import load_local_model

    return _texts(LocalGenerator(load_local_model(ref, dtype=torch.float32, device="cpu")).generate(_requests(), GREEDY))


@pytest.fixture(scope="module")
def embedded():
    return parse_model_ref("embedded")


@pytest.fixture(scope="module")
def fp32_engine(embedded):
    from characterlab.models.vllm_generator import VLLMGenerator

    gen = VLLMGenerator(embedded, dtype="float32")
    yield gen
    gen.close()


def test_the_cpu_build_is_chosen_when_asked_for(embedded):
    from characterlab.models.backend import choose_backend

    assert choose_backend(embedded, "vllm").name == "vllm"
    assert choose_backend(embedded, "auto").name == "hf"  # never silently: the CPU figures are the loop's


def test_greedy_replies_match_the_transformers_loop(embedded, fp32_engine):
    hf = _hf_greedy(embedded)
    vllm = _texts(fp32_engine.generate(_requests(), GREEDY))
    assert all(vllm)
    # bench/vllm_parity.py measures this on 32 prompts; fp32 leaves few ties for the kernels to break differently
    assert sum(a == b for a, b in zip(hf, vllm)) >= 6, list(zip(hf, vllm))
    assert _prefix_share(hf, vllm, fp32_engine.tokenizer) >= 0.85
    assert any("Paris" in t for t in vllm[:1])


def test_a_sample_depends_on_its_seed_only(fp32_engine):
    params = SamplingParams(max_new_tokens=24, temperature=1.0)
    reqs = _requests(n=2, seed0=40)
    first = fp32_engine.generate(reqs, params)
    assert [[c.sample_index for c in per] for per in first] == [[0, 1]] * len(PROMPTS)
    assert all(c.n_tokens > 0 for per in first for c in per)
    assert _texts(first) == _texts(fp32_engine.generate(reqs, params))  # the same request and seeds, twice
    assert _texts(first[2:3]) == _texts(fp32_engine.generate(reqs[2:3], params))  # alone as in the batch
    other = _texts(fp32_engine.generate(_requests(n=2, seed0=90), params))
    assert sum(a != b for a, b in zip(_texts(first), other)) >= len(other) // 2


def test_a_seeded_batch_longer_than_one_prefill_step(fp32_engine):
    # 160 requests of ~35 prompt tokens: more than vLLM's 4096-token step, which with chunked
    # prefill split a seeded prompt and killed the CPU engine (engine_options)
    done = fp32_engine.generate(_requests(n=20), SamplingParams(max_new_tokens=4, temperature=1.0))
    assert [len(per) for per in done] == [20] * len(PROMPTS)


def test_complete_continues_a_rendered_prompt(fp32_engine):
    prompt = fp32_engine.render(_requests()[0])
    [c] = fp32_engine.complete([prompt], [3], GREEDY)
    assert "Paris" in c.text and c.request_index == 0


def test_a_lora_adapter_is_served_as_peft_applies_it(embedded, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    from characterlab.models.local import load_local_model
    from characterlab.models.vllm_generator import VLLMGenerator

    folder = tmp_path_factory.mktemp("lora")
    base = load_local_model(embedded, dtype=torch.float32, device="cpu").model
    torch.manual_seed(1)
    lora = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights="gaussian"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    lora.save_pretrained(folder)
    ref = parse_model_ref("embedded", adapter=folder)
    hf = _hf_greedy(ref)
    assert hf != _hf_greedy(embedded)  # the adapter changes replies
    gen = VLLMGenerator(ref, dtype="float32")
    try:
        vllm = _texts(gen.generate(_requests(), GREEDY))
    finally:
        gen.close()
    assert sum(a == b for a, b in zip(hf, vllm)) >= 5, list(zip(hf, vllm))
    assert _prefix_share(hf, vllm, gen.tokenizer) >= 0.8
