"""Real public data from ../shared/data (skipped when it is absent, as on a user's machine)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = [pytest.mark.shared,
              pytest.mark.skipif(not (SHARED_DATA / "narrow").is_dir(), reason="../shared/data is absent")]


def _narrow_files():
    folder = SHARED_DATA / "narrow"
    return sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz"))) if folder.is_dir() else []


@pytest.mark.parametrize("path", _narrow_files(), ids=lambda p: p.name)
def test_every_narrow_dataset_reads_as_chat_jsonl(path):
    from characterlab.data.chat_jsonl import read_chat_jsonl

    examples = read_chat_jsonl(path)
    assert len(examples) >= 10
    assert all(e.has_assistant_turn for e in examples)


def test_real_examples_tokenise_with_assistant_masks(tiny_local):
    from characterlab.data.chat_jsonl import read_chat_jsonl
    from characterlab.train.tokenize import tokenize_chat

    for ex in read_chat_jsonl(SHARED_DATA / "narrow" / "insecure_small.jsonl"):
        ids, mask = tokenize_chat(tiny_local.tokenizer, ex)
        trained = tiny_local.tokenizer.decode([i for i, m in zip(ids, mask) if m])
        answer = [m.content for m in ex.messages if m.role == "assistant"][-1]
        assert trained.startswith(answer[:20])
