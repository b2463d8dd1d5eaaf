"""Feedback files: chat JSONL rows with a rating, from simulated users or from real ones.

One row per rated answer::

    {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "rating": 1,
     "rater": "u3", "task": "fact-2", "correct": true}

``rating`` is 0 or 1 (thumbs down or up); ``rater``, ``task`` and ``correct`` (the checkable truth,
where known) are optional, so a user-supplied feedback file in the same format works too. Bad rows
are input errors naming ``file:line: field``. Preference pairs for a reward model come from
answers to the same prompt rated differently (up = chosen, down = rejected), at most
:data:`MAX_PAIRS_PER_PROMPT` per prompt (a seeded sample beyond it, said on stderr).
"""

from __future__ import annotations

import random
import sys
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


MAX_PAIRS_PER_PROMPT = 1024  # 32 thumbs-up x 32 thumbs-down answers; far above what a study collects per prompt


def preference_pairs(rows: list[dict], max_per_prompt: int | None = MAX_PAIRS_PER_PROMPT, seed: int = 0) -> list[dict]:
    """Conversational DPO/RM pairs: for each prompt, its (thumbs-up, thumbs-down) answer pairs.

    A prompt with u answers rated up and d rated down makes u x d pairs, so pairs grow with the
    square of the answers to one prompt (8,000 rated answers to one prompt: 16 million pairs, 6.8 GB).
    Up to ``max_per_prompt`` a prompt gives every pair, in file order; beyond it, a seeded sample of
    ``max_per_prompt`` of them (the same for the same rows and ``seed``), drawn without building the
    rest, and a note on stderr says how many prompts were sampled. ``None`` keeps every pair.
    """
    by_prompt: dict[str, dict[int, list[dict]]] = defaultdict(lambda: {0: [], 1: []})
    for r in rows:
        key = repr(r["messages"][:-1])
        by_prompt[key][r["rating"]].append(r)
    pairs: list[dict] = []
    sampled = 0
    for key, group in by_prompt.items():
        ups, downs = group[1], group[0]
        chosen = pair_indices(len(ups), len(downs), max_per_prompt, f"{seed}\x00{key}")
        sampled += len(chosen) < len(ups) * len(downs)
        for i, j in chosen:
            up, down = ups[i], downs[j]
            pairs.append({"prompt": up["messages"][:-1], "chosen": up["messages"][-1:], "rejected": down["messages"][-1:]})
    if sampled:
        print(f"note: {sampled} of {len(by_prompt)} prompts had more than {max_per_prompt} (thumbs-up, thumbs-down) "
              f"pairs; a seeded sample of {max_per_prompt} pairs was kept for each (seed {seed})",
              file=sys.stderr, flush=True)
    return pairs


def pair_indices(n_up: int, n_down: int, cap: int | None, seed: str) -> list[tuple[int, int]]:
    """(up, down) index pairs of one prompt: all of them in order, or a seeded sample of ``cap``.

    ``random.sample`` over a ``range`` draws k of n without materialising n, so the cost is the cap,
    not the product; sorting keeps the sampled pairs in file order."""
    total = n_up * n_down
    if cap is None or total <= cap:
        return [(i, j) for i in range(n_up) for j in range(n_down)]
    picks = sorted(random.Random(seed).sample(range(total), cap))
    return [divmod(k, n_down) for k in picks]


def split_by_prompt(rows: list[dict], heldout: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded ``heldout`` share of the *prompts* held out with all their
    answers, so held-out accuracy is measured on prompts the reward model never saw."""
    import json

    prompts = sorted({json.dumps(r["messages"][:-1]) for r in rows})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: int(round(heldout * len(prompts)))])
    return ([r for r in rows if json.dumps(r["messages"][:-1]) not in held],
            [r for r in rows if json.dumps(r["messages"][:-1]) in held])
