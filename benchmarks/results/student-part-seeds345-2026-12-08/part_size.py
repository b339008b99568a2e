"""The student part at other sizes (ProtectConfig.students: 100, 150, 200 points), as
committed otherwise (students.py: the level by every innocent reference, at half the
significance); each judged by the bed's suspects. A larger part has a smaller sampling
margin over its level, but its later points score lower. protect's references and pool
come from a three-bed run's caches, the suspects from its suspect cache (nothing is trained
again).

    python benchmarks/results/student-part-seeds345-2026-12-08/part_size.py --owner demo|foreign --seed S \
        --cache C --suspect-cache SC --out F
"""
from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path


def main() -> int:
    from cached_protect import cached_protect, parsed_arguments   # this folder's helper (on sys.path)

    args = parsed_arguments()

    from ipguard_fast.selection import students as parts
    from ipguard_fast.selection.scores import reference_outputs

    run = cached_protect(args.owner, args.seed, args.cache)
    key, beds, config, refs, pool, outputs = run.key, run.beds, run.config, run.refs, run.pool, run.outputs
    chosen = {}
    for size in (100, 150, 200):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chosen[f"{size} points"] = parts.student_part(pool.points, outputs, refs,
                                                          dataclasses.replace(config, students=size), 0.025)
    result = {"command": " ".join(sys.argv), "owner": key, "seed": args.seed, "beds": {}}
    for bed_name in beds:
        suspects = run.suspects(bed_name, args.suspect_cache)
        rows = {}
        for name, part in chosen.items():
            rates = reference_outputs([s.model for s in suspects], part.fingerprints).rates().tolist()
            by = {s.name: (s.role, s.family, round(r, 3)) for s, r in zip(suspects, rates)}
            t = part.threshold
            rows[name] = {"threshold": t, "level": part.level,
                          "accused": [n for n, (role, _, r) in by.items() if role == "negative" and r >= t],
                          "students": {n: r for n, (role, fam, r) in by.items()
                                       if fam in ("distill", "distill-small", "extract-labels", "extract-probabilities")},
                          "innocents_max": max(r for role, _, r in by.values() if role == "negative"),
                          "rates": {n: r for n, (_, _, r) in by.items()}}
        result["beds"][bed_name] = rows
        for name, row in rows.items():
            print(bed_name, args.seed, name, "threshold", row["threshold"], "accused", row["accused"],
                  "innocents max", row["innocents_max"], "students", row["students"])
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
