"""ipguard protect: the owner's whole job -- reference models, a candidate pool, selection
and a calibrated threshold -- written to one fingerprint file."""
from __future__ import annotations

import time
from pathlib import Path

from .common import (DistributedRun, add_count_argument, add_model_arguments, add_selection_arguments, budget_arg,
                     load_negative_models, named_as_options, one_line_warnings, significance_arg)
from .refine_args import refine_arg


def add_arguments(p) -> None:
    from ..data import DATA_SPECS

    add_model_arguments(p)
    p.add_argument("--data", required=True, help=f"the owner's training data: {DATA_SPECS} (local folders only)")
    p.add_argument("--held-out-data", default=None, metavar="SPEC",
                   help="data the owner never trained on (the spec's test split; an imagefolder is read whole): its "
                        "mistakes there join the pool, and the held-out references choose whether the selection "
                        "takes them beside the boundary points")
    add_count_argument(p, 100, "fingerprints to keep")
    p.add_argument("--k", default="auto",
                   help="'auto' (chosen on held-out references from a grid scaled by the owner's margins), a number, "
                        "or comma-separated numbers to choose among")
    add_selection_arguments(p)
    p.add_argument("--score", default="separation", help="separation (default) or agreement")
    p.add_argument("--init", default="data",
                   help="pool starts: data (default), uniform, or auto (both, chosen by held-out references)")
    p.add_argument("--seed", type=int, default=0)
    _add_recipe_arguments(p)
    p.add_argument("--negatives", nargs="*", default=[], metavar="M",
                   help="independent models you already have (model files, or package.module:factory=WEIGHTS such "
                        "as torchvision.models:resnet18=r18.safetensors), used as negative references beside the "
                        "trained ones: free, and by construction not copies")
    p.add_argument("--cache", default=None,
                   help="folder for the reference models and the pool's finished parts and checkpoints "
                        "(safetensors, reused by later runs and by a rerun after an interruption; default: "
                        "ipguard-references next to --out)")
    p.add_argument("--no-cache", action="store_true", help="build the references and the pool in memory only")
    p.add_argument("--cache-key", default=None, metavar="FILE",
                   help="the key that authenticates the cache's manifest (default: the progress key, "
                        "$IPGUARD_FAST_PROGRESS_KEY or ~/.config/ipguard_fast/progress.key; made when missing)")
    p.add_argument("--cache-readonly", action="store_true",
                   help="refuse a cached reference or pool part that fails its checks instead of rebuilding it, and "
                        "write nothing to the cache (what it lacks is built in memory)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (knobs and each stage's estimated time) and stop; --out is not written")
    p.add_argument("--bf16", action="store_true",
                   help="search the pool under bf16 autocast, and on a CPU with AMX train a conv owner's references "
                        "at bf16: faster, another draw of the recipe (not the default: README, precision)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--students", type=int, default=0, metavar="N",
                   help="also a student part of N points (its own file, OUT's name with .students before the "
                        "suffix, and its own threshold): points that extraction students of the model's outputs "
                        "keep and models of the same data do not; verify a suspect with both files, a copy when "
                        "either says so (each file's threshold then takes half the significance)")
    p.add_argument("--out", required=True, help="the fingerprint file to write (.safetensors)")


def _add_recipe_arguments(p) -> None:
    group = p.add_argument_group(
        "the owner's training recipe", "when known, some negative references are trained exactly so (default: "
        "they train until their held-out accuracy reaches the owner's); --negative-epochs turns it on")
    group.add_argument("--negative-epochs", type=int, default=None, help="the owner's epochs")
    group.add_argument("--negative-lr", type=float, default=None, help="its learning rate (default 1e-3)")
    group.add_argument("--negative-optimizer", default=None, help="adam (default) or sgd (momentum 0.9)")
    group.add_argument("--negative-batch-size", type=int, default=None, help="its batch size (default 64)")
    group.add_argument("--negative-weight-decay", type=float, default=None, help="its weight decay (default 0)")
    group.add_argument("--negative-augment", action="store_true", help="it trained with random shifts")


def _train_recipe(args):
    """The owner's TrainRecipe from the --negative-* options (None when none is given)."""
    from .._validate import ArgumentError
    from ..train import TrainRecipe

    given = {key: getattr(args, f"negative_{key}") for key in ("epochs", "lr", "optimizer", "batch_size",
                                                              "weight_decay")}
    if all(value is None for value in given.values()) and not args.negative_augment:
        return None
    if given["epochs"] is None:
        raise ArgumentError("--negative-epochs", "the owner's recipe needs its epochs")
    options = {key: value for key, value in given.items() if value is not None}
    with named_as_options({key: f"--negative-{key.replace('_', '-')}" for key in given}):
        return TrainRecipe(**options, augment=args.negative_augment)


