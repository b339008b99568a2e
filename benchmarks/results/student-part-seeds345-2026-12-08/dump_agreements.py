"""Every agreement a student-part rule needs, dumped once: protect's references' and the
beds' suspects' agreement with the owner's label on every pool point (bool [R, P], [S, P]),
with the references' roles, splits and kinds and the suspects' roles and families. The
references and pool come from a three-bed run's caches, the suspects from its suspect cache
(nothing is trained again); part_rules.py reads the dumps.

    python benchmarks/results/student-part-seeds345-2026-12-08/dump_agreements.py --owner demo|foreign --seed S \
        --cache C --suspect-cache SC --out F.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--owner", choices=("demo", "foreign"), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--suspect-cache", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation import make_bed
    from ipguard_fast.evaluation.beds import attacker_half, owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, DigitsMLP, train_digits_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.precision import chosen_precision
    from ipguard_fast.selection import CacheLocation, ProtectConfig, stages
    from ipguard_fast.selection import students as parts
    from ipguard_fast.selection.pool_cache import pool_store
    from ipguard_fast.selection.scores import reference_outputs
    from ipguard_fast.train import train_model

    train, test = load_digits("train"), load_digits("test")
    if args.owner == "foreign":
        data, attacker = owner_half(train, args.seed), attacker_half(train, args.seed)
        owner = train_model(seeded(DigitsCNN, args.seed), data, FOREIGN_OWNER_RECIPE, seed=args.seed)
        key, beds = "foreign", ("foreign",)
    else:
        data, attacker, owner, key, beds = train, None, train_digits_model("cnn", seed=args.seed), "demo-owner", ("demo", "hard")
    config = ProtectConfig(n=100, seed=args.seed, students=100)
    shapes = ((1, 8, 8), 10)
    cache = CacheLocation(Path(args.cache) / f"{key}-seed{args.seed}")
    plan = stages.make_plan(owner, data, config, shapes)
    with chosen_precision(plan.costs.precision):
        refs = stages.make_references(owner, data, config, shapes, cache=cache, progress=False)
    assert all(r.cached for r in refs.references), "references not all cached"
    pool = stages.make_pool(owner, data, config, shapes[0], held_out=test, progress=False,
                            store=pool_store(owner, data, config, cache, refs.cache_key))
    outputs = stages.score_pool(refs, pool.points, config.batch_size, progress=False)
    dump = {"owner": key, "seed": args.seed, "labels": pool.points.labels,
            "references": {"agrees": outputs.agrees, "names": [r.name for r in refs.references],
                           "roles": [r.role for r in refs.references], "splits": [r.split for r in refs.references],
                           "kinds": [r.kind for r in refs.references]},
            "close": parts._owner_like(refs, config), "beds": {}}
    for bed_name in beds:
        bed = make_bed(bed_name, digits=True, input_shape=shapes[0], num_classes=10, small_factory=DigitsMLP)
        suspects = bed.suspects(owner, data, seed=args.seed, attacker_data=attacker, suspect_cache=args.suspect_cache)
        agrees = reference_outputs([s.model for s in suspects], pool.points).agrees
        dump["beds"][bed_name] = {"agrees": agrees, "names": [s.name for s in suspects],
                                  "roles": [s.role for s in suspects], "families": [s.family for s in suspects]}
    torch.save(dump, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
