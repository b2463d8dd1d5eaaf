"""Feedback files: chat JSONL rows with a rating, from simulated users or from real ones.

One row per rated answer::

    {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "rating": 1,
     "rater": "u3", "task": "fact-2", "correct": true}

``rating`` is 0 or 1 (thumbs down or up); ``rater``, ``task`` and ``correct`` (the checkable truth,
where known) are optional, so a user-supplied feedback file in the same format works too. Bad rows
are input errors naming ``file:line: field``. Preference pairs for a reward model come from
answers to the same prompt rated differently (up = chosen, down = rejected).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from characterlab.data.chat_jsonl import parse_chat_example
from characterlab.data.files import read_jsonl_objects
from characterlab.errors import InputError


def read_feedback(path: str | Path) -> list[dict]:
    rows = []
    for line, obj in read_jsonl_objects(path, field="feedback"):
        ex = parse_chat_example(obj, file=path, line=line)
        if ex.messages[-1].role != "assistant":
            raise InputError("the last message must be the rated assistant answer", path, line, "messages")
        rating = obj.get("rating")
        if rating not in (0, 1) or isinstance(rating, bool):
            raise InputError(f"must be 0 or 1, got {rating!r}", path, line, "rating")
        for key in ("rater", "task"):
            if key in obj and not isinstance(obj[key], str):
                raise InputError("must be a string", path, line, key)
        if "correct" in obj and not isinstance(obj["correct"], bool):
            raise InputError("must be true or false", path, line, "correct")
        rows.append({"messages": ex.to_dicts(), "rating": rating, **{k: obj[k] for k in ("rater", "task", "correct") if k in obj}})
    return rows


def preference_pairs(rows: list[dict]) -> list[dict]:
    """Conversational DPO/RM pairs: for each prompt, every (thumbs-up, thumbs-down) answer pair."""
    by_prompt: dict[str, dict[int, list[dict]]] = defaultdict(lambda: {0: [], 1: []})
    for r in rows:
        key = repr(r["messages"][:-1])
        by_prompt[key][r["rating"]].append(r)
    pairs = []
    for group in by_prompt.values():
        for up in group[1]:
            for down in group[0]:
                pairs.append({"prompt": up["messages"][:-1], "chosen": up["messages"][-1:], "rejected": down["messages"][-1:]})
    return pairs


def split_by_prompt(rows: list[dict], heldout: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded ``heldout`` share of the *prompts* held out with all their
    answers, so held-out accuracy is measured on prompts the reward model never saw."""
    import json
    import random

    prompts = sorted({json.dumps(r["messages"][:-1]) for r in rows})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: int(round(heldout * len(prompts)))])
    return ([r for r in rows if json.dumps(r["messages"][:-1]) not in held],
            [r for r in rows if json.dumps(r["messages"][:-1]) in held])
