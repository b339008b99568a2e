"""The `ipguard` command line: demo, extract, verify, evaluate (and serve, export, bench).

Each subcommand lives in its own module with `add_arguments(parser)` and
`run(args) -> int`. Exit codes: 0 done, 2 bad input (usage, invalid arguments or
files, with a one-line message), 1 any other failure, 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). A module that cannot be imported (an optional part
# missing from this install) leaves its command out.
COMMANDS = {
    "demo": ("ipguard_fast.cli.demo", "train a digits owner and suspects, extract, verify, report ARUC"),
    "extract": ("ipguard_fast.cli.extract", "extract fingerprints from a model"),
    "verify": ("ipguard_fast.cli.verify", "verify a suspect model (local or HTTP endpoint) against fingerprints"),
    "evaluate": ("ipguard_fast.cli.evaluate", "robustness/uniqueness evaluation with post-processed suspects"),
    "serve": ("ipguard_fast.remote.server", "serve a model behind a label-only HTTP API"),
    "export": ("ipguard_fast.onnx_io", "export a model to ONNX, TorchScript or torch.export"),
    "bench": ("ipguard_fast.cli.bench", "run the side-by-side extraction benchmark"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipguard", description="IPGuard fingerprinting of image classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an optional part that is not available in this install
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after `bench` belongs to benchmarks/run.py, flags included
        from .bench import run_argv
        return run_argv(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("ipguard: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"ipguard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"ipguard {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
