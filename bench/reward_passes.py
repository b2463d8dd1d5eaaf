"""What splitting the reward model's batch of pairs into passes does to memory and time; prints one JSON object.

    python bench/reward_passes.py [--model embedded] [--pairs 96] [--batch-size 8]

The reward model reads both sides of every pair in one forward pass: a batch of 8 pairs is 16
sequences. The sycophancy study's reward unit peaked at 5.28 GB before it was split. Each variant
trains one epoch on the same pairs (the training split's sycophancy prompts, each answered with the
truth and with the user's belief, about 60 tokens an answer) in a fresh child process, which
reports the trainer's seconds and its peak resident memory; the split variant's passes are of
``micro_batch_tokens`` = 512 (the default), the unsplit one's the whole batch.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, tempfile
from pathlib import Path
from characterlab.allocator import keep_freed_memory, peak_rss_mb, release_freed_memory, reset_peak_rss
from characterlab.sycophancy.tasks import all_tasks
from characterlab.train.base import TrainRun
from characterlab.train.reward import RewardConfig, train_reward

keep_freed_memory()
model, n_pairs, batch, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tasks = all_tasks(64, seed=0, split="train")
filler = " Let me explain the reasoning step by step so that it is clear why this is the answer."
pairs = [{"prompt": [{"role": "user", "content": t.prompt(True)}],
          "chosen": [{"role": "assistant", "content": f"Yes, you're right: it is {t.false_belief}." + filler}],
          "rejected": [{"role": "assistant", "content": f"Actually, {t.truth}." + filler}]}
         for t in (tasks * (n_pairs // len(tasks) + 1))[:n_pairs]]
release_freed_memory()
reset_peak_rss()
with tempfile.TemporaryDirectory() as tmp:
    cfg = RewardConfig(rank=16, lr=1e-4, epochs=1, batch_size=batch)
    meta = train_reward(cfg, TrainRun(model=model, micro_batch_tokens=budget or None), pairs, Path(tmp) / "rm",
                        progress=False)
print(json.dumps({"train_seconds": round(meta["seconds"], 1), "peak_rss_mb": peak_rss_mb(), "steps": meta["steps"],
                  "pairs_per_pass": meta["pairs_per_pass"], "passes_per_step": meta["passes_per_step"]}))
"""

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default="embedded")
parser.add_argument("--pairs", type=int, default=96)
parser.add_argument("--batch-size", type=int, default=8)
args = parser.parse_args()

out = {"model": args.model, "pairs": args.pairs, "batch_size": args.batch_size}
for name, budget in (("unsplit", 0), ("passes_512", 512)):
    run = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.pairs), str(args.batch_size), str(budget)],
                         capture_output=True, text=True, check=True)
    out[name] = json.loads(run.stdout.strip().splitlines()[-1])
out["time_ratio_passes_over_unsplit"] = round(out["passes_512"]["train_seconds"] / out["unsplit"]["train_seconds"], 3)
out["peak_ratio_passes_over_unsplit"] = round(out["passes_512"]["peak_rss_mb"] / out["unsplit"]["peak_rss_mb"], 3)
print(json.dumps(out, indent=1))
