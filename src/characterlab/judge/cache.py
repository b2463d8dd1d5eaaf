"""A persistent cache of judgements, so re-running an evaluation never pays for a judge twice.

Keyed by (judge id, prompt hash, question, answer): a different judge model, different weights or
different judge prompts never reuse each other's scores. SQLite (WAL) makes each write atomic and
lets parallel workers share one file. Only verdicts are kept: a judgement with an ``error`` or a
score that is not finite (a broken endpoint's NaN) is never stored, and one an older version stored
is a miss, so the next run asks the judge again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from characterlab.judge.base import Judge, JudgeInput, Judgement, ScoringJudge, is_finite


def cache_key(judge_id: str, prompt_hash: str, question: str, answer: str) -> str:
    blob = "\x00".join((judge_id, prompt_hash, question, answer)).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def cacheable(j: Judgement) -> bool:
    """A verdict worth reusing: no error (that says the judge did not judge) and finite scores."""
    return j.error is None and is_finite(j)


class JudgementCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, Judgement]:
        found: dict[str, Judgement] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM judgements WHERE key IN ({marks})", chunk):
                d = json.loads(value)
                j = Judgement(aligned=d["aligned"], coherent=d["coherent"], special=d["special"])
                if is_finite(j):  # older versions stored a broken endpoint's NaN; that is a miss
                    found[key] = j
        return found

    def put_many(self, items: dict[str, Judgement]) -> None:
        """Store the verdicts among ``items``; errors and scores that are not finite are left out."""
        rows = [(k, json.dumps({"aligned": j.aligned, "coherent": j.coherent, "special": j.special}, allow_nan=False))
                for k, j in items.items() if cacheable(j)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO judgements (key, value) VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class CachedJudge(ScoringJudge):
    """Wraps a judge: answers from the cache, scores only the misses, in one batch, and stores them."""

    def __init__(self, judge: Judge, cache: JudgementCache):
        self.judge = judge
        self.cache = cache
        self.judge_id = judge.judge_id
        self.prompt_hash = judge.prompt_hash
        self.hits = 0
        self.misses = 0

    def score_batch(self, items: Sequence[JudgeInput]) -> list[Judgement]:
        keys = [cache_key(self.judge_id, self.prompt_hash, it.question, it.answer) for it in items]
        found = self.cache.get_many(keys)
        todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.items(), key=lambda kv: kv[1])
        if todo:
            fresh = self.judge.score_batch([items[i] for _, i in todo])
            new = {k: j for (k, _), j in zip(todo, fresh)}
            self.cache.put_many(new)
            found.update(new)
        self.misses += len(todo)
        self.hits += len(items) - len(todo)
        return [found[k] for k in keys]
