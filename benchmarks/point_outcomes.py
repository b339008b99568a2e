"""Every bed suspect's agreement with the owner on each of protect's refined candidates
(the 3n points refinement moves, of which protect keeps n), beside the references' margins
on them: the raw material to compare selection rules offline on suspects that no rule sees.

    python benchmarks/point_outcomes.py --out DIR --beds foreign --seeds 0,1,2 --threads 1 \
        --held-out-mistakes --cache C

writes DIR/<bed>-seed<s>.json per cell: each suspect's and each reference's agreement with
the owner on every candidate (a hex bit string, bit p = candidate p), the candidates'
scores, labels, source labels and owner margins, the n protect kept, the chosen configuration's held-out
rates and protect's report. protect runs exactly as three_beds.py runs it (default
recipe); the candidates are captured where refining.refine_selection returns them. With
--pool, each suspect's agreement on every point of the unrefined pool too ("pool": the
points' labels and the chosen configuration's scores, NaN -> None off its columns).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--beds", default="demo,hard,foreign")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--held-out-mistakes", action="store_true")
    p.add_argument("--cache", default="ipguard-point-outcomes-cache")
    p.add_argument("--pool", action="store_true", help="also every suspect's agreement on the whole unrefined pool")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        for bed in args.beds.split(","):
            start = time.perf_counter()
            tensors, meta = _cell(args, bed, seed)
            (out / f"{bed}-seed{seed}.json").write_text(json.dumps(compact(tensors, meta)))
            print(f"{bed} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def _cell(args, bed_name: str, seed: int):
    from ipguard_fast.data import digits_input_shape, load_digits
    from ipguard_fast.evaluation import make_bed
    from ipguard_fast.evaluation.beds import attacker_half, owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, DigitsMLP, train_digits_model
    from ipguard_fast.nn import seeded
    import importlib

    from ipguard_fast.selection import CacheLocation, run_protect
    from ipguard_fast.selection.config import ProtectConfig
    from ipguard_fast.train import accuracy, predict, train_model

    train, test = load_digits("train"), load_digits("test")
    shape = digits_input_shape()
    if bed_name == "foreign":
        data, attacker = owner_half(train, seed), attacker_half(train, seed)
        owner = train_model(seeded(DigitsCNN, seed), data, FOREIGN_OWNER_RECIPE, seed=seed)
    else:
        data, attacker = train, None
        owner = train_digits_model("cnn", seed=seed)
    protect_module = importlib.import_module("ipguard_fast.selection.protect")
    captured = {}
    original = protect_module.refine_selection

    def capture(owner_, unrefined, refs, choice, config, log=None):
        selection = original(owner_, unrefined, refs, choice, config, log=log)
        captured.update(selection=selection, refs=refs, choice=choice, pool=unrefined.points)
        return selection

    protect_module.refine_selection = capture
    try:
        key = "foreign" if bed_name == "foreign" else "demo-owner"
        config = ProtectConfig(n=args.n, seed=seed)
        result = run_protect(owner, data, config, progress=False, log=print,
                             cache=CacheLocation(Path(args.cache) / f"{key}-seed{seed}"),
                             held_out=test if args.held_out_mistakes else None)
    finally:
        protect_module.refine_selection = original
    selection, refs = captured["selection"], captured["refs"]
    points = selection.points
    bed = make_bed(bed_name, digits=True, input_shape=shape, num_classes=10, small_factory=DigitsMLP)
    suspects = bed.suspects(owner, data, seed=seed, attacker_data=attacker)
    owner_accuracy = accuracy(owner, test)
    agrees = torch.stack([predict(s.model, points.images) == points.labels for s in suspects])
    suspect_meta = [{"name": s.name, "family": s.family, "role": s.role, "accuracy": accuracy(s.model, test)}
                    for s in suspects]
    references = [{"name": r.name, "kind": r.kind, "role": r.role, "split": r.split} for r in refs.references]
    tensors = {"suspect_agrees": agrees.to(torch.uint8).contiguous(),
               "reference_agrees": selection.outputs.agrees.to(torch.uint8).contiguous(),
               "scores": selection.scores.double().contiguous(),
               "kept": selection.kept.to(torch.int64).contiguous(),
               "labels": points.labels.to(torch.int64).contiguous(),
               "source_labels": points.source_labels.to(torch.int64).contiguous(),
               "owner_margins": points.margins.double().contiguous()}
    meta = {"bed": bed_name, "seed": seed, "owner_accuracy": owner_accuracy, "suspects": suspect_meta,
            "references": references, "threshold": result.fingerprints.meta["threshold"],
            "negative_weight": captured["choice"].chosen.negative_weight,
            "held_out": captured["choice"].chosen.held_out, "protect": result.report.to_meta()}
    if args.pool:
        pool = captured["pool"]
        meta["pool"] = {"size": len(pool), "labels": pool.labels.tolist(),
                        "scores": [v if v == v and abs(v) != float("inf") else None
                                   for v in captured["choice"].chosen.scores.tolist()],
                        "suspects": [bits(predict(s.model, pool.images) == pool.labels) for s in suspects]}
    return tensors, meta


def bits(row: torch.Tensor) -> str:
    """A bool row as a hex string, bit p (of the integer it spells) = row[p]."""
    return format(sum(1 << p for p in row.nonzero().flatten().tolist()), "x")


def compact(tensors: dict, meta: dict) -> dict:
    """The cell as JSON: agreements as bit strings, the rest as lists."""
    out = dict(meta, candidates=len(tensors["scores"]))
    for s, row in zip(out["suspects"], tensors["suspect_agrees"].bool()):
        s["agrees"] = bits(row)
    for r, row in zip(out["references"], tensors["reference_agrees"].bool()):
        r["agrees"] = bits(row)
    out["scores"] = [v if v == v and abs(v) != float("inf") else None for v in tensors["scores"].tolist()]
    for key in ("kept", "labels", "source_labels", "owner_margins"):
        if key in tensors:
            out[key] = tensors[key].tolist()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
