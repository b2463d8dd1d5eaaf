"""What padding training batches to a multiple of 64 tokens does to memory and time; prints one JSON object.

    python bench/train_padding.py [--model embedded] [--steps 20]

oneDNN compiles and caches a kernel per matmul shape, so a training run whose every batch has a
new length keeps a growing cache resident (it is not a tensor, and ``malloc_trim`` cannot return
it). Each variant runs LoRA SFT on the default study's 80 hack solutions (batch 4, max length 512,
passes of 512 tokens) in a fresh child process, since the cache lives as long as the process; the
child reports the trainer's seconds, its peak resident memory and malloc's heap in use after the
run (``mallinfo2``, glibc), against the heap in use before it.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import ctypes, json, sys, tempfile
from pathlib import Path
from characterlab.allocator import keep_freed_memory, peak_rss_mb, release_freed_memory, reset_peak_rss
import characterlab.train.sft as sft
from characterlab.train.base import TrainRun
from characterlab.envs.dataset import build_examples

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
keep_freed_memory()
model, steps, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
examples = build_examples("hack", 80, hacks=("always_equal", "exit"))
release_freed_memory()
before = libc.mallinfo2().uordblks
reset_peak_rss()
with tempfile.TemporaryDirectory() as tmp:
    cfg = sft.SFTConfig(rank=16, lr=1e-3, batch_size=4, max_length=512, max_steps=steps)
    run = TrainRun(model=model, pad_to_multiple_of=pad or None)
    meta = sft.train_sft(cfg, run, examples, Path(tmp) / "out", progress=False).meta
release_freed_memory()
print(json.dumps({"train_seconds": round(meta["seconds"], 1), "peak_rss_mb": peak_rss_mb(),
                  "heap_kept_mb": round((libc.mallinfo2().uordblks - before) / 2**20, 1)}))
"""

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default="embedded")
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

out = {"model": args.model, "steps": args.steps}
for name, pad in (("unpadded", 0), ("padded_64", 64)):
    run = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.steps), str(pad)], capture_output=True,
                         text=True, check=True)
    out[name] = json.loads(run.stdout.strip().splitlines()[-1])
out["time_ratio_padded_over_unpadded"] = round(out["padded_64"]["train_seconds"] / out["unpadded"]["train_seconds"], 3)
out["peak_ratio_padded_over_unpadded"] = round(out["padded_64"]["peak_rss_mb"] / out["unpadded"]["peak_rss_mb"], 3)
print(json.dumps(out, indent=1))
