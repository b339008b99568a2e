"""protect() on the demo owner (DigitsCNN, digits, seed 0, the demo's settings) with the
plan's layout choice (`--layout auto`, this commit) or with the layout measurement
switched off (`--layout off`: every conv weight contiguous and references at fp32, what
protect did before); stage times, the plan's unit costs and what the choice produced.

    python benchmarks/results/channels-last-cpu-2026-12-05/protect_layout.py --layout auto --out F
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--layout", choices=["auto", "off"], required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from ipguard_fast.data import load_digits
    from ipguard_fast.models import train_digits_model
    from ipguard_fast.selection import plan_costs, protect

    if args.layout == "off":
        plan_costs.has_conv_weights = lambda model: False   # no layout to measure: contiguous, fp32
    train, test = load_digits("train"), load_digits("test")
    owner = train_digits_model("cnn", seed=0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        fps = protect(owner, train, 100, held_out_data=test, seed=0, cache_dir=cache, progress=False, log=print)
    seconds = time.perf_counter() - start
    report = fps.meta["protect"]
    result = {"command": "python " + " ".join(sys.argv), "layout": args.layout, "protect_seconds": round(seconds, 1),
              "timings": report["timings"], "unit_costs": report["plan"]["unit_costs"],
              "chosen": fps.meta["selection"].get("chosen", report.get("chosen")),
              "held_out": report.get("held_out_rates", {}).get("aruc") if isinstance(report.get("held_out_rates"), dict)
              else None, "threshold": fps.meta.get("threshold"), "load": os.getloadavg()}
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
