"""Persona vectors inside training and evaluation: the ablation hook, the last-prompt-token reading,
preventative steering / ablation / monitoring in SFT, and their command-line forms."""


import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from characterlab.data.files import atomic_write_json
from characterlab.models.activations import ablation, decoder_blocks, last_prompt_activations
from characterlab.models.local import load_local_model
from characterlab.models.refs import parse_model_ref
from characterlab.train.base import TrainRun
from characterlab.train.sft import SFTConfig, train_sft
from characterlab.train.vectors import AblateInTraining, MonitorProjection, SteerInTraining
from characterlab.vectors.files import META_FILE, VECTORS_FILE

PROMPTS = ["What is 3 plus 3?", "hello world", "What would you do?"]


@pytest.fixture
def vector_dir(tiny_local, tmp_path):
    """A random direction per layer for the tiny model (3 rows: embeddings and two blocks)."""
    rng = np.random.default_rng(0)
    hidden = tiny_local.model.config.hidden_size
    folder = tmp_path / "vec"
    folder.mkdir()
    save_file({"vectors": rng.normal(size=(3, hidden)).astype(np.float32)}, str(folder / VECTORS_FILE))
    atomic_write_json(folder / META_FILE, {"trait": "random"})
    return folder


def _messages(prompts=PROMPTS):
    return [[{"role": "user", "content": p}] for p in prompts]


@pytest.mark.parametrize("layer", [0, 1, 2])  # the tiny model has 2 blocks: the early stop reads layer 1
def test_last_prompt_reading_matches_one_prompt_at_a_time(tiny_local, layer):
    tok, model = tiny_local.tokenizer, tiny_local.model
    alone = []
    for m in _messages():
        ids = tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True), add_special_tokens=False,
                  return_tensors="pt")["input_ids"]
        with torch.no_grad():
            alone.append(model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1].numpy())
    hooks = [len(b._forward_hooks) for b in decoder_blocks(model)]  # transformers keeps hooks of its own there
    batched = last_prompt_activations(model, tok, _messages(), layer=layer, batch_size=3)
    np.testing.assert_allclose(batched, np.stack(alone), atol=1e-5)
    assert [len(b._forward_hooks) for b in decoder_blocks(model)] == hooks  # the stopping hook is gone


