"""Offline judges' speed side by side, on the same answers in one run; prints one JSON object.

    python bench/judge_speed.py --data ../shared/data/judged [--judge-dir DIR ...] [--answers 512]

The answers are a seeded sample of the published judged responses (real models' answers to the
EM questions), cut to the 128 new tokens a study generates, so each judge reads what it reads in
a study. Each judge scores them once warm; ratios are against the first judge (the shipped one
when no ``--judge-dir`` is given before it).
"""

import argparse
import json
import random
import sys
from pathlib import Path

from characterlab.benchmark import judge_throughput
from characterlab.judge.folder import SHIPPED_DIR
from characterlab.judge.judged_data import load_judged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder of judged CSVs")
    parser.add_argument("--judge-dir", action="append", type=Path, default=[],
                        help="judge folder (repeat); the shipped judge is always timed first")
    parser.add_argument("--answers", type=int, default=512)
    parser.add_argument("--answer-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from characterlab.models.embeddings import locate_encoder

    rows = random.Random(args.seed).sample(load_judged([args.data]).rows, args.answers)
    tok = AutoTokenizer.from_pretrained(locate_encoder())
    answers = [tok.convert_tokens_to_string(tok.tokenize(r.answer)[: args.answer_tokens]) for r in rows]
    questions = [r.question for r in rows]
    out = {"answers": len(rows), "answer_tokens": args.answer_tokens, "seed": args.seed, "judges": {}}
    first = None
    for folder in [SHIPPED_DIR, *args.judge_dir]:
        timing = judge_throughput(questions, answers, folder)
        first = first or timing["judge_answers_per_s"]
        out["judges"][str(folder)] = {**timing, "over_first": round(timing["judge_answers_per_s"] / first, 2)}
        print(f"[bench] {folder}: {timing['judge_answers_per_s']} answers/s", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
