"""ipguard bench: the side-by-side extraction benchmark (ipguard_fast.bench)."""
from __future__ import annotations

import argparse


def add_arguments(p) -> None:
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of the benchmark (ipguard bench --help)")


def run(args) -> int:
    return run_argv(args.bench_args)


def run_argv(argv: list[str]) -> int:
    from ..bench.runner import main

    return int(main(argv) or 0)
