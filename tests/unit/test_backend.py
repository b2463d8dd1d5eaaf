"""The generation backend: which engine is chosen, the vLLM generator's contract (through a
scripted engine; tests/vllm_cpu runs the real one where vllm is installed), and the merged base
vLLM loads under a stacked adapter."""

import json

import pytest
import torch

from characterlab.data.records import GenerationRequest, Message, SamplingParams, sample_seed
from characterlab.errors import InputError
from characterlab.models.backend import choose_backend, vllm_cpu_build
from characterlab.models.refs import ModelRef, parse_model_ref
from characterlab.models.vllm_generator import EngineOutput, VLLMGenerator, engine_options, lora_rank_slot

LOCAL = ModelRef(kind="hf", name="/models/x")
API = ModelRef(kind="openai", name="gpt", base_url="http://localhost:1")


@pytest.mark.parametrize("requested,internals,cuda,vllm,expected", [
    ("auto", False, True, True, "vllm"),
    ("auto", False, False, True, "hf"),
    ("auto", False, True, False, "hf"),
    ("auto", True, True, True, "hf"),
    ("hf", False, True, True, "hf"),
    ("vllm", False, True, True, "vllm"),
])
def test_choice(requested, internals, cuda, vllm, expected):
    assert choose_backend(LOCAL, requested, needs_internals=internals, cuda=cuda, vllm=vllm).name == expected


@pytest.mark.parametrize("requested,internals,cuda,vllm,says", [
    ("vllm", False, False, True, "CUDA"),
    ("vllm", False, True, False, "characterlab[gpu]"),
    ("vllm", True, True, True, "internals"),
    ("fast", False, True, True, "unknown backend"),
])
def test_an_impossible_choice_is_an_input_error(requested, internals, cuda, vllm, says):
    with pytest.raises(InputError) as e:
        choose_backend(LOCAL, requested, needs_internals=internals, cuda=cuda, vllm=vllm)
    assert says in str(e.value) and e.value.field == "backend"


def test_the_cpu_build_of_vllm_runs_only_when_asked_for():
    choice = choose_backend(LOCAL, "vllm", cuda=False, vllm=True, vllm_cpu=True)
    assert choice.name == "vllm" and "CPU" in choice.reason
    assert choose_backend(LOCAL, "auto", cuda=False, vllm=True, vllm_cpu=True).name == "hf"
    with pytest.raises(InputError, match="internals"):
        choose_backend(LOCAL, "vllm", needs_internals=True, cuda=False, vllm=True, vllm_cpu=True)


def test_on_a_cpu_vllm_runs_eagerly_with_a_fixed_kv_cache():
    assert engine_options(False, 0.5) == {"gpu_memory_utilization": 0.5}
    cpu = {"enforce_eager": True, "enable_chunked_prefill": False}
    assert engine_options(True, 0.5, {}) == cpu | {"kv_cache_memory_bytes": 2 << 30}
    assert engine_options(True, 0.5, {"VLLM_CPU_KVCACHE_SPACE": "4"}) == cpu  # vLLM reads it


def test_endpoints_keep_their_endpoint():
    assert choose_backend(API, "auto", cuda=True, vllm=True).name == "openai"
    with pytest.raises(InputError):
        choose_backend(API, "vllm", cuda=True, vllm=True)


