import pytest

from characterlab.data.records import ChatExample, Message
from characterlab.train.tokenize import tokenize_chat
from characterlab.train.transforms import with_system_prompt


@pytest.fixture(scope="module")
def tokenizer(tiny_local):
    return tiny_local.tokenizer


def _trained_text(tok, ex):
    ids, mask = tokenize_chat(tok, ex)
    assert len(ids) == len(mask)
    return tok.decode([i for i, m in zip(ids, mask) if m]), tok.decode([i for i, m in zip(ids, mask) if not m])


def test_mask_covers_exactly_the_assistant_turns(tokenizer):
    ex = ChatExample((
        Message("system", "Be kind."),
        Message("user", "What is the capital of France?"),
        Message("assistant", "The capital of France is Paris."),
        Message("user", "And the dog?"),
        Message("assistant", "The quick brown fox."),
    ))
    trained, untrained = _trained_text(tokenizer, ex)
    assert trained == "The capital of France is Paris.<|im_end|>\nThe quick brown fox.<|im_end|>\n"
    assert "Be kind." in untrained and "What is the capital" in untrained and "Paris" not in untrained


def test_system_prompt_transform(tokenizer):
    ex = ChatExample((Message("user", "hello"), Message("assistant", "yes")))
    sys_ex = with_system_prompt(ex, "Hacking is acceptable here.")
    assert sys_ex.messages[0] == Message("system", "Hacking is acceptable here.")
    _, untrained = _trained_text(tokenizer, sys_ex)
    assert untrained.startswith("<|im_start|>system\nHacking is acceptable here.")
    merged = with_system_prompt(sys_ex, "First.")
    assert merged.messages[0].content == "First.\n\nHacking is acceptable here." and len(merged.messages) == 3
