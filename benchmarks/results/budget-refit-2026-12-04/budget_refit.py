"""protect under a budget with and without the refit of its later stages (plan_refit.py),
on owners whose references the plan's estimate underrates: each run's wall time against
the budget, the plan, the stage times and the held-out ARUC.

    python benchmarks/results/budget-refit-2026-12-04/budget_refit.py --budget 120 --threads 2 --out DIR

"without" replaces the refit by the identity (the plan as fitted before the references)."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch


def owner_and_data(name: str, seed: int):
    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation.beds import owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, train_digits_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.train import train_model

    train = load_digits("train")
    if name == "foreign":   # the foreign bed's owner: 40 epochs of SGD + augmentation on its half
        data = owner_half(train, seed)
        return train_model(seeded(DigitsCNN, seed), data, FOREIGN_OWNER_RECIPE, seed=seed), data
    return train_digits_model("cnn", seed=seed), train


def run(name: str, seed: int, budget: float, refit: bool) -> dict:
    from ipguard_fast.selection import ProtectConfig, run_protect

    protect_module = importlib.import_module("ipguard_fast.selection.protect")
    original = protect_module.refit_later_stages
    if not refit:
        protect_module.refit_later_stages = lambda plan, *args, **kwargs: plan
    try:
        owner, data = owner_and_data(name, seed)
        start = time.perf_counter()
        result = run_protect(owner, data, ProtectConfig(n=100, seed=seed, budget=budget), progress=False, log=print)
        seconds = time.perf_counter() - start
    finally:
        protect_module.refit_later_stages = original
    report = result.fingerprints.meta["protect"]
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    return {"owner": name, "seed": seed, "budget": budget, "refit_enabled": refit, "seconds": round(seconds, 1),
            "over_budget": round(seconds / budget - 1, 3), "plan": report["plan"], "timings": report["timings"],
            "held_out_aruc": chosen["aruc"], "held_out_roc_auc": chosen["roc_auc"], "threshold": report["threshold"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=120)
    p.add_argument("--owners", default="foreign:0,demo:1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for entry in args.owners.split(","):
        name, seed = entry.split(":")
        for refit in (False, True):
            rows.append(run(name, int(seed), args.budget, refit))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "plan"}))
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
               "load_after": os.getloadavg()}
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "machine": machine, "runs": rows},
                                         indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
