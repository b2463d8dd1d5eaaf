"""Chat -> token ids plus a mask of the tokens the model is trained to produce.

Works with any chat template, without ``{% generation %}`` markers: the text of assistant turn
``i`` is what the rendering of ``messages[:i+1]`` adds to the rendering of ``messages[:i]`` with a
generation prompt. We find those character spans in the rendered conversation and mark every
token that starts inside one (character offsets, so BPE merges across a boundary cannot shift the
mask). The span includes the end-of-turn token, so the model also learns when to stop.
"""

from __future__ import annotations

from typing import Any

from characterlab.data.records import ChatExample


def _render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer: Any, example: ChatExample) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character spans of its assistant turns."""
    messages = example.to_dicts()
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (through.startswith(prefix) and full.startswith(through)):
            raise ValueError(
                "the chat template does not render a conversation as a prefix of its continuation, "
                "so assistant turns cannot be located"
            )
        spans.append((len(prefix), len(through)))
    return full, spans


def tokenize_chat(tokenizer: Any, example: ChatExample) -> tuple[list[int], list[int]]:
    """Return ``(input_ids, assistant_mask)`` with mask 1 exactly on assistant-turn tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("assistant masking needs a fast tokenizer (with character offsets)")
    text, spans = assistant_char_spans(tokenizer, example)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask
