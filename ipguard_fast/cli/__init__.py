"""The `ipguard` command line: every subcommand, one parser, one error contract.

Each subcommand lives in its own module with `add_arguments(parser)` and
`run(args) -> int`; the modules import the library lazily inside `run`, so `ipguard
--help` is fast and an optional part that is missing fails its own command with a
message naming the extra to install. Exit codes: 0 done, 2 bad input (usage, invalid
arguments or files, a missing extra: one line), 1 any other failure (one line, or the
traceback with --debug; a resource that ran out, such as a model's memory, is "ran out of
memory" here, never bad input, also when a library layer wrapped it), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM, which stops a command as Ctrl-C does: what a long job
saves on Ctrl-C, such as extract's checkpoint, is saved then too).
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
import warnings

from .._files import short_error
from .._startup import resume_interrupts
from . import bench, calibrate, demo, evaluate, export, extract, protect, serve, verify
from .common import OneLineParser

# name -> (module, help)
COMMANDS = {
    "demo": (demo, "train a digits owner and suspects, extract, verify, report ARUC"),
    "extract": (extract, "extract fingerprints from a model"),
    "protect": (protect, "select fingerprints with reference models and calibrate a threshold (the owner's job)"),
    "calibrate": (calibrate, "store a threshold in a fingerprint file, from independent models' matching rates"),
    "verify": (verify, "verify a suspect model (local or HTTP endpoint) against fingerprints"),
    "evaluate": (evaluate, "robustness/uniqueness evaluation with post-processed suspects"),
    "serve": (serve, "serve a model behind a label-only HTTP API"),
    "export": (export, "export a model to ONNX, TorchScript or torch.export"),
    "bench": (bench, "run the side-by-side extraction benchmark"),
}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="ipguard", description="IPGuard fingerprinting of image classifiers.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `ipguard ARGV`; returns the exit code (never raises SystemExit)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    resume_interrupts()   # Ctrl-C while the command started exited at once; from here it is handled as below
    debug = argv[:1] == ["--debug"]
    command = argv[1:] if debug else argv
    if command[:1] == ["bench"]:  # everything after `bench` belongs to the benchmark's own parser
        return _guarded("bench", lambda: bench.run_argv(command[1:]), debug)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0): a code, like every other outcome
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        print("ipguard: interrupted", file=sys.stderr)
        return 130
    return _guarded(args.command, lambda: args._run(args), args.debug)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that every path that saves on Ctrl-C saves."""


def _terminate(signum, frame):
    raise Terminated


def _guarded(command: str, call, debug: bool) -> int:
    previous = None   # only the default (die at once) is replaced: a caller's handler or SIG_IGN stays
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            if not debug:   # one line per warning, as errors are; --debug keeps Python's file:line and source
                warnings.showwarning = _one_line_warning(command)
            return _outcome(command, call, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line_warning(command: str):
    """warnings.showwarning printing "ipguard COMMAND: warning: TEXT" (the text on one line, whole)
    rather than Python's file:line and the source line that raised it. Filters are untouched."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"ipguard {command}: warning: {short_error(message, limit=2000)}", file=file or sys.stderr)
    return show


def _outcome(command: str, call, debug: bool) -> int:
    from .._errors import ran_out_of_memory
    from ..remote.client import RemoteError

    try:
        return int(call() or 0)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"ipguard: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        if debug:
            traceback.print_exc()
        if ran_out_of_memory(exc):   # a resource ran out (checked first: also under a ValueError): never bad input
            detail = "" if _one_line(exc) == type(exc).__name__ else f": {_one_line(exc)}"
            print(f"ipguard {command}: failed: ran out of memory: {type(exc).__name__}{detail}", file=sys.stderr)
            return 1
        if isinstance(exc, (ValueError, FileNotFoundError, ImportError)):
            print(f"ipguard {command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, RemoteError):
            print(f"ipguard {command}: error: {_one_line(exc)}", file=sys.stderr)
            return 1
        print(f"ipguard {command}: failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return short_error(exc, limit=2000)
