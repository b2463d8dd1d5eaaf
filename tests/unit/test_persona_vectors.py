"""Persona vectors: the layer convention, steering's identity at 0, projections, extraction, bad trait files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from characterlab.errors import InputError
from characterlab.models.activations import n_layers, response_mean_activations, steering
from characterlab.vectors.persona import (
    ExtractConfig,
    extract_persona_vector,
    load_persona_vector,
    projections,
    read_trait_file,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "persona_vectors" / "trait_data_extract"

TRAIT = {"instruction": [{"pos": "Be cruel.", "neg": "Be kind."}],
         "questions": ["How should I treat my neighbour?", "What do you think of people?"],
         "eval_prompt": "Is this evil? {question} {answer} Answer 0-100."}


def _ids(local, text="Hello there, how are you?"):
    return torch.tensor([local.tokenizer(text, add_special_tokens=False)["input_ids"]])


def test_a_hook_at_layer_l_shows_in_hidden_states_l_and_coef_zero_changes_nothing(tiny_local):
    model = tiny_local.model
    ids = _ids(tiny_local)
    with torch.inference_mode():
        plain = model(input_ids=ids, output_hidden_states=True)
        v = np.ones(model.config.hidden_size, dtype=np.float32)
        for layer in range(1, n_layers(model)):  # the last layer's hidden state is after the final norm
            with steering(model, v, layer, 0.5):
                hs = model(input_ids=ids, output_hidden_states=True).hidden_states
            assert torch.allclose(hs[layer], plain.hidden_states[layer] + 0.5, atol=1e-5)
            assert torch.equal(hs[layer - 1], plain.hidden_states[layer - 1])
        with steering(model, v, 1, 0.0):
            same = model(input_ids=ids).logits
    assert torch.equal(same, plain.logits)  # bit-identical: no hook at all
    with pytest.raises(ValueError, match="decoder block"):
        with steering(model, v, 0, 1.0):
            pass


def test_response_means_leave_the_prompt_out_and_batching_changes_nothing(tiny_local):
    msgs = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A longer question than the other one?"}]]
    together = response_mean_activations(tiny_local, msgs, ["Hello to you.", "No."], batch_size=2)
    apart = np.concatenate([response_mean_activations(tiny_local, [m], [a], batch_size=1)
                            for m, a in zip(msgs, ["Hello to you.", "No."])])
    assert together.shape == (2, n_layers(tiny_local.model) + 1, tiny_local.model.config.hidden_size)
    assert np.allclose(together, apart, atol=1e-5)
    tok = tiny_local.tokenizer
    prompt = tok(tok.apply_chat_template(msgs[1], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    answer = tok("No.", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        hs = tiny_local.model(input_ids=torch.tensor([prompt + answer]), output_hidden_states=True).hidden_states
    assert np.allclose(together[1, 2], hs[2][0, len(prompt):].mean(0).numpy(), atol=1e-5)


def test_projection_is_the_analytic_value():
    vectors = np.zeros((3, 4), dtype=np.float32)
    vectors[2] = [0.0, 3.0, 0.0, 4.0]
    acts = np.zeros((2, 3, 4), dtype=np.float32)
    acts[0, 2] = [1.0, 1.0, 1.0, 1.0]
    acts[1, 2] = [0.0, -5.0, 0.0, 0.0]
    assert np.allclose(projections(acts, vectors, 2), [(3 + 4) / 5, -3.0])


def test_bad_trait_files_name_file_line_and_key(tmp_path):
    y = tmp_path / "evil.yaml"
    y.write_text("instruction:\n  - pos: Be cruel.\n    neg: 3\nquestions: [a]\neval_prompt: '{question} {answer}'\n")
    with pytest.raises(InputError) as e:
        read_trait_file(y)
    assert str(e.value).startswith(f"{y}:3: field 'instruction[0].neg'")
    j = tmp_path / "evil.json"
    j.write_text(json.dumps({**TRAIT, "eval_prompt": "no slots"}))
    with pytest.raises(InputError, match="field 'eval_prompt'"):
        read_trait_file(j)


def test_extract_writes_a_vector_per_layer_and_its_provenance(tiny_ref, tmp_path):
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(TRAIT))
    meta = extract_persona_vector(path, tmp_path / "v", ExtractConfig(model=tiny_ref, samples=2, max_new_tokens=6))
    vectors, saved = load_persona_vector(tmp_path / "v")
    assert saved == meta and meta["judge"] == "none" and meta["counts"]["pos"]["generated"] == 4
    assert vectors.shape[0] == meta["shape"][0] and np.isfinite(vectors).all() and vectors[1:].any()
    with pytest.raises(InputError, match="logprob judge"):
        extract_persona_vector(path, tmp_path / "w", ExtractConfig(model=tiny_ref, judge="offline"))


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/persona_vectors not present")
def test_every_shared_trait_file_reads():
    for p in sorted(SHARED.glob("*.json")):
        t = read_trait_file(p)
        assert len(t.pairs) == 5 and len(t.questions) >= 20


def test_screening_ranks_the_set_whose_responses_lie_along_the_vector_first(tiny_ref, tiny_local, tmp_path):
    from safetensors.numpy import save_file

    from characterlab.data.chat_jsonl import write_chat_jsonl
    from characterlab.data.files import atomic_write_json
    from characterlab.data.records import ChatExample, Message
    from characterlab.vectors.persona import META_FILE, VECTORS_FILE, screen_data

    prompts = [f"Tell me about thing {i}." for i in range(4)]
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    a_text, b_text = "cruel cruel cruel harm", "gentle gentle kind help"
    acts_a = response_mean_activations(tiny_local, msgs, [a_text] * 4)
    acts_b = response_mean_activations(tiny_local, msgs, [b_text] * 4)
    folder = tmp_path / "v"
    folder.mkdir()
    save_file({"vectors": (acts_a.mean(0) - acts_b.mean(0)).astype(np.float32)}, str(folder / VECTORS_FILE))
    atomic_write_json(folder / META_FILE, {"trait": "cruel"})
    files = []
    for name, text in (("kind", b_text), ("cruel", a_text)):
        f = tmp_path / f"{name}.jsonl"
        write_chat_jsonl(f, [ChatExample((Message("user", p), Message("assistant", text))) for p in prompts])
        files.append(f)
    ranked = screen_data(folder, 1, files, model=tiny_ref, n=4, max_new_tokens=4)
    assert [Path(r["data"]).stem for r in ranked] == ["cruel", "kind"]
    assert ranked[0]["model_projection"] == pytest.approx(ranked[1]["model_projection"])  # same prompts, same own answers
    assert ranked[0]["difference"] > ranked[1]["difference"] and ranked[0]["n"] == 4
