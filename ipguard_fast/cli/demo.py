"""ipguard demo: the whole IPGuard workflow on the embedded digits data, on a CPU.

Trains the owner (a small CNN) and the evaluation's suspects (fine-tuned, retrained,
pruned, quantised and distilled copies; independently trained CNNs and MLPs), runs
protect() -- reference models of its own, a pool, selection, a threshold -- and
evaluates plain IPGuard at several k and the selected fingerprints side by side on the
same held-out suspects; then shows verdicts with the selected fingerprints.
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import (add_count_argument, add_selection_arguments, budget_arg, check_margins, floats_arg,
                     named_as_options, significance_arg)
from .family_args import add_families_argument, families_arg
from .refine_args import refine_arg


def add_arguments(p) -> None:
    p.add_argument("--out", default="ipguard-demo", help="output folder (default ./ipguard-demo)")
    add_count_argument(p, 100, "fingerprints per k")
    p.add_argument("--k", type=floats_arg, default=[1.0, 3.0, 5.0, 10.0], help="margins to sweep (default 1,3,5,10)")
    p.add_argument("--seed", type=int, default=0,
                   help="the owner's seed; the suspects' and the search's follow it (the independents take the "
                        "three seeds after it)")
    p.add_argument("--bed", default="demo",
                   help="the suspects: demo (default), foreign (independents trained by recipes protect never uses) "
                        "or hard (independents trained like the owner over five architectures; the wider grid)")
    p.add_argument("--full", action="store_true", help="the wider grid of post-processing attacks (slower)")
    add_families_argument(p)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the whole demo (default: torch's; 1 when other jobs share the cores)")
    add_selection_arguments(p, "protect: ")


def check_arguments(args):
    """Every argument checked before minutes of training; returns the bed."""
    from .._files import check_output_folder
    from .._validate import positive_int, thread_count
    from ..data import digits_input_shape
    from ..evaluation import make_bed
    from ..models import DigitsMLP
    from ..selection import ProtectConfig

    positive_int("-n", args.n)
    with named_as_options({"pool_factor": "--pool-factor", "replicas": "--replicas",   # as protect() takes them
                           "epoch_cap": "--epoch-cap"}):
        ProtectConfig(n=args.n, pool_factor=args.pool_factor, replicas=args.replicas, refine=refine_arg(args),
                      budget=budget_arg(args), epoch_cap=args.epoch_cap, threshold_significance=significance_arg(args))
    check_margins("--k", args.k)
    check_output_folder("--out", args.out)
    if args.threads is not None:
        thread_count("--threads", args.threads)
    with named_as_options({"bed": "--bed", "families": "--families"}):
        bed = make_bed(args.bed, digits=True, input_shape=digits_input_shape(), num_classes=10, full=args.full,
                       small_factory=DigitsMLP)
        bed.variants(args.seed, families_arg(args))   # a family this bed does not build: refused here
    return bed


def run(args) -> int:
    from ..data import digits_input_shape, load_digits
    from ..evaluation import evaluate, summary_table, write_report
    from ..io import save_torchscript
    from ..models import train_digits_model
    from ..selection import protect
    from ..train import accuracy
    from ..verdicts import verify

    bed = check_arguments(args)  # all of them, before minutes of training
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    shape = digits_input_shape()
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = load_digits("train"), load_digits("test")
    owner = train_digits_model("cnn", seed=args.seed)
    print(f"owner DigitsCNN: test accuracy {accuracy(owner, test_set):.4f}")
    save_torchscript(owner, train_set.tensors[0][:2], out / "owner.pt")

    suspects = bed.suspects(owner, train_set, seed=args.seed, families=families_arg(args))
    # The owner's job: references of its own (cached under --out), a pool (with the owner's
    # mistakes on its test split, as evaluate gives them), selection, refinement, a threshold.
    protect_start = time.perf_counter()
    selected = protect(owner, train_set, args.n, replicas=args.replicas, pool_factor=args.pool_factor,
                       budget=budget_arg(args), epoch_cap=args.epoch_cap, held_out_data=test_set,
                       threshold_significance=significance_arg(args),
                       refine=refine_arg(args), seed=args.seed, cache_dir=out / "references", progress=False,
                       log=print)
    print(f"protect finished in {time.perf_counter() - protect_start:.0f} s")
    result = evaluate(owner, train_set, suspects=suspects, input_shape=shape, ks=args.k, n=args.n, test_set=test_set,
                      owner_name=f"DigitsCNN (digits, seed {args.seed})", seed=args.seed,
                      methods=("ipguard", "selected", "mistakes"),
                      selected=selected)
    result.settings.update(command="ipguard demo", bed=bed.name)
    paths = write_report(result, out)
    print()
    print(summary_table(result))
    _print_methods(result)

    # After release: the selected file, its threshold calibrated on held-out references, verdicts.
    fp_path = selected.save(out / "fingerprints_selected.safetensors")
    positives = [s for s in suspects if s.role == "positive"]
    stolen = next((s for s in positives if s.family == "FTAL"), positives[0])   # FTAL unless --families left it out
    fresh_independent = train_digits_model("mlp", seed=99)
    print(f"\nselected fingerprints (threshold {selected.meta['threshold']:.2f}, calibrated on held-out "
          f"reference models): {fp_path}")
    print(f"  owner model ({out / 'owner.pt'}): {verify(owner, selected)}")
    print(f"  stolen copy {stolen.name}: {verify(stolen.model, selected)}")
    print(f"  a new independent model: {verify(fresh_independent, selected)}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def _print_methods(result) -> None:
    """Each method's ARUC and its wrong verdicts at its threshold, plain IPGuard's best k first."""
    from ..evaluation.report import verdict_summary

    plain = [r for r in result.runs if r.method == "ipguard"]
    best = max(plain, key=lambda r: r.aruc)
    chosen, baseline = result.run("selected"), result.run("mistakes")
    arucs = ", ".join(f"k={r.k:g}: {r.aruc:.3f}" for r in plain)
    print(f"plain IPGuard ARUC: {arucs} (best k={best.k:g}, ROC AUC {best.roc_auc:.3f})")
    print(f"selected ARUC: {chosen.aruc:.3f} ({chosen.label}, ROC AUC {chosen.roc_auc:.3f})")
    print(f"mistakes baseline ARUC: {baseline.aruc:.3f} ({baseline.n_fingerprints} of the owner's held-out mistakes, "
          f"ROC AUC {baseline.roc_auc:.3f})")
    for run in (best, chosen, baseline):
        accused = run.verdicts["false_accusations"]
        print(f"wrong verdicts, {run.label or f'plain k={run.k:g}'}: {verdict_summary(run.verdicts)}"
              + (f"; falsely accused: {', '.join(accused)}" if accused else ""))
