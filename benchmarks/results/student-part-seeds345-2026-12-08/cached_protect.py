"""What part_size.py and dump_agreements.py share: a three-bed run's owner, its protect
references and pool loaded from that run's caches (nothing trained again), every reference's
outputs on the pool, and the bed's suspects from its suspect cache."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAPES = ((1, 8, 8), 10)


def parsed_arguments() -> argparse.Namespace:
    """The scripts' common command line (--owner, --seed, --cache, --suspect-cache, --threads,
    --out), with torch set to --threads."""
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--owner", choices=("demo", "foreign"), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--suspect-cache", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    return args


@dataclass
class CachedProtect:
    key: str            # the cache folder's owner name: "demo-owner" or "foreign"
    beds: tuple         # the beds that owner is judged on
    owner: Any
    data: Any
    attacker: Any       # the foreign bed's attacker half (None for the demo owner)
    config: Any         # ProtectConfig(n=100, seed, students=100), as three_beds.py --students 100
    refs: Any
    pool: Any
    outputs: Any

    def suspects(self, bed_name: str, suspect_cache: str):
        from ipguard_fast.evaluation import make_bed
        from ipguard_fast.models import DigitsMLP

        bed = make_bed(bed_name, digits=True, input_shape=SHAPES[0], num_classes=SHAPES[1], small_factory=DigitsMLP)
        return bed.suspects(self.owner, self.data, seed=self.config.seed, attacker_data=self.attacker,
                            suspect_cache=suspect_cache)


def cached_protect(owner_name: str, seed: int, cache: str) -> CachedProtect:
    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation.beds import attacker_half, owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, train_digits_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.precision import chosen_precision
    from ipguard_fast.selection import CacheLocation, ProtectConfig, stages
    from ipguard_fast.selection.pool_cache import pool_store
    from ipguard_fast.train import train_model

    train, test = load_digits("train"), load_digits("test")
    if owner_name == "foreign":
        data, attacker = owner_half(train, seed), attacker_half(train, seed)
        owner = train_model(seeded(DigitsCNN, seed), data, FOREIGN_OWNER_RECIPE, seed=seed)
        key, beds = "foreign", ("foreign",)
    else:
        data, attacker, owner, key, beds = train, None, train_digits_model("cnn", seed=seed), "demo-owner", ("demo", "hard")
    config = ProtectConfig(n=100, seed=seed, students=100)
    location = CacheLocation(Path(cache) / f"{key}-seed{seed}")
    plan = stages.make_plan(owner, data, config, SHAPES)   # the precision the references trained at (the cache key)
    with chosen_precision(plan.costs.precision):
        refs = stages.make_references(owner, data, config, SHAPES, cache=location, progress=False)
    assert all(r.cached for r in refs.references), "references not all cached"
    pool = stages.make_pool(owner, data, config, SHAPES[0], held_out=test, progress=False,
                            store=pool_store(owner, data, config, location, refs.cache_key))
    outputs = stages.score_pool(refs, pool.points, config.batch_size, progress=False)
    return CachedProtect(key, beds, owner, data, attacker, config, refs, pool, outputs)
