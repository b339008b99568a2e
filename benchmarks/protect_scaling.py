"""protect()'s cost against the number of training images: the full recipe at several sizes
(does it grow at most linearly?) and a fixed budget at several sizes (is the budget
honoured, whatever the data's size?), on the 28x28 owner of foreign_bed_28.py.

    python benchmarks/protect_scaling.py --out benchmarks/results/protect-scaling-DATE \
        --runs 2500:0,5000:0,10000:0,20000:0,10000:300,20000:300,60000:300 [--seed 0] [--threads 2] \
        [--owners DIR]

Each run `IMAGES:BUDGET` (BUDGET in seconds, 0: the full recipe) grows the owner's half of
the digits to IMAGES images at 28x28 (foreign_bed_28.grown_halves: the same data as that
bed), trains the owner (`--arch`, LeNet-5 by default) by the foreign owner recipe (or with
`--owners DIR` loads the one an earlier run kept there), and
runs protect() on it from an empty reference cache, the upsampled test digits as held-out
data. Recorded per run (run-IMAGES-BUDGET.json): the plan (rung, knobs, estimates and the
worst case), each stage's and each reference's measured seconds, protect's own held-out
ARUC of the chosen configuration and the threshold; summary.md puts them side by side with the seconds per 1,000 images. No bed is
built: quality on a bed is foreign_bed_28.py's job.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foreign_bed_28 import grown_halves  # noqa: E402
from three_beds import prepare_run  # noqa: E402


def one_run(args, images: int, budget: float) -> dict:
    from ipguard_fast.data import load_digits
    from ipguard_fast.selection import CacheLocation, run_protect
    from ipguard_fast.selection.config import ProtectConfig

    shape = (1, 28, 28)
    data, _ = grown_halves(images, args.seed)
    test = load_digits("test", size=28)
    owner, owner_seconds = _owner(args, images, data, shape)
    print(f"[{images} images, budget {budget:g} s] owner "
          f"{'from ' + args.owners if owner_seconds is None else f'trained in {owner_seconds:.0f} s'}", flush=True)
    config = ProtectConfig(n=args.n, seed=args.seed, budget=budget or None)
    with tempfile.TemporaryDirectory(prefix="ipguard-scaling-") as cache:   # every reference built afresh
        start = time.perf_counter()
        result = run_protect(owner, data, config, progress=False, log=print, held_out=test,
                             cache=CacheLocation(Path(cache)))
        seconds = time.perf_counter() - start
    report = result.fingerprints.meta["protect"]
    chosen = _chosen_candidate(report)
    print(f"[{images} images, budget {budget:g} s] protect took {seconds:.0f} s", flush=True)
    return {"images": images, "budget": budget, "seed": args.seed, "arch": args.arch, "owner_seconds": owner_seconds,
            "protect_seconds": seconds, "timings": report["timings"], "plan": report.get("plan"),
            "chosen": report["chosen"], "chosen_candidate": chosen, "candidates": report["candidates"], "threshold": result.fingerprints.meta["threshold"],
            "references": len(report["reference_seconds"]), "reference_seconds": report["reference_seconds"],
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "load": os.getloadavg()}}


def _owner(args, images: int, data, shape):
    """(the owner, seconds its training took): trained by the foreign owner recipe, or with
    --owners loaded from that folder when an earlier run trained it (seconds None) -- the
    owner does not depend on the budget, and at 60,000 images it takes 4-7 minutes."""
    from safetensors.torch import load_file, save_file

    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import build_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.train import train_model

    build = lambda: build_model(args.arch, 10, shape)  # noqa: E731
    path = Path(args.owners) / f"owner-{args.arch}-{images}-seed{args.seed}.safetensors" if args.owners else None
    if path is not None and path.exists():
        owner = build()
        owner.load_state_dict(load_file(path))
        return owner.eval(), None
    start = time.perf_counter()
    owner = train_model(seeded(build, args.seed), data, FOREIGN_OWNER_RECIPE, seed=args.seed)
    seconds = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in owner.state_dict().items()}, path)
    return owner, seconds


def _chosen_candidate(report: dict) -> dict | None:
    """The held-out measures of the configuration protect chose: choice.choose keeps the
    candidate of the highest held-out ARUC (then ROC AUC)."""
    return max(report["candidates"], key=lambda c: (round(c["aruc"], 6), round(c["roc_auc"], 6)), default=None)


def summary_lines(records: list[dict]) -> list[str]:
    lines = ["| images | budget | plan rung | estimated (worst case) | measured | references / pool / scoring / refinement (s) "
             "| measured per 1,000 images | held-out ARUC | threshold |",
             "|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (r["budget"] > 0, r["budget"], r["images"])):
        plan, t = r["plan"] or {}, r["timings"]
        stages = " / ".join(f"{t.get(s, 0):.0f}" for s in ("references", "pool", "reference_outputs", "refine"))
        aruc = (_chosen_candidate(r) or {}).get("aruc")
        lines.append(f"| {r['images']:,} | {_budget_words(r['budget'])} "
                     f"| {plan.get('rung', '-')} | {plan.get('estimated_total_seconds', float('nan')):.0f} s"
                     f"{_worst_words(plan)} "
                     f"| {r['protect_seconds']:.0f} s | {stages} | {1000 * r['protect_seconds'] / r['images']:.1f} s "
                     f"| {'-' if aruc is None else f'{aruc:.3f}'} | {r['threshold']:.2f} |")
    return lines


def _worst_words(plan: dict) -> str:
    """' (N s)': the plan's worst case; nothing for plans recorded before it was."""
    worst = plan.get("worst_case_seconds")
    return "" if worst is None else f" ({worst:.0f} s)"


def _budget_words(budget: float) -> str:
    return "full recipe" if not budget else f"{budget:.0f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--runs", default="2500:0,5000:0,10000:0,20000:0,10000:300,20000:300,60000:300",
                   help="IMAGES:BUDGET_SECONDS,... (budget 0: the full recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="lenet5")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--owners", default=None, help="a folder to keep the trained owners in and reuse them from")
    p.add_argument("--summarize", action="store_true", help="only join the folder's runs into summary.md")
    args = p.parse_args(argv)
    out, command = prepare_run(args, argv)
    for spec in ([] if args.summarize else args.runs.split(",")):
        images, budget = spec.split(":")
        record = one_run(args, int(images), float(budget))
        path = out / f"run-{int(images)}-{float(budget):g}.json"
        path.write_text(json.dumps({"command": command, **record}, indent=1, default=str) + "\n")
    records = [json.loads(f.read_text()) for f in sorted(out.glob("run-*.json"))]
    (out / "summary.md").write_text("\n".join(summary_lines(records)) + "\n")
    print("\n".join(summary_lines(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
