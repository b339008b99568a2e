"""Every agreement a student-part rule needs, dumped once: protect's references' and the
beds' suspects' agreement with the owner's label on every pool point (bool [R, P], [S, P]),
with the references' roles, splits and kinds and the suspects' roles and families. The
references and pool come from a three-bed run's caches, the suspects from its suspect cache
(nothing is trained again); part_rules.py reads the dumps.

    python benchmarks/results/student-part-seeds345-2026-12-08/dump_agreements.py --owner demo|foreign --seed S \
        --cache C --suspect-cache SC --out F.pt
"""
from __future__ import annotations


import torch


def main() -> int:
    from cached_protect import cached_protect, parsed_arguments   # this folder's helper (on sys.path)

    args = parsed_arguments()

    from ipguard_fast.selection import students as parts
    from ipguard_fast.selection.scores import reference_outputs

    run = cached_protect(args.owner, args.seed, args.cache)
    key, beds, config, refs, pool, outputs = run.key, run.beds, run.config, run.refs, run.pool, run.outputs
    dump = {"owner": key, "seed": args.seed, "labels": pool.points.labels,
            "references": {"agrees": outputs.agrees, "names": [r.name for r in refs.references],
                           "roles": [r.role for r in refs.references], "splits": [r.split for r in refs.references],
                           "kinds": [r.kind for r in refs.references]},
            "close": parts._owner_like(refs, config), "beds": {}}
    for bed_name in beds:
        suspects = run.suspects(bed_name, args.suspect_cache)
        agrees = reference_outputs([s.model for s in suspects], pool.points).agrees
        dump["beds"][bed_name] = {"agrees": agrees, "names": [s.name for s in suspects],
                                  "roles": [s.role for s in suspects], "families": [s.family for s in suspects]}
    torch.save(dump, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
