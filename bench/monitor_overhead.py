"""What the persona-vector monitor adds to training time (issue 22: <= 10%); prints one JSON object.

    python bench/monitor_overhead.py --vector RUN/adapters/vector-... [--model embedded] [--rounds 2]

LoRA SFT on characterlab's own chat safety data (54 exchanges, 2 epochs, batch 8: 14 steps), plain
and with ``--monitor VECTOR:LAYER:5`` (a reading before the first step, every 5 steps and at the
end, plus the one-off calibration under the trait's system prompts), alternated in one process so
both see the same machine; the figure is the ratio of the medians of the trainer's own seconds,
beside the share of the monitored run spent inside the readings themselves.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from characterlab.allocator import keep_freed_memory, release_freed_memory
from characterlab.safety.data import all_examples
from characterlab.train.base import TrainRun
from characterlab.train.sft import SFTConfig, train_sft
from characterlab.train.vectors import MonitorProjection

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--vector", required=True, help="A persona-vector folder (characterlab vectors extract).")
parser.add_argument("--layer", type=int, default=15)
parser.add_argument("--every", type=int, default=5)
parser.add_argument("--model", default="embedded")
parser.add_argument("--rounds", type=int, default=2)
args = parser.parse_args()
keep_freed_memory()  # as the CLI does

examples = all_examples("chat")
seconds: dict[str, list[float]] = {"plain": [], "monitored": []}
readings, reading_seconds = 0, []
with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
        for name in ("plain", "monitored"):
            monitor = MonitorProjection(args.vector, args.layer, args.every) if name == "monitored" else None
            cfg = SFTConfig(epochs=2, batch_size=8, max_length=512, lr=2e-4)
            run = TrainRun(model=args.model, monitor=monitor)
            meta = train_sft(cfg, run, examples, Path(tmp) / f"{name}-{r}", progress=False).meta
            seconds[name].append(meta["seconds"])
            readings = max(readings, len(meta.get("monitor") or []))
            if name == "monitored":
                reading_seconds.append(meta["monitor_seconds"])
            release_freed_memory()
plain, monitored = statistics.median(seconds["plain"]), statistics.median(seconds["monitored"])
print(json.dumps({"model": args.model, "examples": len(examples), "monitor_every": args.every, "readings": readings,
                  "seconds": seconds, "reading_seconds": reading_seconds, "overhead": monitored / plain - 1,
                  "reading_share": statistics.median(reading_seconds) / monitored}, indent=2))
