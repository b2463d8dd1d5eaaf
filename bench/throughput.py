"""Throughput benchmark (same as `characterlab bench --json`); prints one JSON object.

    python bench/throughput.py [--quick] [--model REF]
"""

import argparse
import json

from characterlab.allocator import keep_freed_memory
from characterlab.benchmark import BenchConfig, run_throughput

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="small workloads: a smoke run, not for reporting")
parser.add_argument("--model", default="embedded")
args = parser.parse_args()
keep_freed_memory()  # as the CLI does, so the figures are those a study gets
cfg = BenchConfig.quick(args.model) if args.quick else BenchConfig(model=args.model)
print(json.dumps(run_throughput(cfg), indent=2))
