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
    p.add_argument("--students", type=int, default=0, metavar="N",
                   help="protect: also a student part of N points (`ipguard protect --students`), judged beside the "
                        "selected set; the verdicts of both together are printed")


def _protect_config(args):
    from ..selection import ProtectConfig

    return ProtectConfig(n=args.n, pool_factor=args.pool_factor, replicas=args.replicas, refine=refine_arg(args),
                         budget=budget_arg(args), epoch_cap=args.epoch_cap, threshold_significance=significance_arg(args),
                         seed=args.seed, students=args.students)


def check_arguments(args):
    """Every argument checked before minutes of training; returns the bed."""
    from .._files import check_output_folder
    from .._validate import positive_int, thread_count
    from ..data import digits_input_shape
    from ..evaluation import make_bed
    from ..models import DigitsMLP

    positive_int("-n", args.n)
    with named_as_options({"pool_factor": "--pool-factor", "replicas": "--replicas",   # as protect() takes them
                           "epoch_cap": "--epoch-cap", "students": "--students"}):
        _protect_config(args)
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
    from ..selection import CacheLocation, run_protect
    from ..train import accuracy

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
    protected = run_protect(owner, train_set, _protect_config(args), held_out=test_set,
                            cache=CacheLocation(out / "references"), progress=False, log=print)
    selected, part = protected.fingerprints, protected.students
    print(f"protect finished in {time.perf_counter() - protect_start:.0f} s")
    result = evaluate(owner, train_set, suspects=suspects, input_shape=shape, ks=args.k, n=args.n, test_set=test_set,
                      owner_name=f"DigitsCNN (digits, seed {args.seed})", seed=args.seed,
                      methods=("ipguard", "selected", "mistakes"), selected=selected, student_part=part)
    result.settings.update(command="ipguard demo", bed=bed.name)
    paths = write_report(result, out)
    print()
    print(summary_table(result))
    _print_methods(result)

    _after_release(owner, selected, part, suspects, out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def _after_release(owner, selected, part, suspects, out: Path) -> None:
    """The selected file (and its student part), thresholds calibrated on held-out references, verdicts."""
    from ..models import train_digits_model
    from ..verdicts import verify, verify_parts

    fp_path = selected.save(out / "fingerprints_selected.safetensors")
    positives = [s for s in suspects if s.role == "positive"]
    stolen = next((s for s in positives if s.family == "FTAL"), positives[0])   # FTAL unless --families left it out
    fresh_independent = train_digits_model("mlp", seed=99)
    print(f"\nselected fingerprints (threshold {selected.meta['threshold']:.2f}, calibrated on held-out "
          f"reference models): {fp_path}")
    if part is not None:
        print(f"student part (threshold {part.meta['threshold']:.2f}): "
              f"{part.save(out / 'fingerprints_selected.students.safetensors')}")

    def judge(model) -> str:
        if part is None:
            return str(verify(model, selected))
        verdict = verify_parts(model, {"main": selected, "students": part})
        rates = ", ".join(f"{name} {v.matching_rate:.2f} vs {v.threshold:.2f}" for name, v in verdict.parts.items())
        return f"{'PIRATED' if verdict.pirated else 'not pirated'} ({rates})"

    print(f"  owner model ({out / 'owner.pt'}): {judge(owner)}")
    print(f"  stolen copy {stolen.name}: {judge(stolen.model)}")
    print(f"  a new independent model: {judge(fresh_independent)}")


def _print_methods(result) -> None:
    """Each method's ARUC and its wrong verdicts at its threshold, plain IPGuard's best k first."""
    from ..evaluation.report import combined_summary, verdict_summary

    plain = [r for r in result.runs if r.method == "ipguard"]
    best = max(plain, key=lambda r: r.aruc)
    chosen, baseline = result.run("selected"), result.run("mistakes")
    arucs = ", ".join(f"k={r.k:g}: {r.aruc:.3f}" for r in plain)
    print(f"plain IPGuard ARUC: {arucs} (best k={best.k:g}, ROC AUC {best.roc_auc:.3f})")
    print(f"selected ARUC: {chosen.aruc:.3f} ({chosen.label}, ROC AUC {chosen.roc_auc:.3f})")
    print(f"mistakes baseline ARUC: {baseline.aruc:.3f} ({baseline.n_fingerprints} of the owner's held-out mistakes, "
          f"ROC AUC {baseline.roc_auc:.3f})")
    part = [r for r in result.runs if r.method == "students"]
    if part:
        print(f"student part ARUC: {part[0].aruc:.3f} ({part[0].n_fingerprints} points, ROC AUC {part[0].roc_auc:.3f})")
    for run in (best, chosen, *part, baseline):
        accused = run.verdicts["false_accusations"]
        print(f"wrong verdicts, {run.label or f'plain k={run.k:g}'}: {verdict_summary(run.verdicts)}"
              + (f"; falsely accused: {', '.join(accused)}" if accused else ""))
    combined = result.combined_verdicts()
    if combined is not None:
        print(f"wrong verdicts, selected set and student part together (a copy when either shows it): "
              f"{combined_summary(combined)}")
