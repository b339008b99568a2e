"""ipguard bench: the side-by-side extraction benchmark (benchmarks/run.py)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def add_arguments(p) -> None:
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for benchmarks/run.py (see its --help)")


def run(args) -> int:
    return run_argv(args.bench_args)


def run_argv(argv: list[str]) -> int:
    if not RUNNER.exists():
        raise FileNotFoundError(f"{RUNNER} not found: `ipguard bench` runs from a source checkout")
    spec = importlib.util.spec_from_file_location("ipguard_bench_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)
