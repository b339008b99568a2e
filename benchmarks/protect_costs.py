"""protect()'s cost table: the plan's measured unit costs and its per-stage estimates for
owners from the digits CNN to ResNet-50 at ImageNet scale, and optionally a real budgeted
run whose stage times are compared with the plan.

Rows (--rows):
  digits          the digits CNN owner on the 1,437 digits (8x8)
  digits28-10k    a CNN at 28x28 on 10,000 images: digits upsampled and shifted (no real set here)
  digits28-60k    the same owner on 60,000 such images
  resnet20-50k    ResNet-20 at 32x32 (trained briefly on upsampled digits) on 50,000 such images
  resnet50-imagenet  torchvision's ResNet-50, 1,000 classes, 224x224, on a stand-in for the
                  1,281,167 ImageNet training images (random pixels: the unit costs need the
                  shapes, not the content; its pilot extraction runs at most 100 steps, so its
                  pool estimate is a lower bound)
Each row: the unit costs, the full recipe's estimate per stage, and the plan chosen at
10 %, 25 % and 50 % of the full estimate. On CUDA also the training step at float32
against bf16 + channels_last (the plan trains references at the faster).

--run-budget ROW:SECONDS runs protect() for real on that row under that budget and records
its stage times beside the plan's estimates (the budget honoured or not). --replan JSON...
--budgets 30m,2h prints the plans of recorded rows at other budgets (no model runs).

    python benchmarks/protect_costs.py --device cpu --rows digits,digits28-10k --out costs.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
from torch.utils.data import Dataset, TensorDataset

from ipguard_fast.augment import random_shift
from ipguard_fast.data import load_digits
from ipguard_fast.models import build_model, train_digits_model
from ipguard_fast.nn import seeded
from ipguard_fast.selection import ProtectConfig, plan_protect, run_protect
from ipguard_fast.selection.plan import fit_plan, plan_lines
from ipguard_fast.selection.plan_costs import train_step_seconds
from ipguard_fast.train import train_classifier

IMAGENET_TRAIN = 1_281_167


class RandomImages(Dataset):
    """`length` items of seeded random pixels with seeded labels, made on demand (a stand-in
    whose size is the real set's; nothing is held in memory)."""

    def __init__(self, length: int, shape, classes: int):
        self.length, self.shape, self.classes = length, tuple(shape), classes

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(int(index))
        return torch.rand(self.shape, generator=g), int(torch.randint(self.classes, (), generator=g))


def grown_digits(count: int, size: int, channels: int, seed: int = 0) -> TensorDataset:
    """`count` images from the digits training split upsampled to size x size, each copy
    after the first shifted by a few random pixels."""
    return grown(load_digits("train", size=size, channels=channels), count, seed)


def grown(images: TensorDataset, count: int, seed: int) -> TensorDataset:
    """`count` items: `images`, then copies of them each shifted by up to a side / 8 of
    random pixels (seeded), cut at `count`."""
    x, y = images.tensors
    g = torch.Generator().manual_seed(seed)
    reps = -(-count // len(x))
    xs = [x] + [random_shift(x, g, max_shift=max(1, x.shape[-1] // 8)) for _ in range(reps - 1)]
    return TensorDataset(torch.cat(xs)[:count].contiguous(), y.repeat(reps)[:count].clone())


def owner_and_data(row: str, device: str):
    if row == "digits":
        return train_digits_model("cnn", seed=0).to(device), load_digits("train"), {}
    if row.startswith("digits28-"):
        data = grown_digits({"digits28-10k": 10_000, "digits28-60k": 60_000}[row], 28, 1)
        owner = seeded(lambda: build_model("digits_cnn", 10, (1, 28, 28)), 0)
        train_classifier(owner, TensorDataset(*(t[:5000] for t in data.tensors)), epochs=3, lr=3e-3, device=device)
        return owner.to(device).eval(), data, {}
    if row == "resnet20-50k":
        data = grown_digits(50_000, 32, 3)
        owner = seeded(lambda: build_model("resnet20", 10, (3, 32, 32)), 0)
        train_classifier(owner, TensorDataset(*(t[:5000] for t in data.tensors)), epochs=3, lr=3e-3, device=device)
        return owner.to(device).eval(), data, {}
    if row == "resnet50-imagenet":
        owner = seeded(lambda: build_model("tv:resnet50", 1000, (3, 224, 224)), 0).to(device).eval()
        return owner, RandomImages(IMAGENET_TRAIN, (3, 224, 224), 1000), {"max_steps": 100}
    raise SystemExit(f"--rows: unknown row {row!r}")


def precision_steps(owner, shape, device: str) -> dict:
    """Seconds per image of a training step at float32 and at bf16 + channels_last."""
    import copy

    x = torch.rand(64, *shape, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    out = {}
    for name, value in (("fp32", "fp32"), ("bf16_channels_last", "bf16")):
        out[name] = train_step_seconds(copy.deepcopy(owner).to(device), x, y, torch.device(device), value)
    out["speedup"] = out["fp32"] / out["bf16_channels_last"]
    return out


def cost_row(row: str, device: str) -> dict:
    start = time.perf_counter()
    owner, data, search = owner_and_data(row, device)
    prepared = time.perf_counter() - start
    config = ProtectConfig(search=search)
    plan = plan_protect(owner, data, config)
    print("\n".join([f"[{row}] {len(data)} images, owner ready in {prepared:.0f} s"] + plan_lines(plan)), flush=True)
    entry = {"row": row, "images": len(data), "owner_seconds": round(prepared, 1), "full": plan.to_meta(),
             "budgets": {}}
    for share in (0.5, 0.25, 0.1):
        try:
            fitted = fit_plan(config, plan.costs, len(data), share * plan.total)
            entry["budgets"][str(share)] = fitted.to_meta()
        except ValueError as exc:
            entry["budgets"][str(share)] = {"error": str(exc)}
    if torch.device(device).type == "cuda":
        shape = tuple(torch.as_tensor(data[0][0]).shape)
        entry["train_step_precision"] = precision_steps(owner, shape, device)
        print(f"[{row}] train step fp32 vs bf16+channels_last: {entry['train_step_precision']}", flush=True)
    return entry


def budget_run(spec: str, device: str) -> dict:
    row, seconds = spec.split(":")
    owner, data, search = owner_and_data(row, device)
    config = ProtectConfig(search=search, budget=float(seconds))
    start = time.perf_counter()
    try:
        result = run_protect(owner, data, config, progress=False,
                             log=lambda line: print(f"[{row} run] {line}", flush=True))
    except ValueError as exc:   # a budget below the cheapest plan: say so in the results
        return {"row": row, "budget_seconds": float(seconds), "error": str(exc)}
    wall = time.perf_counter() - start
    report = result.report
    chosen = next(c for c in report.candidates if c["name"] == report.chosen)
    return {"row": row, "budget_seconds": float(seconds), "wall_seconds": round(wall, 1),
            "timings": report.timings, "plan": report.plan, "threshold": report.threshold,
            "held_out_aruc": chosen["aruc"], "held_out_roc_auc": chosen["roc_auc"],
            "honoured": wall <= 1.2 * float(seconds)}


def replan(paths: list[str], budgets: list[str]) -> None:
    """The plans at `budgets` for every row of recorded results: a plan is a pure function of
    the unit costs, the image count and the budget, so no model needs to run again."""
    from ipguard_fast.selection.plan import parse_duration
    from ipguard_fast.selection.plan_costs import UnitCosts

    for path in paths:
        with open(path) as f:
            recorded = json.load(f)
        for row in recorded["rows"]:
            meta = dict(row["full"]["unit_costs"])
            costs = UnitCosts(**meta)
            config = ProtectConfig(search={"max_steps": 100} if row["row"] == "resnet50-imagenet" else {})
            for budget in [None, *budgets]:
                seconds = parse_duration(budget) if budget else None
                print(f"[{path}: {row['row']}, {row['images']} images, budget {budget or 'none'}]")
                try:
                    print("\n".join(plan_lines(fit_plan(config, costs, row["images"], seconds))))
                except ValueError as exc:
                    print(f"  {exc}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="digits")
    p.add_argument("--run-budget", default=None, metavar="ROW:SECONDS")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--replan", nargs="*", default=None, metavar="JSON",
                   help="print the plans of recorded results at --budgets instead of measuring")
    p.add_argument("--budgets", default="", help="comma-separated durations for --replan (30m,2h,...)")
    args = p.parse_args(argv)
    if args.replan is not None:
        replan(args.replan, [b for b in args.budgets.split(",") if b])
        return 0
    if args.out is None:
        p.error("--out is required")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "device": args.device,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "rows": [], "runs": []}

    def save():
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)

    for row in args.rows.split(","):
        out["rows"].append(cost_row(row, args.device))
        save()
    if args.run_budget:
        out["runs"].append(budget_run(args.run_budget, args.device))
        print(json.dumps(out["runs"][-1]), flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
