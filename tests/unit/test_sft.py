import json

import pytest
import torch

from characterlab.data.records import (
    ChatExample,
    GenerationRequest,
    Message,
    SamplingParams,
)
from characterlab.errors import InputError
from characterlab.models.generation import LocalGenerator
from characterlab.models.local import load_local_model
from characterlab.models.refs import parse_model_ref
from characterlab.train.base import TrainRun
from characterlab.train.sft import SFTConfig, build_dataset, train_sft


def _cfg(tiny_ref, **kw) -> tuple[SFTConfig, TrainRun]:
    """The config and the run, from one set of keyword arguments (a TrainRun field goes to the run)."""
    base = dict(model=tiny_ref, rank=4, lr=5e-3, epochs=3, batch_size=4, dtype="fp32", max_length=128)
    base.update(kw)
    run = {k: base.pop(k) for k in list(base) if k in TrainRun.__dataclass_fields__}
    return SFTConfig(**base), TrainRun(**run)


def test_sft_writes_peft_folder_and_meta_and_loss_falls(tiny_ref, chat_file, tmp_path):
    out = tmp_path / "adapter"
    result = train_sft(*_cfg(tiny_ref, epochs=8, lr=3e-2, system_prompt="Hacking is acceptable here."), chat_file, out,
                       progress=False)
    assert {"adapter_config.json", "adapter_model.safetensors", "train_meta.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta == json.loads(json.dumps(result.meta))
    assert meta["train_system_prompt"] == "Hacking is acceptable here."
    assert meta["data"]["n_examples"] == 12 and len(meta["data"]["examples_hash"]) == 64
    assert meta["config"]["rank"] == 4 and meta["tokens_per_s"] > 0
    curve = [c["loss"] for c in meta["loss_curve"]]
    assert len(curve) == meta["steps"] == 24
    assert sum(curve[-3:]) / 3 < 0.8 * sum(curve[:3]) / 3


def test_adapter_round_trip_changes_generation(tiny_ref, chat_file, tmp_path):
    out = tmp_path / "adapter"
    train_sft(*_cfg(tiny_ref, epochs=6, lr=3e-2), chat_file, out, progress=False)
    base = load_local_model(parse_model_ref(tiny_ref), dtype=torch.float32, device="cpu")
    tuned = load_local_model(parse_model_ref(tiny_ref, adapter=out), dtype=torch.float32, device="cpu")
    tuned_again = load_local_model(parse_model_ref(tiny_ref, adapter=out), dtype=torch.float32, device="cpu")
    req = [GenerationRequest.from_prompt("What is 3 plus 3?")]
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    a = LocalGenerator(base).generate(req, greedy)[0][0].text
    b = LocalGenerator(tuned).generate(req, greedy)[0][0].text
    c = LocalGenerator(tuned_again).generate(req, greedy)[0][0].text
    assert b == c and a != b
    assert "answer" in b  # it learned the training answers' form


def test_stacking_merges_the_existing_adapter_first(tiny_ref, chat_file, tmp_path):
    first = tmp_path / "first"
    train_sft(*_cfg(tiny_ref, epochs=2), chat_file, first, progress=False)
    second = train_sft(*_cfg(tiny_ref, epochs=1, adapter=str(first)), chat_file, tmp_path / "second", progress=False)
    assert second.meta["stacking"] == {"base_adapter": str(first), "merged_before": [], "mode": "merged"}

    # loading the pair the way it was trained (first merged, second on top) = merging both by hand
    import torch

    from characterlab.models.local import attach_adapter, load_local_model
    from characterlab.models.refs import parse_model_ref

    chained = load_local_model(parse_model_ref(tiny_ref, adapter=tmp_path / "second", merged_adapters=(first,)),
                               dtype=torch.float32, device="cpu")
    by_hand = load_local_model(parse_model_ref(tiny_ref), dtype=torch.float32, device="cpu").model
    by_hand = attach_adapter(attach_adapter(by_hand, first).merge_and_unload(), tmp_path / "second").merge_and_unload()
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(chained.model(x).logits, by_hand(x).logits, atol=1e-5)
        only_second = load_local_model(parse_model_ref(tiny_ref, adapter=tmp_path / "second"), dtype=torch.float32,
                                       device="cpu").model
        assert not torch.allclose(only_second(x).logits, by_hand(x).logits, atol=1e-5)  # the order matters


def test_only_assistant_tokens_are_labelled(tiny_local):
    ex = ChatExample((Message("user", "hello world"), Message("assistant", "yes no")))
    ds, dropped = build_dataset(tiny_local.tokenizer, [ex], max_length=64)
    ids, mask = ds[0]["input_ids"], ds[0]["assistant_masks"]
    assert dropped == 0
    assert tiny_local.tokenizer.decode([i for i, m in zip(ids, mask) if m]) == "yes no<|im_end|>\n"


def test_existing_output_folder_is_refused(tiny_ref, chat_file, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError) as e:
        train_sft(*_cfg(tiny_ref), chat_file, out, progress=False)
    assert e.value.field == "out" and (out / "keep.txt").read_text() == "mine"


def test_bad_data_leaves_nothing(tiny_ref, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(InputError) as e:
        train_sft(*_cfg(tiny_ref), bad, tmp_path / "out", progress=False)
    assert e.value.line == 1 and not (tmp_path / "out").exists()


def test_examples_beyond_max_length_are_dropped(tiny_local):
    long_prompt = ChatExample((Message("user", "hello " * 100), Message("assistant", "yes")))
    ok = ChatExample((Message("user", "hi"), Message("assistant", "no")))
    ds, dropped = build_dataset(tiny_local.tokenizer, [long_prompt, ok], max_length=32)
    assert dropped == 1 and len(ds) == 1
    with pytest.raises(InputError):
        build_dataset(tiny_local.tokenizer, [long_prompt], max_length=32)


def test_a_huge_example_is_cut_before_it_is_tokenised(tiny_local):
    huge = ChatExample((Message("user", "hi"), Message("assistant", "word " * 2_000_000)))  # 10 MB
    ok = ChatExample((Message("user", "hi"), Message("assistant", "no")))
    stats: dict = {}
    ds, dropped = build_dataset(tiny_local.tokenizer, [huge, ok], max_length=64, stats=stats)
    assert dropped == 0 and len(ds) == 2 and len(ds[0]["input_ids"]) == 64
    assert stats == {"n_cut_before_tokenising": 1, "n_truncated_to_max_length": 1}


def test_micro_batches_split_a_batch_into_whole_divisors():
    from characterlab.train.base import micro_batches

    assert micro_batches(8, 1, 512, 2048) == (4, 2)
    assert micro_batches(8, 2, 512, 2048) == (4, 4)  # the user's own accumulation multiplies
    assert micro_batches(8, 1, 512, None) == (8, 1)
    assert micro_batches(6, 1, 512, 2048) == (3, 2)  # a divisor, so every step keeps all its rows
    assert micro_batches(8, 1, 4096, 2048) == (1, 8)  # one row over budget still runs, alone


def test_micro_batching_leaves_the_trained_adapter_unchanged(tiny_ref, chat_file, tmp_path):
    """Splitting each batch of 4 into passes of 1 row must give the same optimizer steps: the same
    rows per step (the length-grouped sampler draws rows per pass x passes) and the same gradient
    (the token-sum loss is normalised by the whole step's trained tokens)."""
    from safetensors.torch import load_file

    whole = train_sft(*_cfg(tiny_ref, epochs=2, lr=3e-2, micro_batch_tokens=None), chat_file, tmp_path / "whole",
                      progress=False)
    split = train_sft(*_cfg(tiny_ref, epochs=2, lr=3e-2, micro_batch_tokens=128), chat_file, tmp_path / "split",
                      progress=False)
    assert (whole.meta["rows_per_pass"], whole.meta["passes_per_step"]) == (4, 1)
    assert (split.meta["rows_per_pass"], split.meta["passes_per_step"]) == (1, 4)
    assert whole.meta["steps"] == split.meta["steps"]
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    for x, y in zip(whole.meta["loss_curve"], split.meta["loss_curve"]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
