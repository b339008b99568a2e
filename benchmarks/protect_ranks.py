"""protect() on the digits owner in one process and under torchrun with W ranks, each run
from an empty reference cache: stage times from each file's meta["protect"]["timings"],
the speed-up per stage, and whether the files hold the same fingerprints (issue 20's
2-rank target).

    python benchmarks/protect_ranks.py --out benchmarks/results/protect-ranks-DATE.json [--ranks 2]

Three runs: one process with one thread, W ranks with one thread each (what W machines
or W GPUs give: the scaling of the work itself, and the same fingerprints as the first
run), and one process with W threads (the same cores as the ranks: what a single
machine's W cores give either way). Run on an otherwise idle machine with W cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--extra", default="", help="more protect options, space separated")
    args = p.parse_args(argv)
    import torch
    from safetensors.torch import save_file

    from ipguard_fast.fingerprints import FingerprintSet
    from ipguard_fast.models import train_digits_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "owner.safetensors"
        save_file(train_digits_model("cnn", seed=0).state_dict(), weights)
        common = ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--data", "digits",
                  "--no-progress", "--cache-key", str(tmp / "cache.key"), *args.extra.split()]
        runs = {}
        for label, threads, launcher in launchers(args.ranks):
            out = tmp / f"{label}.safetensors"
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            start = time.perf_counter()
            proc = subprocess.run([*launcher, *common, "--threads", str(threads), "--cache", str(tmp / f"cache-{label}"),
                                   "--out", str(out)], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return 1
            fps = FingerprintSet.load(out)
            runs[label] = {"wall_seconds": round(wall, 2), "threads_per_process": threads,
                           "timings": fps.meta["protect"]["timings"], "threshold": fps.meta["threshold"],
                           "images": fps.images, "labels": fps.labels}
        one, ranks, threads = runs.values()
        same = {"threshold": one["threshold"] == ranks["threshold"],
                "labels": bool(torch.equal(one["labels"], ranks["labels"])),
                "max_image_difference": float((one["images"] - ranks["images"]).abs().max())}
        for r in runs.values():
            del r["images"], r["labels"]
        speedups = {f"{args.ranks} ranks over 1 process, 1 thread each": _ratios(one, ranks),
                    f"{args.ranks} ranks over 1 process with {args.ranks} threads": _ratios(threads, ranks),
                    f"1 process: {args.ranks} threads over 1": _ratios(one, threads)}
    result = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "runs": runs, "speedups": speedups, "same_fingerprints_ranks_and_single_1_thread": same}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"speedups": speedups, "same": same}, indent=1))
    return 0


def launchers(ranks: int) -> list[tuple[str, int, list[str]]]:
    """The three runs to compare, as (label, threads per process, the command's launcher): one
    process of one thread, `ranks` torchrun ranks of one thread each, one process of `ranks`
    threads (benchmarks/evaluate_ranks.py runs the same three)."""
    command = [sys.executable, "-m", "ipguard_fast"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                "-m", "ipguard_fast"]
    return [("single-1-thread", 1, command), (f"{ranks}-ranks-1-thread", 1, torchrun),
            (f"single-{ranks}-threads", ranks, command)]


def _ratios(before: dict, after: dict) -> dict:
    """before's time over after's, per stage and for the whole run."""
    out = {stage: round(before["timings"][stage] / after["timings"][stage], 3)
           for stage in before["timings"] if after["timings"].get(stage)}
    out["wall"] = round(before["wall_seconds"] / after["wall_seconds"], 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
