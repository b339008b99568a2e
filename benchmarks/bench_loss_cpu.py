"""logit_gap_loss on CPU: compiled vs careful eager vs reference, interleaved in one process.

    python benchmarks/bench_loss_cpu.py --runs 80 --out benchmarks/results/ops-loss-cpu-<date>/ops-loss-cpu.json

Every round times one call of each implementation at each thread count (1 and 2 by
default, torch.set_num_threads), in a rotating order, so load from other jobs on a
shared machine hits all of them alike. Writes every raw wall time (ms), the medians,
minima and quartiles, the process CPU time of each call (which leaves out
preemption at 1 thread) and its minor page faults; ratios are between medians of
this one run. The implementations are those of
benchmarks/test_bench_ops.py (LOSS_IMPLS), on inputs built as its loss_inputs builds them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bench_ops import LOSS_IMPLS  # noqa: E402

import ipguard_fast  # noqa: E402


# Environment that changes what runs: which ipguard_fast, which kernels, how many threads.
ENV_KEYS = ("PYTHONPATH", "ATEN_CPU_CAPABILITY", "IPGUARD_FAST_FORCE_REFERENCE", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")


def _git(*args):
    """git in the checkout whose ipguard_fast is imported (None outside a git checkout)."""
    try:
        return subprocess.run(["git", *args], cwd=Path(ipguard_fast.__file__).resolve().parent,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _inputs(B, C, dtype):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(B, C, generator=gen) * 3).to(dtype)
    i = torch.randint(0, C, (B,), generator=gen)
    j = (i + 1 + torch.randint(0, C - 1, (B,), generator=gen)) % C
    return logits, i, j


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--B", type=int, default=4096)
    parser.add_argument("--C", type=int, default=1000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--runs", type=int, default=80, help="timed rounds (each times every impl at every thread count)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--impls", nargs="+", default=list(LOSS_IMPLS), choices=list(LOSS_IMPLS))
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'before: scalar kernel')")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if not ipguard_fast.has_extension():
        raise SystemExit("the compiled ops are not built: nothing to compare")
    dtype = getattr(torch, args.dtype)
    logits, i, j = _inputs(args.B, args.C, dtype)
    k = 1.0
    # Same values from the op and the peer (finite inputs): a wrong fast kernel must not "win".
    ref = LOSS_IMPLS["compiled"](logits, i, j, k, check=False)
    for name in args.impls:
        got = LOSS_IMPLS[name](logits, i, j, k, check=False)
        torch.testing.assert_close(got[0].float(), ref[0].float(), rtol=0, atol=0)
        torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)

    times = {str(t): {name: [] for name in args.impls} for t in args.threads}
    cpu_times = {str(t): {name: [] for name in args.impls} for t in args.threads}
    page_faults = {str(t): {name: [] for name in args.impls} for t in args.threads}
    load_before = os.getloadavg()
    threads_before = torch.get_num_threads()
    n_impl = len(args.impls)
    for r in range(-args.warmup, args.runs):
        for t in args.threads:
            torch.set_num_threads(t)
            order = args.impls[r % n_impl:] + args.impls[: r % n_impl]  # rotate who goes first
            for name in order:
                fn = LOSS_IMPLS[name]
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c0, t0 = time.process_time(), time.perf_counter()
                fn(logits, i, j, k, check=False)
                elapsed = (time.perf_counter() - t0) * 1e3
                cpu = (time.process_time() - c0) * 1e3
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                if r >= 0:
                    times[str(t)][name].append(elapsed)
                    cpu_times[str(t)][name].append(cpu)
                    page_faults[str(t)][name].append(faults)
    torch.set_num_threads(threads_before)
    load_after = os.getloadavg()

    medians = {t: {name: statistics.median(v) for name, v in per.items()} for t, per in times.items()}
    ratios = {}
    for t, med in medians.items():
        if "compiled" in med:
            ratios[t] = {f"{name}/compiled": med[name] / med["compiled"] for name in med if name != "compiled"}
    env = {key: os.environ[key] for key in ENV_KEYS if key in os.environ}
    result = {
        "command": " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), "python",
                             *(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])]),
        "env": env,
        "label": args.label,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": {"cpu": _cpu_model(), "os_cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": load_after},
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ipguard_fast": ipguard_fast.__file__,
        "shape": [args.B, args.C],
        "dtype": args.dtype,
        "k": k,
        "runs": args.runs,
        "warmup": args.warmup,
        "unit": "ms",
        "impls": {"compiled": "ipguard_fast.ops.logit_gap_loss(check=False)",
                  "careful_eager": "benchmarks/test_bench_ops.py careful_eager_loss (no NaN handling)",
                  "reference": "ipguard_fast.reference.logit_gap_loss(check=False)"},
        "median_ms": medians,
        "ratio_of_medians": ratios,
        "min_ms": {t: {name: min(v) for name, v in per.items()} for t, per in times.items()},
        "quartiles_ms": {t: {name: statistics.quantiles(v, n=4) for name, v in per.items()}
                         for t, per in times.items()},
        # CPU time of the whole process (all its threads) per call: at 1 thread it
        # leaves out the time the process was preempted by other jobs; at 2 it adds
        # both threads, OpenMP's spin-waits included.
        "median_process_cpu_ms": {t: {name: statistics.median(v) for name, v in per.items()}
                                  for t, per in cpu_times.items()},
        "times_ms": times,
        "process_cpu_ms": cpu_times,
        # Minor page faults per call: a fresh 16 MB output costs ~4000 of them.
        "page_faults": page_faults,
    }
    if args.out is not None:  # first: a closed stdout must not lose the numbers
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for t, med in medians.items():
        line = "  ".join(f"{name} {m:7.2f} ms" for name, m in med.items())
        extra = "  ".join(f"{key} {v:.2f}x" for key, v in ratios.get(t, {}).items())
        print(f"threads={t}: {line}   {extra}")
    for t, med in result["median_process_cpu_ms"].items():
        print(f"threads={t}, process CPU time: " + "  ".join(f"{name} {m:7.2f} ms" for name, m in med.items()))
    print(f"loadavg before {load_before}, after {load_after}")
    if args.out is not None:
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