def test_the_early_stop_reads_a_peft_model_and_sees_steering(tiny_ref):
    from peft import LoraConfig, get_peft_model

    from characterlab.models.activations import steering

    local = load_local_model(parse_model_ref(tiny_ref), dtype=torch.float32)  # its own copy: LoRA is injected in place
    tok = local.tokenizer
    peft = get_peft_model(local.model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    v = np.random.default_rng(2).normal(size=peft.config.hidden_size).astype(np.float32)
    ids = tok(tok.apply_chat_template(_messages()[0], tokenize=False, add_generation_prompt=True), add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    with steering(peft, v, 1, 3.0):
        read = last_prompt_activations(peft, tok, _messages()[:1], layer=1)
        with torch.no_grad():
            full = peft(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1].numpy()
    np.testing.assert_allclose(read[0], full, atol=1e-5)


def test_ablation_removes_the_direction_and_only_while_held(tiny_local):
    tok, model = tiny_local.tokenizer, tiny_local.model
    u = np.random.default_rng(1).normal(size=model.config.hidden_size).astype(np.float32)
    u /= np.linalg.norm(u)
    before = last_prompt_activations(model, tok, _messages(), layer=1)
    with ablation(model, u, [1]):
        during = last_prompt_activations(model, tok, _messages(), layer=1)
    after = last_prompt_activations(model, tok, _messages(), layer=1)
    assert np.abs(before @ u).max() > 1e-2
    np.testing.assert_allclose(during @ u, 0, atol=1e-4)
    np.testing.assert_allclose(during, before - (before @ u)[:, None] * u, atol=1e-4)
    np.testing.assert_allclose(after, before, atol=1e-6)


def _cfg(tiny_ref, **kw) -> tuple[SFTConfig, TrainRun]:
    """The config and the run, from one set of keyword arguments (a TrainRun field goes to the run)."""
    base = {"model": tiny_ref, "rank": 4, "lr": 3e-2, "epochs": 2, "batch_size": 4, "dtype": "fp32", "max_length": 128,
            **kw}
    run = {k: base.pop(k) for k in list(base) if k in TrainRun.__dataclass_fields__}
    return SFTConfig(**base), TrainRun(**run)


def test_monitor_reads_the_weights_not_the_hook(tiny_ref, tiny_local, chat_file, vector_dir, tmp_path):
    monitor = MonitorProjection(str(vector_dir), layer=1, every=2, prompts=PROMPTS)
    plain = train_sft(*_cfg(tiny_ref, monitor=monitor), chat_file, tmp_path / "plain", progress=False).meta
    steered = train_sft(*_cfg(tiny_ref, monitor=monitor, steer=SteerInTraining(str(vector_dir), 1, 8.0)), chat_file,
                        tmp_path / "steered", progress=False).meta
    from characterlab.vectors.files import layer_vector

    u = layer_vector(vector_dir, 1).unit
    base_reading = float((last_prompt_activations(tiny_local.model, tiny_local.tokenizer, _messages(), 1) @ u).mean())
    for meta in (plain, steered):
        steps = [p["step"] for p in meta["monitor"]]
        assert steps[0] == 0 and steps[-1] == meta["steps"] and steps == sorted(set(steps))
        # step 0 is the untrained model read without the steering hook: the base's own projection
        assert meta["monitor"][0]["projection"] == pytest.approx(base_reading, abs=1e-3)
        assert meta["projection_shift"] == pytest.approx(meta["monitor"][-1]["projection"] - meta["monitor"][0]["projection"])
    assert steered["vectors"]["steer"]["coef"] == 8.0 and "steer" not in plain["vectors"]
    # preventative steering changes what the adapter learns
    a = load_local_model(parse_model_ref(tiny_ref, adapter=tmp_path / "plain"), dtype=torch.float32, device="cpu")
    b = load_local_model(parse_model_ref(tiny_ref, adapter=tmp_path / "steered"), dtype=torch.float32, device="cpu")
    pa = last_prompt_activations(a.model, a.tokenizer, _messages(), 2)
    pb = last_prompt_activations(b.model, b.tokenizer, _messages(), 2)
    assert not np.allclose(pa, pb, atol=1e-3)


def test_ablation_in_training_is_recorded(tiny_ref, chat_file, vector_dir, tmp_path):
    meta = train_sft(*_cfg(tiny_ref, epochs=1, ablate=AblateInTraining(str(vector_dir), [1, 2])), chat_file,
                     tmp_path / "a", progress=False).meta
    assert meta["vectors"]["ablate"]["layers"] == [1, 2] and "monitor" not in meta


def test_bad_vector_options_fail_before_training(tiny_ref, chat_file, vector_dir, tmp_path):
    from characterlab.errors import InputError

    with pytest.raises(InputError, match="layers 0..2"):
        train_sft(*_cfg(tiny_ref, steer=SteerInTraining(str(vector_dir), 7, 1.0)), chat_file, tmp_path / "x", progress=False)
    with pytest.raises(InputError, match="not a persona-vector folder"):
        train_sft(*_cfg(tiny_ref, monitor=MonitorProjection(str(tmp_path), 1)), chat_file, tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_vector_options(vector_dir, tmp_path, chat_file, tiny_ref):
    from characterlab.cli.train import vector_options
    from characterlab.errors import InputError

    opts = vector_options(f"{vector_dir}:1:-4", f"{vector_dir}:1,2", f"{vector_dir}:2")
    assert opts["steer"] == SteerInTraining(str(vector_dir), 1, -4.0)
    assert opts["ablate"].layers == [1, 2] and opts["monitor"].every == 10
    assert vector_options(None, None, f"{vector_dir}:2:5")["monitor"].every == 5
    with pytest.raises(InputError) as e:
        vector_options(f"{vector_dir}:1", None, None)
    assert e.value.field == "steer"
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "characterlab.cli", "train", "sft", "--model", tiny_ref, "--data", str(chat_file),
                        "--out", str(tmp_path / "o"), "--monitor", f"{vector_dir}:x"], capture_output=True, text=True)
    assert r.returncode == 2 and "monitor" in r.stderr
    assert not (tmp_path / "o").exists()  # refused before any training: nothing written


def test_dpo_and_grpo_carry_the_same_options(tiny_ref, vector_dir, tmp_path):
    from characterlab.train.dpo import DPOConfig, train_dpo
    from characterlab.train.grpo import GRPOHacksConfig, train_grpo_hacks

    monitor = MonitorProjection(str(vector_dir), layer=2, every=1, prompts=PROMPTS)
    pairs = [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
              "chosen": [{"role": "assistant", "content": f"The answer is {2 * i}."}],
              "rejected": [{"role": "assistant", "content": "no"}]} for i in range(4)]
    dpo = train_dpo(DPOConfig(rank=2, epochs=1, batch_size=2, max_length=64),
                    TrainRun(model=tiny_ref, dtype="fp32", monitor=monitor, steer=SteerInTraining(str(vector_dir), 1, 2.0)),
                    pairs, tmp_path / "dpo", progress=False)
    assert [p["step"] for p in dpo["monitor"]] == [0, 1, 2] and dpo["vectors"]["steer"]["layer"] == 1
    rl = train_grpo_hacks(GRPOHacksConfig(steps=2, n_tasks=4, prompts_per_step=1, num_generations=2,
                                          max_completion_length=8, lr=5e-5),
                          TrainRun(model=tiny_ref, monitor=monitor, ablate=AblateInTraining(str(vector_dir), [2])),
                          tmp_path / "rl", progress=False)
    assert [p["step"] for p in rl["monitor"]] == [0, 1, 2] and rl["projection_shift"] is not None


def test_monitor_calibrates_a_persona_weight_on_the_trait_prompts(tiny_ref, tiny_local, chat_file, vector_dir, tmp_path):
    from characterlab.vectors.files import layer_vector

    systems = {"pos": "You are cruel and mean.", "neg": "You are kind and gentle."}
    atomic_write_json(vector_dir / "answers.json", [{"side": s, "system": t, "question": "q", "answer": "a"}
                                                    for s, t in systems.items()])
    meta = train_sft(*_cfg(tiny_ref, epochs=1, monitor=MonitorProjection(str(vector_dir), 1, every=1, prompts=PROMPTS)),
                     chat_file, tmp_path / "a", progress=False).meta
    u = layer_vector(vector_dir, 1).unit

    def read(system):
        msgs = [([{"role": "system", "content": system}] if system else []) + m for m in _messages()]
        return float((last_prompt_activations(tiny_local.model, tiny_local.tokenizer, msgs, 1) @ u).mean())

    cal = meta["monitor_calibration"]
    assert cal["pos"] == pytest.approx(read(systems["pos"]), abs=1e-3) and cal["neg"] == pytest.approx(read(systems["neg"]), abs=1e-3)
    first = meta["monitor"][0]
    assert first["persona_weight"] == pytest.approx((read(None) - cal["neg"]) / (cal["pos"] - cal["neg"]), abs=1e-3)
    assert all("persona_weight" in p for p in meta["monitor"])