def run(args) -> int:
    import torch

    from .._validate import thread_count
    from ..io import load_trainable_model
    from ..selection import CacheLocation, ProtectConfig, plan_protect, run_protect
    from ..selection.plan import plan_lines
    from ..selection.cache import cache_secret, check_cache_dir

    start = time.perf_counter()
    if not args.dry_run:
        _check_outputs(args)
    out = Path(args.out)
    cache = None if args.no_cache else Path(args.cache) if args.cache else out.parent / "ipguard-references"
    with named_as_options(_OPTIONS):   # the cache and its key before any work
        check_cache_dir(cache, readonly=args.cache_readonly)
        if cache is not None:
            cache_secret(args.cache_key)
    if args.threads is not None:
        torch.set_num_threads(thread_count("--threads", args.threads))
    k = _k_arg(args.k)
    budget, significance, refine = budget_arg(args), significance_arg(args), refine_arg(args)
    train_recipe = _train_recipe(args)
    negatives = [model for _, model in load_negative_models(args.negatives)]
    owner = load_trainable_model(args.model, args.weights, "--model")
    train_set = data_arg("--data", args.data, "train")
    held_out = data_arg("--held-out-data", args.held_out_data, "test") if args.held_out_data else None
    # Under torchrun the ranks share the reference training (through the cache) and the pool;
    # every rank selects the same set, and rank 0 writes it.
    from ..selection.cache import ReferenceCacheWarning

    with (DistributedRun("cpu") as ranks, named_as_options(_OPTIONS),
          one_line_warnings("protect", ReferenceCacheWarning)):
        config = ProtectConfig(n=args.n, k=k, pool_factor=args.pool_factor, replicas=args.replicas, score=args.score,
                               init=args.init, seed=args.seed, refine=refine, train_recipe=train_recipe,
                               budget=budget, epoch_cap=args.epoch_cap, threshold_significance=significance,
                               students=args.students, search={"amp": "bf16"} if args.bf16 else {})
        if args.dry_run:   # every rank measures (the pilot extraction is shared); rank 0 prints
            lines = plan_lines(plan_protect(owner, train_set, config))
            if ranks.is_main:
                print("\n".join(lines))
            return 0
        result = run_protect(owner, train_set, config,
                             cache=CacheLocation(cache, args.cache_key, args.cache_readonly),
                             negatives=negatives or None, held_out=held_out,
                             progress=not args.no_progress and ranks.is_main, log=print if ranks.is_main else None)
    if not ranks.is_main:
        return 0
    fps = result.fingerprints
    _print_result(fps, fps.save(out))
    if result.students is not None:
        part = result.students
        print(f"{len(part)} student-part fingerprints, threshold {part.meta['threshold']:.3f}: "
              f"{part.save(student_part_path(out))}")
    print(f"protect finished in {time.perf_counter() - start:.0f} s")
    return 0


def _check_outputs(args) -> None:
    """--out, and the student part's file beside it, writable and none of the inputs."""
    from .._files import check_writable_output

    inputs = [args.model, args.weights, args.data, args.held_out_data, args.cache_key]
    check_writable_output("--out", args.out, inputs)
    if args.students:
        check_writable_output("--students", str(student_part_path(Path(args.out))), inputs + [args.out])


def student_part_path(out: Path) -> Path:
    """Where the student part goes: OUT's name with .students before its suffix."""
    return out.with_name(f"{out.stem}.students{out.suffix or '.safetensors'}")


def _print_result(fps, path) -> None:
    """Every candidate configuration's held-out scores (the chosen one starred), then what was written."""
    info = fps.meta["protect"]
    for candidate in info["candidates"]:
        mark = "*" if candidate["name"] == info["chosen"] else " "
        print(f"{mark} {candidate['name']:24s} held-out references: ARUC {candidate['aruc']:.3f}, "
              f"ROC AUC {candidate['roc_auc']:.3f}")
    refined = fps.meta["selection"]["refined"]
    how = ("unrefined" if refined is None else f"unrefined: {refined['skipped']}" if "skipped" in refined
           else f"refined from the top {refined['candidates']}")
    print(f"{len(fps)} fingerprints selected from {fps.meta['selection']['pool_size']} ({info['chosen']}; {how}), "
          f"threshold {info['threshold']:.3f}: {path}")


# protect()'s argument names -> the options that set them
_OPTIONS = {"n": "-n", "k": "--k", "pool_factor": "--pool-factor", "replicas": "--replicas", "score": "--score",
            "init": "--init", "train_data": "--data", "owner": "--model", "cache_dir": "--cache",
            "cache_key_file": "--cache-key", "held_out_data": "--held-out-data", "budget": "--budget",
            "epoch_cap": "--epoch-cap", "students": "--students",
            "epochs": "--negative-epochs", "seed": "--seed", "negatives": "--negatives"}


def data_arg(option: str, spec: str, split: str):
    """The data set of `spec` (an option such as --held-out-data: the spec's test split), its errors
    named by the option."""
    from ..data import load_data

    try:
        return load_data(spec, split)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{option}: {str(exc).removeprefix('data: ')}") from None


def _k_arg(text: str):
    if text == "auto":
        return "auto"
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--k: expected 'auto' or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values
