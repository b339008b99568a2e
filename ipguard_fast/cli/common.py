"""What the subcommands share: argument types, the model, fingerprint-count and isolation options
(the confined worker that runs a model file), the token resolver, the verdict printer, and the
torchrun process group."""
from __future__ import annotations

import argparse
import contextlib
import os
import re
from typing import Iterator, Mapping

__all__ = ["DistributedRun", "OneLineParser", "add_count_argument", "add_isolation_arguments", "add_model_arguments",
           "add_selection_arguments", "add_token_arguments", "budget_arg", "check_margins", "floats_arg",
           "isolation_from_args", "named_as_options", "one_line_warnings", "resolve_token", "shape_arg",
           "significance_arg"]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (the usage itself is what --help is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def named_as_options(options: Mapping[str, str]) -> Iterator[None]:
    """A library ArgumentError about an argument in `options` (API name -> option) is
    reported against the option the user typed."""
    from .._validate import ArgumentError

    try:
        yield
    except ArgumentError as exc:
        if exc.argument in options:
            raise exc.renamed(options[exc.argument]) from exc
        raise


@contextlib.contextmanager
def one_line_warnings(command: str, category: type[Warning]) -> Iterator[None]:
    """Warnings of `category` printed as one line each on stderr ("ipguard COMMAND: warning:
    ..."), not as Python's file:line and source listing; other warnings unchanged."""
    import sys
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always", category)
        shown = warnings.showwarning

        def show(message, kind, *rest, **options):
            if issubclass(kind, category):
                print(f"ipguard {command}: warning: {message}", file=sys.stderr)
            else:
                shown(message, kind, *rest, **options)

        warnings.showwarning = show
        yield


def shape_arg(text: str) -> tuple[int, ...]:
    """An image shape without the batch axis: ``1,8,8`` or ``3x32x32``."""
    parts = re.split(r"[,x]", str(text).strip().lower())
    if not all(p.strip().isdigit() for p in parts) or not 1 <= len(parts) <= 7 or any(int(p) <= 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected positive sizes separated by commas, like 1,8,8, got {text!r}")
    return tuple(int(p) for p in parts)


def check_margins(name: str, ks) -> list[float]:
    """A non-empty list of finite margins >= 0, checked before any work starts."""
    from .._validate import finite_number

    if not ks:
        raise ValueError(f"{name}: give at least one margin")
    return [finite_number(name, k, minimum=0.0) for k in ks]


def floats_arg(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_count_argument(parser: argparse.ArgumentParser, default: int | None, help_text: str) -> None:
    """-n/--num-fingerprints, with --n kept as a hidden alias.

    Documented spellings never start with "--n": under torchrun, torchrun's own parser
    takes "--n" for an abbreviation of its --nnodes.
    """
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument("-n", "--num-fingerprints", dest="n", type=int, default=default, metavar="N",
                        help=help_text + shown)
    parser.add_argument("--n", dest="n", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_selection_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """protect's --pool-factor, --replicas and --no-refine (`prefix` says which method they set)."""
    from ..selection.pool import POOL_FACTOR
    from ..selection.significance import SIGNIFICANCE

    parser.add_argument("--pool-factor", type=int, default=POOL_FACTOR,
                        help=f"{prefix}pool points per k, as a multiple of n (default {POOL_FACTOR})")
    parser.add_argument("--replicas", type=int, default=3,
                        help=f"{prefix}replicas of each reference kind that select (default 3)")
    parser.add_argument("--no-refine", action="store_true",
                        help=f"{prefix}keep the selected pool points as they are (default: refine the top candidates "
                             "against the references)")
    parser.add_argument("--positive-focus", type=float, default=None, metavar="T",
                        help=f"{prefix}refinement weighs the kinds of copy per point by a softmin at temperature T "
                             "logits of their margins: distilled and extracted students keep more of the points, but "
                             "independent models too (README, three beds; default: off, every copy weighs the same)")
    parser.add_argument("--negative-cap", type=float, default=None, metavar="C",
                        help=f"{prefix}refinement pushes the independent references C logits from the owner's label "
                             "(copies: 3; default 6, which accused 2 innocents on the three beds at nine owner seeds "
                             "where 3 accused 8, README; 3 keeps more retrained and distilled copies on the demo bed)")
    parser.add_argument("--reference-fraction", type=float, default=None, metavar="F",
                        help=f"{prefix}each refinement step draws this share (0 < F <= 1) of the references: about F "
                             "of the refinement's time (0.5: 0.007 less mean ARUC on the three beds; default: off)")
    parser.add_argument("--epoch-cap", type=int, default=None, metavar="N",
                        help=f"{prefix}every independent reference trains at most N epochs: cheaper, and the same "
                             "references on any machine (--budget's cuts follow this machine's speed); weaker "
                             "negatives leave fewer points unique and the threshold lower, and a budget never cuts "
                             "below 10 (README, the plan; default: the recipe's, up to 60)")
    parser.add_argument("--budget", default=None, metavar="DURATION",
                        help=f"{prefix}time protect may spend on this machine, e.g. 90s, 30m, 2h: it measures the "
                             "owner's step costs, then cuts reference images, replicas, the pool and the refinement "
                             "until its estimate fits (default: the full recipe); the plan is printed and stored")
    parser.add_argument("--threshold-significance", default=str(SIGNIFICANCE), metavar="P",
                        help=f"{prefix}the stored threshold is the smallest matching rate that a model agreeing "
                             "at the calibrated level reaches by chance with probability at most P < 0.5 (one-sided "
                             f"binomial test over the n fingerprints); 'none' stores the level itself (default {SIGNIFICANCE})")


def significance_arg(args) -> float | None:
    """--threshold-significance as a probability in (0, 0.5), or None for 'none'."""
    from .._validate import ArgumentError

    text = str(args.threshold_significance).strip().lower()
    if text == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 0.5:
        raise ArgumentError("--threshold-significance", f"expected a probability in (0, 0.5) or 'none', "
                                                        f"got {args.threshold_significance!r}")
    return value


def budget_arg(args) -> float | None:
    """--budget in seconds (None when not given)."""
    from ..selection.plan import parse_duration

    return parse_duration(args.budget, "--budget") if args.budget is not None else None


def load_negative_models(specs) -> list:
    """The --negatives models as (spec, model), loaded (so checked: they exist, are readable and
    of a known format) before minutes of training; a bad one is bad input naming the option.
    A spec is a model file, or `package.module:factory=WEIGHTS` (your own code, or a
    torchvision/timm builder such as `torchvision.models:resnet18=r18.safetensors`, with
    local weights). They are the user's own independent models, so they load here, not in
    the worker."""
    from .._files import short_error
    from .._validate import ArgumentError
    from ..io import ModelLoadError, load_model

    models = []
    for spec in specs:
        try:
            models.append((str(spec), load_model(*_model_and_weights(str(spec)))))
        except (FileNotFoundError, ModelLoadError, ValueError, ImportError) as exc:
            raise ArgumentError("--negatives", f"{spec}: {short_error(exc)}") from exc
    return models


def _model_and_weights(spec: str) -> tuple[str, str | None]:
    """(`factory`, `weights`) from `factory=weights` when the left side is a factory spec; else (spec, None)."""
    from ..io.formats.factory import FORMAT as FACTORY

    left, sep, right = spec.partition("=")
    if sep and FACTORY.recognises(left):
        if not right:
            raise ValueError(f"{left}: the factory needs its weights after '='")
        return left, right
    return spec, None


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, onnx: bool = False) -> None:
    """--model and --weights; ``onnx``: the command takes suspects, so the suspect-only formats (ONNX) too."""
    from ..io.formats import model_help

    parser.add_argument("--model", required=required, metavar="M", help=model_help(suspects=onnx))
    parser.add_argument("--weights", metavar="FILE",
                        help="state_dict (.safetensors, or a torch file loaded with weights_only) "
                             "for a package.module:factory model")


def add_isolation_arguments(parser: argparse.ArgumentParser, timeout_help: str, prefix: str = "") -> None:
    """--timeout, --memory-limit and --no-isolate: the confined worker that runs a model file
    (``prefix``: when they apply, e.g. "with --model: ")."""
    parser.add_argument("--timeout", type=float, default=None, help=timeout_help)
    parser.add_argument("--memory-limit", type=float, default=None, metavar="GIB",
                        help=f"{prefix}GiB of memory the worker running the model may allocate (default 4)")
    parser.add_argument("--no-isolate", action="store_true",
                        help=f"{prefix}load and run the model in this process, not in a confined worker "
                             "(only for a file you trust)")


def isolation_from_args(args: argparse.Namespace, remote: bool = False):
    """The worker's limits from the options (None: --no-isolate, or ``remote``: no model file is
    run here), checked before any work."""
    from .._validate import ArgumentError
    from ..io import Isolation
    from ..io.sandbox.limits import memory_bytes

    if remote or args.no_isolate:
        misplaced = [option for option, given in (("--no-isolate", args.no_isolate and remote),
                                                  ("--memory-limit", args.memory_limit is not None),
                                                  ("--timeout", args.no_isolate and args.timeout is not None)) if given]
        if misplaced:
            raise ArgumentError(misplaced[0], "applies to the worker that runs a local --model (not with "
                                              f"{'--endpoint' if remote else '--no-isolate'})")
        return None
    limits = {}
    if args.timeout is not None:
        limits["timeout"] = args.timeout
    if args.memory_limit is not None:
        limits["memory_limit"] = memory_bytes("--memory-limit", args.memory_limit)
    with named_as_options({"timeout": "--timeout", "memory_limit": "--memory-limit"}):
        return Isolation(**limits)


def add_token_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token-env", metavar="VAR", help=f"environment variable holding the bearer token {purpose}")
    group.add_argument("--token", help=f"the bearer token {purpose} (visible in the process list: prefer --token-env)")


def resolve_token(args: argparse.Namespace) -> str | None:
    """The bearer token from --token or the environment variable named by --token-env."""
    from ..remote.config import check_token

    token, token_env = getattr(args, "token", None), getattr(args, "token_env", None)
    if token_env is not None:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise ValueError(f"--token-env: environment variable {token_env} is unset or empty")
        return check_token(f"--token-env: environment variable {token_env}", value)
    if token is not None and not token.strip():
        raise ValueError("--token: is empty")
    return check_token("--token", token.strip()) if token is not None else None


class DistributedRun:
    """Under torchrun (WORLD_SIZE > 1): joins the process group for the command's
    duration (gloo on CPU, nccl on GPU) and picks this rank's device. A rank that
    fails exits non-zero, and torchrun then stops the others, so a run never
    leaves a partial file (files are written by rank 0, atomically)."""

    def __init__(self, device: str | None):
        import torch
        import torch.distributed as dist

        from ..search.distributed import join_process_group, torchrun_ranks

        self.rank, self.world = torchrun_ranks()   # checked: a rank outside the world would wait forever
        self.device, self.started = device, False
        if self.world > 1 and not dist.is_initialized():
            use_cuda = (device is None or device.startswith("cuda")) and torch.cuda.is_available()
            if use_cuda:
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = f"cuda:{local}"
            join_process_group("nccl" if use_cuda else "gloo")   # within IPGUARD_FAST_JOIN_TIMEOUT s
            self.started = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __enter__(self) -> "DistributedRun":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.started:
            import torch.distributed as dist
            if exc_type is None:   # tear down together: a rank whose peer had already closed its
                dist.barrier()     # gloo connections aborted in teardown (terminate, SIGABRT)
            dist.destroy_process_group()
