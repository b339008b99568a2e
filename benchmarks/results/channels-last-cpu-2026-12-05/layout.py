"""The digits CNN (protect's demo owner) in either layout of its conv weights on this CPU:
per batch, a forward (scoring), an Adam training step (references) and a forward and
backward to the input (the search, refinement), interleaved and repeated, medians.

    python benchmarks/results/channels-last-cpu-2026-12-05/layout.py --threads 2 --out F
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ipguard_fast.models import DigitsCNN
from ipguard_fast.modules import channels_last
from ipguard_fast.nn import seeded


def timed(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def work(model, x, y, optimizer):
    def forward():
        with torch.no_grad():
            model(x)

    def train():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def input_grad():
        images = x.clone().requires_grad_(True)
        torch.autograd.grad(model(images).logsumexp(1).sum(), images)
    return {"forward": forward, "train_step": train, "input_grad": input_grad}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for batch in (64, 256, 1024):
        x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))
        model = seeded(DigitsCNN, 0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
        times = {"contiguous": {}, "channels_last": {}}
        for _ in range(3):   # interleaved rounds: load drifts hit both layouts alike
            for layout in times:
                with channels_last([model], layout == "channels_last"):
                    for name, call in work(model, x, y, optimizer).items():
                        times[layout].setdefault(name, []).append(timed(call, args.repeats))
        for name in times["contiguous"]:
            a, b = (statistics.median(times[layout][name]) for layout in ("contiguous", "channels_last"))
            rows.append({"batch": batch, "work": name, "contiguous_ms": round(a * 1e3, 3),
                         "channels_last_ms": round(b * 1e3, 3), "speedup": round(a / b, 2)})
            print(rows[-1])
    result = {"command": "python " + " ".join(sys.argv), "threads": args.threads, "torch": torch.__version__,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
