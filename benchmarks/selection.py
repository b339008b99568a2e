"""Plain IPGuard against protect()'s selected fingerprints on the demo and hard beds, over owner seeds.

    python benchmarks/selection.py --out benchmarks/results/selection-DATE/refined.json [--seeds 0,1,2] [--owner cnn]
                                   [--no-refine] [--threads 1]

For each digits owner seed: builds both evaluation beds (the demo's suspects; the hard
bed: independents trained like the owner over five architectures, the wider attack
grid), runs protect() from scratch (no reference cache, protect's seed = the owner's) and
times it with the load average before and after, then evaluates plain IPGuard at each k
and the selected set on the same suspects of each bed. No suspect of either bed is a
protect reference (evaluate checks). Writes one JSON with every suspect's matching rate,
the ARUC / ROC AUC per run, protect's meta and the command line.
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


def main(argv=None) -> int:
    from ipguard_fast.selection.pool import POOL_FACTOR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--owner", default="cnn", help="digits owner architecture: cnn or mlp")
    p.add_argument("--seeds", default="0", help="owner seeds, comma-separated (default 0)")
    p.add_argument("--ks", default="1,2,3,4,5,10", help="plain IPGuard margins")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--pool-factor", type=int, default=POOL_FACTOR)
    p.add_argument("--no-refine", action="store_true", help="protect(refine=False): the unrefined selection")
    p.add_argument("--beds", default="demo,hard")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import ipguard_fast as ig

    record = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform(), "torch": torch.__version__},
              "owner": f"digits {args.owner}", "library_version": ig.__version__, "refine": not args.no_refine,
              "seeds": {}}
    for seed in (int(s) for s in args.seeds.split(",")):
        record["seeds"][str(seed)] = _one_owner(args, seed)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")   # a partial run keeps its seeds
    print(f"wrote {args.out}")
    return 0


def _one_owner(args, seed: int) -> dict:
    import ipguard_fast as ig
    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation import make_bed
    from ipguard_fast.models import DigitsMLP, train_digits_model
    from ipguard_fast.selection import ProtectConfig, run_protect

    train, test = load_digits("train"), load_digits("test")
    owner = train_digits_model(args.owner, seed=seed)
    record = {"owner": f"digits {args.owner}, seed {seed}"}
    load_before = os.getloadavg()
    start = time.perf_counter()
    config = ProtectConfig(n=args.n, replicas=args.replicas, pool_factor=args.pool_factor,
                           refine=not args.no_refine, seed=seed)
    protected = run_protect(owner, train, config, progress=False, log=print)
    selected = protected.fingerprints
    seconds = time.perf_counter() - start
    record["protect"] = {"seconds": seconds, "load_before": load_before, "load_after": os.getloadavg(),
                         "stage_seconds": selected.meta["protect"]["timings"], "meta": selected.meta["protect"],
                         "refined": selected.meta["selection"].get("refined"),
                         "reference_count": len(protected.references)}
    print(f"seed {seed}: protect {seconds:.1f} s (load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f})")

    ks = [float(k) for k in args.ks.split(",")]
    record["beds"] = {}
    for bed in args.beds.split(","):
        start = time.perf_counter()
        suspects = make_bed(bed, digits=True, input_shape=(1, 8, 8), num_classes=10,
                            small_factory=DigitsMLP).suspects(owner, train, seed=seed)
        built = time.perf_counter() - start
        result = ig.evaluate(owner, train, input_shape=(1, 8, 8), suspects=suspects, ks=ks, n=args.n,
                             test_set=test, seed=seed, methods=("ipguard", "selected"), selected=selected).to_dict()
        plain = [r for r in result["runs"] if r["method"] == "ipguard"]
        best = max(plain, key=lambda r: r["aruc"])
        chosen = result["runs"][-1]
        threshold = selected.meta["threshold"]
        pos = [s["matching_rate"] for s in chosen["suspects"] if s["role"] == "positive"]
        neg = [s["matching_rate"] for s in chosen["suspects"] if s["role"] == "negative"]
        record["beds"][bed] = {
            "suspects_seconds": built, "result": result,
            "plain_best": {"k": best["k"], "aruc": best["aruc"], "roc_auc": best["roc_auc"]},
            "selected": {"aruc": chosen["aruc"], "roc_auc": chosen["roc_auc"], "threshold": threshold,
                         "tpr": sum(r >= threshold for r in pos) / len(pos),
                         "fpr": sum(r >= threshold for r in neg) / len(neg)}}
        print(f"seed {seed}, {bed}: plain best k={best['k']:g} ARUC {best['aruc']:.3f} / "
              f"ROC AUC {best['roc_auc']:.3f}; "
              f"selected ARUC {chosen['aruc']:.3f} / ROC AUC {chosen['roc_auc']:.3f}")
    return record


if __name__ == "__main__":
    sys.exit(main())
