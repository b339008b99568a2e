"""The Python-side checks boundary_adam_step_ gained on 2026-12-06 (aliasing, requires_grad,
float32 bounds, version counters): their cost per call and on a whole extraction.

Run with two checkouts' venvs, interleaved, on one machine:
    for r in 1 2 3; do for d in BEFORE AFTER; do (cd $d && OMP_NUM_THREADS=1 .venv/bin/python \
        /path/to/overhead.py --label $d >> out.jsonl); done; done
Each line: the checkout, the median microseconds per step call at 64 and 1,024 rows of
1x8x8 (2,000 calls, best of 5), and the seconds of one 100-point extraction on the digits
owner (k = 5, one thread, median of 3).
"""
import argparse
import json
import statistics
import time

import torch

import ipguard_fast
from ipguard_fast import ops
from ipguard_fast.models import train_digits_model

p = argparse.ArgumentParser()
p.add_argument("--label", required=True)
args = p.parse_args()
torch.set_num_threads(1)
row = {"label": args.label, "package": ipguard_fast.__file__, "extension": ops.cpu_capability()}
for batch in (64, 1024):
    x = torch.rand(batch, 1, 8, 8)
    g, m, v = torch.randn_like(x), torch.zeros_like(x), torch.zeros_like(x)
    step, active = torch.zeros(batch, dtype=torch.long), torch.ones(batch, dtype=torch.bool)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(2000):
                ops.boundary_adam_step_(x, g, m, v, step, active, 0.01, 0.9, 0.999, 1e-8, 0.0, 1.0)
        best = min(best, (time.perf_counter() - start) / 2000)
    row[f"step_us_b{batch}"] = round(best * 1e6, 2)
owner = train_digits_model("cnn", seed=0, epochs=2)
times = []
for _ in range(3):
    start = time.perf_counter()
    ipguard_fast.extract_fingerprints(owner, 100, k=5.0, input_shape=(1, 8, 8), seed=0, progress=False)
    times.append(time.perf_counter() - start)
row["extract_100_s"] = round(statistics.median(times), 3)
print(json.dumps(row), flush=True)
