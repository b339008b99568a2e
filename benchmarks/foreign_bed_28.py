"""protect() on a 28x28 owner of 60,000 training images, judged on the foreign bed for that
data: the issue-20 target "within 20 minutes on 2 cores at ARUC >= 0.85 and no false
accusation".

    python benchmarks/foreign_bed_28.py --out benchmarks/results/foreign-bed-28-DATE [--seeds 0,1,2]
        [--arch lenet5] [--images 60000] [--budget 1200] [--threads 2] [--cache FOLDER]
    python benchmarks/foreign_bed_28.py --out ... --summarize   # join the seeds' files

No real 28x28 set is at hand (no downloads), so the data are the embedded digits upsampled to
28x28 and grown by shifted copies, as the issue allows -- split first: the 1,437 training
digits are divided between the owner and the attacker by a seeded permutation, then each
half is grown to `--images` by random shifts (up to 3 pixels): the owner trains on that many
images, the attacker has as many of its own, and no attacker image is a shifted copy of an
owner's digit. The 360 test digits, upsampled, are the held-out set.

The owner (`--arch`, a registry name; LeNet-5 by default, the classic 28x28 network) trains
by the foreign bed's owner recipe (40 epochs of SGD with momentum, weight decay and
augmentation) on its half. protect() runs with `--budget` seconds (default 20 minutes; 0:
the full recipe) on the owner's half, the test digits as held-out data. The bed is
evaluation's foreign bed for non-digits data: the owner's architecture and an MLP, each by
the four foreign recipes (one of them the owner's own), the wide positive grid and the
field's families on the attacker's half. Writes foreign28-seedS.json per seed (the layout of
three_beds.py's files: the results folder's table.py reads them with the three-bed table's
row) and summary.json / .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protect_costs import grown  # noqa: E402
from three_beds import _recipe, _reference_rates, _summary, _write_summary, prepare_run  # noqa: E402


def grown_halves(count: int, seed: int, side: int = 28) -> tuple[TensorDataset, TensorDataset]:
    """(owner's, attacker's) data: the training digits at side x side, split in two by a
    seeded permutation, each half grown to `count` images by shifted copies."""
    from ipguard_fast.data import load_digits, seeded_split

    base = load_digits("train", size=side)
    owner, attacker = seeded_split(base, int(seed) + 7919, len(base) // 2)
    return grown(owner, count, int(seed) * 2), grown(attacker, count, int(seed) * 2 + 1)


def one_seed(args, seed: int) -> dict:
    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation import evaluate, make_bed
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import build_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.selection import CacheLocation, run_protect
    from ipguard_fast.selection.config import ProtectConfig
    from ipguard_fast.train import train_model

    shape = (1, 28, 28)
    data, attacker = grown_halves(args.images, seed)
    test = load_digits("test", size=28)
    start = time.perf_counter()
    owner = train_model(seeded(lambda: build_model(args.arch, 10, shape), seed), data, FOREIGN_OWNER_RECIPE,
                        seed=seed)
    owner_seconds = time.perf_counter() - start
    print(f"[seed {seed}] owner {args.arch} trained in {owner_seconds:.0f} s", flush=True)
    start = time.perf_counter()
    config = ProtectConfig(n=args.n, seed=seed, budget=args.budget or None,
                           **({"recipe": _recipe("", adversarial=args.adversarial)} if args.adversarial else {}))
    fps = run_protect(owner, data, config, progress=False, log=print, held_out=test,
                      cache=CacheLocation(Path(args.cache) / f"{args.arch}-{args.images}-seed{seed}")).fingerprints
    protect_seconds = time.perf_counter() - start
    print(f"[seed {seed}] protect took {protect_seconds:.0f} s", flush=True)
    start = time.perf_counter()
    bed = make_bed("foreign", digits=False, input_shape=shape, num_classes=10,
                   architectures=[args.arch, "digits_mlp"], small_factory=lambda: build_model("digits_mlp", 10, shape))
    suspects = bed.suspects(owner, data, seed=seed, attacker_data=attacker)
    bed_seconds = time.perf_counter() - start
    result = evaluate(owner, data, suspects=suspects, input_shape=shape, ks=[float(k) for k in args.ks.split(",")],
                      n=args.n, test_set=test, owner_name=f"{args.arch} at 28x28 ({args.images} images, seed {seed})",
                      seed=seed, methods=("ipguard", "selected", "mistakes"), selected=fps)
    report = fps.meta["protect"]
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "load": os.getloadavg()}
    result.settings.update(bed="foreign28", arch=args.arch, images=args.images, budget=args.budget,
                           owner_seconds=owner_seconds, bed_seconds=bed_seconds, protect_plan=report.get("plan"),
                           protect_timings=report["timings"], machine=machine,
                           protect_references=_reference_rates(fps))
    summary = _summary("foreign28", seed, result, protect_seconds)
    return {"bed": "foreign28", "seed": seed, "summary": summary, **result.to_dict()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arch", default="lenet5", help="the owner's registry name (default: lenet5)")
    p.add_argument("--images", type=int, default=60_000)
    p.add_argument("--budget", type=float, default=1200.0, help="protect's budget in seconds; 0: the full recipe")
    p.add_argument("--ks", default="1,3,10", help="plain IPGuard margins")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--adversarial", default="",
                   help="the settings of protect's adversarial-ft reference other than the recipe's, KEY=VALUE,... "
                        "of AdversarialFineTune (three_beds.py's option)")
    p.add_argument("--cache", default="ipguard-foreign28-cache", help="protect's reference cache (not committed)")
    p.add_argument("--summarize", action="store_true", help="only join the folder's results into summary.*")
    args = p.parse_args(argv)
    out, command = prepare_run(args, argv)
    for seed in ([] if args.summarize else (int(s) for s in args.seeds.split(","))):
        record = one_seed(args, seed)
        (out / f"foreign28-seed{seed}.json").write_text(json.dumps({"command": command, **record}, indent=1,
                                                                   default=str) + "\n")
    _write_summary(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