def test_lora_rank_slots():
    assert [lora_rank_slot(r) for r in (1, 2, 8, 9, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(ValueError):
        lora_rank_slot(1024)


class ScriptedEngine:
    """Answers each prompt with its seed and length, ends every other one by length."""

    def __init__(self):
        self.calls = []

    def run(self, prompts, seeds, params):
        self.calls.append((list(map(list, prompts)), list(seeds), params))
        return [EngineOutput([7] * (1 + k % 3), f" seed={s} len={len(p)} ", "stop" if k % 2 == 0 else "length")
                for k, (p, s) in enumerate(zip(prompts, seeds))]


def test_vllm_generator_keeps_the_generator_contract(tiny_local):
    from characterlab.models.generation import LocalGenerator

    engine = ScriptedEngine()
    gen = VLLMGenerator(LOCAL, engine=engine, tokenizer=tiny_local.tokenizer)
    reqs = [GenerationRequest((Message("user", "hello there"),), n=2, seed=5),
            GenerationRequest((Message("system", "Be terse."), Message("user", "bye")), n=1, seed=9)]
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.9)
    out = gen.generate(reqs, params)
    [(prompts, seeds, seen)] = engine.calls
    hf = LocalGenerator(tiny_local)
    expected = [tiny_local.tokenizer(hf.render(r), add_special_tokens=False)["input_ids"] for r in reqs]
    assert prompts == [expected[0], expected[0], expected[1]]  # the same tokens the transformers loop decodes
    assert seeds == [sample_seed(5, 0), sample_seed(5, 1), sample_seed(9, 0)] and seen == params
    assert [[c.sample_index for c in per] for per in out] == [[0, 1], [0]]
    first = out[0][0]
    assert first.text == f"seed={sample_seed(5, 0)} len={len(expected[0])}" and first.finished and first.n_tokens == 1
    assert not out[0][1].finished and out[1][0].request_index == 1
    assert gen.complete(["abc"], [3], params)[0].seed == 3


def test_an_agent_runs_on_the_vllm_generator(tiny_local):
    from characterlab.agentic.episode import LocalPolicy, policy_for

    gen = VLLMGenerator(LOCAL, engine=ScriptedEngine(), tokenizer=tiny_local.tokenizer)
    assert isinstance(policy_for(gen), LocalPolicy)


def test_load_generator_falls_back_to_hf_without_a_gpu(tiny_ref, monkeypatch):
    from characterlab.models import backend
    from characterlab.models.generation import LocalGenerator, load_generator

    monkeypatch.setattr(backend, "cuda_available", lambda: False)
    monkeypatch.setattr(backend, "vllm_cpu_build", lambda: False)  # as in .venv; .venv-vllm has it
    gen = load_generator(parse_model_ref(tiny_ref), backend="auto")
    assert isinstance(gen, LocalGenerator) and gen.backend == "hf"
    with pytest.raises(InputError, match="CUDA"):
        load_generator(parse_model_ref(tiny_ref), backend="vllm")


def test_merged_base_for_vllm_equals_the_stacked_model(tiny_ref, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from characterlab.models.local import load_local_model
    from characterlab.models.vllm_generator import merged_model_dir

    monkeypatch.setenv("CHARACTERLAB_CACHE", str(tmp_path / "cache"))
    base = AutoModelForCausalLM.from_pretrained(tiny_ref[3:], dtype=torch.float32)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    ref = ModelRef(kind="hf", name=tiny_ref[3:], merged_adapters=(tmp_path / "adapter",))
    folder = merged_model_dir(ref)
    assert merged_model_dir(ref) == folder and merged_model_dir(ModelRef(kind="hf", name=tiny_ref[3:])) == tiny_ref[3:]
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 2
    ids = torch.tensor([[1, 5, 9, 13]])
    merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    stacked = load_local_model(ref, dtype=torch.float32, device="cpu").model
    plain = AutoModelForCausalLM.from_pretrained(tiny_ref[3:], dtype=torch.float32)
    with torch.no_grad():
        a, b, c = (m(ids).logits for m in (merged, stacked, plain))
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter changes the model ...
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # ... and the merged folder is that change


@pytest.mark.skipif(vllm_cpu_build(), reason="vLLM's CPU build is installed (.venv-vllm): --backend vllm runs")
def test_cli_refuses_vllm_without_a_gpu_before_any_work(tiny_ref, tmp_path):
    import subprocess
    import sys

    q = tmp_path / "q.yaml"
    q.write_text("- id: a\n  paraphrases: [hello]\n")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "characterlab.cli", "eval", "em", "--model", tiny_ref, "--questions", str(q),
                        "--samples", "1", "--judge", tiny_ref, "--backend", "vllm", "--out", str(out)],
                       capture_output=True, text=True, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "backend" in r.stderr and "CUDA" in r.stderr, r.stderr
    assert not (out / "units.sqlite").exists()
