"""Which innocents should set the student part's level? protect rerun from the three-bed
run's caches (its references and pool are loaded, not rebuilt) for one owner, and every
reference's rate on the student part's points by role and split, with the leave-one-kind-out
floor: each owner-like negative kind dropped from the paired score in turn, the points chosen
again, and that kind's rate on them (what an owner-like innocent the choice never saw keeps).

    python benchmarks/results/student-part-2026-12-07/threshold_rules.py --owner demo|foreign --seed S \
        --cache /tmp/sp/cache --out F
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--owner", choices=("demo", "foreign"), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from pathlib import Path

    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation.beds import owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, train_digits_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.selection import CacheLocation, ProtectConfig
    from ipguard_fast.selection import stages
    from ipguard_fast.selection.students import _owner_like, paired_scores, student_part
    from ipguard_fast.selection.spread import spread_top_n
    from ipguard_fast.train import train_model

    train, test = load_digits("train"), load_digits("test")
    if args.owner == "foreign":
        data = owner_half(train, args.seed)
        owner = train_model(seeded(DigitsCNN, args.seed), data, FOREIGN_OWNER_RECIPE, seed=args.seed)
        key = "foreign"
    else:
        data, owner, key = train, train_digits_model("cnn", seed=args.seed), "demo-owner"
    config = ProtectConfig(n=100, seed=args.seed, students=100)
    shapes = ((1, 8, 8), 10)
    cache = CacheLocation(Path(args.cache) / f"{key}-seed{args.seed}")
    from ipguard_fast.precision import chosen_precision
    plan = stages.make_plan(owner, data, config, shapes)   # the precision the references trained at (the cache key)
    with chosen_precision(plan.costs.precision):
        refs = stages.make_references(owner, data, config, shapes, cache=cache, progress=False)
    assert all(r.cached for r in refs.references), "references not all cached"
    from ipguard_fast.selection.pool_cache import pool_store
    store = pool_store(owner, data, config, cache, refs.cache_key)
    pool = stages.make_pool(owner, data, config, shapes[0], held_out=test, progress=False, store=store)
    outputs = stages.score_pool(refs, pool.points, config.batch_size, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        part = student_part(pool.points, outputs, refs, config, 0.025)
    kept = torch.as_tensor(part.fingerprints.meta["selection"]["pool_indices"])
    rates = outputs.columns(kept).rates().tolist()
    by = {}
    for r, rate in zip(refs.references, rates):
        by.setdefault(f"{r.role}/{r.split}", {})[r.name] = round(rate, 3)
    # leave one owner-like kind out of the score
    close = _owner_like(refs, config)
    kinds = sorted({refs.references[i].kind for i in close})
    students, twins = refs.rows("student", "select"), refs.rows("twin", "select")
    floor = {}
    for kind in kinds:
        rest = [i for i in close if refs.references[i].kind != kind]
        out = [i for i in close if refs.references[i].kind == kind]
        scores = paired_scores(outputs.agrees[students], outputs.agrees[twins], outputs.agrees[rest])
        chosen = spread_top_n(scores, 100, pool.points.labels, pool.points.num_classes, None)
        floor[kind] = {refs.references[i].name: round(float(outputs.agrees[i, chosen].double().mean()), 3) for i in out}
    result = {"command": " ".join(sys.argv), "owner": key, "seed": args.seed, "level": part.level,
              "threshold": part.threshold,
              "rates_by_role_split": by, "leave_one_kind_out": floor}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: max(v.values()) for k, v in by.items()}
    print(json.dumps({"level": part.level, "max_by_role_split": summary,
                      "floor": {k: max(v.values()) for k, v in floor.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
