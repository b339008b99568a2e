"""ipguard evaluate on the digits owner in one process and under torchrun with W ranks, no
suspect cache: the time to build the bed's suspects (from the log), the whole run's wall
time, and whether the tables agree (each rank trains and scores its share of the suspects).

    python benchmarks/evaluate_ranks.py --out benchmarks/results/evaluate-ranks-DATE.json [--ranks 2] [--bed hard]

Three runs, as benchmarks/protect_ranks.py: one process with one thread, W ranks with one
thread each (the same table as the first run), and one process with W threads (the same
cores as the ranks). Run on an otherwise idle machine with W cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--bed", default="hard")
    args = p.parse_args(argv)
    import torch
    from safetensors.torch import save_file

    from ipguard_fast.models import train_digits_model
    from protect_ranks import launchers   # this folder: the same three runs as protect's benchmark

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "owner.safetensors"
        save_file(train_digits_model("cnn", seed=0).state_dict(), weights)
        common = ["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--data", "digits",
                  "--bed", args.bed, "--k", "3", "--no-suspect-cache"]
        runs, tables = {}, {}
        for label, threads, launcher in launchers(args.ranks):
            out = tmp / label
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            start = time.perf_counter()
            proc = subprocess.run([*launcher, *common, "--out", str(out)], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return 1
            built = [float(s) for s in re.findall(r"negative suspects(?: \(this rank built \d+\))? in ([0-9.]+) s",
                                                  proc.stdout)]
            result = json.loads((out / "results.json").read_text())
            tables[label] = [(s["name"], s["accuracy"], s["matching_rate"]) for run in result["runs"]
                             for s in run["suspects"]]
            runs[label] = {"wall_seconds": round(wall, 2), "threads_per_process": threads,
                           "suspects_seconds_per_rank": built, "suspects": len(result["runs"][0]["suspects"])}
        one, ranks, threads = runs.values()
        speedups = {f"{args.ranks} ranks over 1 process, 1 thread each": _ratios(one, ranks),
                    f"{args.ranks} ranks over 1 process with {args.ranks} threads": _ratios(threads, ranks),
                    f"1 process: {args.ranks} threads over 1": _ratios(one, threads)}
        labels = list(tables)
        same = tables[labels[0]] == tables[labels[1]]
    result = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "runs": runs, "speedups": speedups, "same_table_ranks_and_single_1_thread": same}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"runs": runs, "speedups": speedups, "same": same}, indent=1))
    return 0


def _ratios(before: dict, after: dict) -> dict:
    """before's time over after's: building the suspects (the slowest rank's) and the whole run."""
    return {"suspects": round(max(before["suspects_seconds_per_rank"]) / max(after["suspects_seconds_per_rank"]), 3),
            "wall": round(before["wall_seconds"] / after["wall_seconds"], 3)}


if __name__ == "__main__":
    sys.exit(main())
