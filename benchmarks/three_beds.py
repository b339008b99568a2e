"""protect()'s selected fingerprints, plain IPGuard and the mistakes baseline on the demo,
hard and foreign beds, over owner seeds: the issue-19 measurement.

    python benchmarks/three_beds.py --out benchmarks/results/three-beds-DATE [--seeds 0,1,2] [--beds demo,hard,foreign]
                                    [--threads 1] [--cache FOLDER]
    python benchmarks/three_beds.py --out benchmarks/results/three-beds-DATE --summarize   # after parallel runs

Owners: the demo owner (models.digits: DigitsCNN, 5 epochs Adam 3e-3 on all the digits
training data) judges the demo and hard beds; the foreign owner (DigitsCNN trained by
evaluation.foreign.FOREIGN_OWNER_RECIPE: 40 epochs SGD with momentum, weight decay and
augmentation) trains on the owner's half of the data only, and its bed's extraction
students on the other half. protect() runs once per owner (its references never meet a
suspect: evaluate checks) and both of the demo owner's beds judge the same fingerprints.
Writes one JSON per (bed, seed) with every suspect's rate and the verdicts, and
summary.json / summary.md over every (bed, seed) file in the folder (so runs of
different seeds may go in parallel, each with --threads 1, and --summarize joins them).
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

PAPER_FAMILIES = {"FTLL", "FTAL", "RTLL", "RTAL", "prune", "quant-int8", "fp16", "distill", "distill-small"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--beds", default="demo,hard,foreign")
    p.add_argument("--ks", default="1,3,10", help="plain IPGuard margins")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--budget", type=float, default=None, help="protect's budget in seconds (default: the full recipe)")
    p.add_argument("--owner-recipe", action="store_true",
                   help="give protect the owner's training recipe (train_recipe=), as an owner who knows it would")
    p.add_argument("--init", default="data", choices=("data", "uniform", "auto"),
                   help="protect's pool starts (ProtectConfig.init; default: data)")
    p.add_argument("--label-share", type=float, default=None,
                   help="protect's label_share (selection/spread.py; default: none, at most half the points on one label; the number of classes: the plain top n)")
    p.add_argument("--drop-kinds", default="",
                   help="comma-separated reference kinds left out of protect's recipe (an ablation)")
    p.add_argument("--threshold-twins", type=int, default=0,
                   help="add this many more seeds of each threshold negative of the owner's architecture "
                        "(kinds ending -extraN), to compare thresholds offline (threshold_variants.py)")
    p.add_argument("--add-preprocess", default="",
                   help="comma-separated KIND:STRENGTH (e.g. resize:0.6): positive references of the input "
                        "transformation added to protect's recipe (built once, like its other transformations)")
    p.add_argument("--converged-selection", action="store_true",
                   help="the selecting negatives of the owner's architecture train until converged (as the "
                        "threshold negatives do) instead of until they match the owner's held-out accuracy")
    p.add_argument("--held-out-mistakes", action="store_true",
                   help="give protect the digits test split as held_out_data: the owner's mistakes on it join the "
                        "pool, and the choice decides whether the selection takes them")
    p.add_argument("--contiguous", action="store_true",
                   help="protect's pool, scoring and refinement with contiguous conv weights, whatever its plan "
                        "measures (with IPGUARD_FAST_TRAIN_PRECISION=fp32: protect as before channels_last)")
    p.add_argument("--bf16", action="store_true",
                   help="protect's pool under bf16 autocast and, on a CPU with AMX, its references at bf16 "
                        "(`ipguard protect --bf16`)")
    p.add_argument("--refine", default="",
                   help="protect's refinement settings other than the default, KEY=VALUE,... of RefineConfig "
                        "(for example steps=25 or cap=1); the references and their cache are the same")
    p.add_argument("--adversarial", default="",
                   help="the settings of protect's adversarial-ft reference other than the recipe's, "
                        "KEY=VALUE,... of AdversarialFineTune (for example eps=0.0392,epochs=3)")
    p.add_argument("--positive-twins", default="",
                   help="KIND:N,...: N more draws (seeds) of each named positive reference kind of protect's recipe")
    p.add_argument("--add-distill", default="",
                   help="ARCH,...: a distillation positive per replica into each named student architecture (owner, "
                        "generic...), at the settings of protect's distill-small")
    p.add_argument("--add-negatives", default="",
                   help="ARCH-OPTIMIZER[-aug],...: more selecting negatives of protect's recipe, each trained until "
                        "it matches the owner (for example owner-adam-aug,owner-sgd: the owner's other two corners)")
    p.add_argument("--pool-factor", type=int, default=None,
                   help="protect's pool points per k as a multiple of n (default: ProtectConfig's); the references "
                        "and their cache are the same")
    p.add_argument("--cache", default="ipguard-three-beds-cache", help="protect's reference cache (not committed)")
    p.add_argument("--suspect-cache", default=None,
                   help="keep the beds' suspects here (evaluation/suspect_cache.py): a second run of other protect "
                        "settings on the same owners trains none of them again (default: none, built in memory)")
    p.add_argument("--students", type=int, default=0,
                   help="protect's student part of this many points (ProtectConfig.students), judged beside the "
                        "main part: a suspect is a copy when either part calls it one")
    p.add_argument("--summarize", action="store_true", help="only join the folder's results into summary.*")
    args = p.parse_args(argv)
    out, command = prepare_run(args, argv)
    for seed in ([] if args.summarize else (int(s) for s in args.seeds.split(","))):
        for bed_name, result, protect_seconds in _one_seed(args, seed):
            summary = _summary(bed_name, seed, result, protect_seconds)
            (out / f"{bed_name}-seed{seed}.json").write_text(json.dumps(
                {"command": command, "bed": bed_name, "seed": seed, "summary": summary, **result.to_dict()},
                indent=1, default=str) + "\n")
            _write_summary(out)
    _write_summary(out)
    print(f"wrote {out}")
    return 0


def prepare_run(args, argv) -> tuple[Path, str]:
    """Apply --threads, make the --out folder; (that folder, the command line as run)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out, "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))


def _one_seed(args, seed: int):
    from ipguard_fast.data import digits_input_shape, load_digits
    from ipguard_fast.evaluation import evaluate, make_bed
    from ipguard_fast.evaluation.beds import attacker_half, owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, DigitsMLP, train_digits_model
    from ipguard_fast.models.digits import DIGITS_EPOCHS, DIGITS_LR
    from ipguard_fast.nn import seeded
    from ipguard_fast.selection import CacheLocation, run_protect
    from ipguard_fast.selection.config import ProtectConfig
    from ipguard_fast.train import TrainRecipe, train_model

    train, test = load_digits("train"), load_digits("test")
    shape = digits_input_shape()
    ks = [float(k) for k in args.ks.split(",")]
    selected = {}
    for bed_name in args.beds.split(","):
        if bed_name == "foreign":
            data, attacker = owner_half(train, seed), attacker_half(train, seed)
            owner_recipe = FOREIGN_OWNER_RECIPE
            owner = train_model(seeded(DigitsCNN, seed), data, owner_recipe, seed=seed)
        else:
            data, attacker = train, None
            owner_recipe = TrainRecipe(epochs=DIGITS_EPOCHS, lr=DIGITS_LR)   # what train_digits_model does
            owner = train_digits_model("cnn", seed=seed)
        key = "foreign" if bed_name == "foreign" else "demo-owner"
        if key not in selected:
            start = time.perf_counter()
            recipe = _recipe(args.drop_kinds, args.threshold_twins, owner_recipe if args.owner_recipe else None,
                             args.add_preprocess, args.converged_selection, args.adversarial,
                             args.positive_twins, args.add_distill, args.add_negatives)
            config = ProtectConfig(n=args.n, seed=seed, budget=args.budget, recipe=recipe,
                                   label_share=args.label_share, init=args.init, refine=_refine_config(args.refine),
                                   search={**({"channels_last": False} if args.contiguous else {}),
                                           **({"amp": "bf16"} if args.bf16 else {})},
                                   students=args.students,
                                   **({"pool_factor": args.pool_factor} if args.pool_factor else {}))
            protected = run_protect(owner, data, config, progress=False, log=print,
                                    cache=CacheLocation(Path(args.cache) / f"{key}-seed{seed}"),
                                    held_out=test if args.held_out_mistakes else None)
            selected[key] = (protected.fingerprints, time.perf_counter() - start, protected.students)
        bed = make_bed(bed_name, digits=True, input_shape=shape, num_classes=10, small_factory=DigitsMLP)
        suspects = bed.suspects(owner, data, seed=seed, attacker_data=attacker, suspect_cache=args.suspect_cache)
        result = evaluate(owner, data, suspects=suspects, input_shape=shape, ks=ks, n=args.n, test_set=test,
                          owner_name=f"DigitsCNN ({key}, seed {seed})", seed=seed,
                          methods=("ipguard", "selected", "mistakes"), selected=selected[key][0])
        if selected[key][2] is not None:   # the student part, judged on the same suspects
            part = evaluate(owner, data, suspects=suspects, input_shape=shape, ks=ks, n=args.n, test_set=test,
                            owner_name=f"DigitsCNN ({key}, seed {seed}), student part", seed=seed,
                            methods=("selected",), selected=selected[key][2]).run("selected")
            result.settings["student_part"] = {
                "aruc": part.aruc, "roc_auc": part.roc_auc, "verdicts": part.verdicts, "points": len(selected[key][2]),
                "level": selected[key][2].meta["student_part"]["level"],
                "rates": {s["name"]: s["matching_rate"] for s in part.suspects}}
        machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                   "load": os.getloadavg()}
        report = selected[key][0].meta["protect"]
        result.settings.update(bed=bed_name, protect_plan=report.get("plan"), protect_timings=report["timings"],
                               machine=machine, protect_references=_reference_rates(selected[key][0]),
                               selected_label_counts=_label_counts(selected[key][0]))
        yield bed_name, result, selected[key][1]


def _label_counts(fps) -> dict[str, int]:
    """How many of the selected points carry each owner label: a set crowded onto one label
    lets a model answering it everywhere keep that share (label_bias.py)."""
    labels, counts = fps.labels.unique(return_counts=True)
    return {str(int(label)): int(count) for label, count in zip(labels, counts)}


def _reference_rates(fps) -> dict:
    """Every reference's name, kind, split and role, and the held-out rates the threshold came
    from (the validation replica's, then the threshold negatives', in the references' order):
    enough to recompute the threshold from another set of negatives offline."""
    selection, report = fps.meta["selection"], fps.meta["protect"]
    refs = [dict(name=r["name"], kind=r.get("kind"), split=r.get("split"), role=role[:-1])
            for role in ("positives", "negatives") for r in selection.get("references", {}).get(role, [])]
    return {"threshold": fps.meta.get("threshold"), "held_out_rates": report.get("held_out_rates"), "references": refs}


def _recipe(drop: str, twins: int = 0, owner_recipe=None, preprocess: str = "",
            converged_selection: bool = False, adversarial: str = "", positive_twins: str = "",
            add_distill: str = "", add_negatives: str = "") -> tuple:
    """protect's default recipe (recipe.with_owner_recipe's when `owner_recipe` is given)
    without the kinds named in `drop`, with `twins` more seeds of each threshold negative
    of the owner's architecture, and a positive reference for each KIND:STRENGTH of
    `preprocess`; with `converged_selection`, the selecting negatives of the owner's
    architecture that train to the owner's accuracy train until converged instead;
    `adversarial`: KEY=VALUE,... overrides of the adversarial-ft reference's settings;
    `positive_twins`: KIND:N,... N more draws of each named positive kind (its seed from
    the "-twinI" name); `add_distill`: ARCH,... a distillation positive into each student
    architecture, at distill-small's settings otherwise; `add_negatives`: ARCH-OPTIMIZER[-aug],...
    a selecting negative each (recipe.negative_kind)."""
    import dataclasses

    from ipguard_fast.attacks import Preprocess
    from ipguard_fast.selection.recipe import RECIPE, ReferenceKind, with_owner_recipe

    recipe = RECIPE if owner_recipe is None else with_owner_recipe(RECIPE, owner_recipe)
    for entry in filter(None, preprocess.split(",")):
        kind, _, strength = entry.partition(":")
        recipe += (ReferenceKind(f"{kind}-{strength}", "positive", "preprocess", Preprocess(kind, float(strength)),
                                 per_replica=False),)
    if converged_selection:
        recipe = tuple(_converged(k) for k in recipe)
    if adversarial:
        recipe = tuple(dataclasses.replace(k, settings=dataclasses.replace(
                           k.settings, **_overrides(adversarial, k.settings, "--adversarial")))
                       if k.attack == "adversarial-fine-tune" else k for k in recipe)
    owners = [k for k in recipe if k.threshold_only and k.settings.arch == "owner"]
    recipe += _seeded_again(owners, "extra", twins)
    for entry in filter(None, positive_twins.split(",")):
        name, _, count = entry.partition(":")
        kind = next((k for k in recipe if k.kind == name and k.role == "positive"), None)
        if kind is None:
            raise SystemExit(f"--positive-twins: no positive kind {name!r} in the recipe")
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--positive-twins: expected KIND:N with N a positive integer, got {entry!r}")
        recipe += _seeded_again([kind], "twin", int(count))
    small = next((k for k in recipe if k.kind == "distill-small"), None)
    for arch in filter(None, add_distill.split(",")):
        if small is None:
            raise SystemExit("--add-distill: the recipe has no distill-small to take the settings from")
        recipe += (dataclasses.replace(small, kind=f"distill-{arch}", settings=dataclasses.replace(
            small.settings, student=arch)),)
    for entry in filter(None, add_negatives.split(",")):
        kind = _negative_kind(entry)
        if kind.kind in {k.kind for k in recipe}:
            raise SystemExit(f"--add-negatives: {kind.kind} is already in the recipe")
        recipe += (kind,)
    names = {name for name in drop.split(",") if name}
    unknown = names - {k.kind for k in recipe}
    if unknown:
        raise SystemExit(f"--drop-kinds: no such kind in the recipe: {sorted(unknown)}")
    return tuple(k for k in recipe if k.kind not in names)


def _negative_kind(entry: str):
    """recipe.negative_kind for "ARCH-OPTIMIZER[-aug]" (ARCH: owner, generic...)."""
    from ipguard_fast.selection.recipe import OPTIMIZERS, negative_kind

    parts = entry.split("-")
    augment = parts[-1] == "aug"
    parts = parts[:-1] if augment else parts
    if len(parts) < 2 or parts[-1] not in OPTIMIZERS:
        raise SystemExit(f"--add-negatives: expected ARCH-OPTIMIZER[-aug] with OPTIMIZER in {sorted(OPTIMIZERS)}, "
                         f"got {entry!r}")
    return negative_kind("-".join(parts[:-1]), parts[-1], augment)


def _seeded_again(kinds: list, suffix: str, count: int) -> tuple:
    """`kinds` `count` times more, as "<kind>-<suffix>I" (I = 1..count), the seed each of
    those names draws."""
    import dataclasses

    return tuple(dataclasses.replace(k, kind=f"{k.kind}-{suffix}{i}") for i in range(1, count + 1) for k in kinds)


def _converged(kind):
    """`kind` trained until converged, capped at its epochs' most, if it is a selecting negative of the
    owner's architecture that trains to the owner's accuracy; otherwise `kind` as it is."""
    import dataclasses

    settings = kind.settings
    if kind.role != "negative" or kind.threshold_only or getattr(settings, "arch", None) != "owner" \
            or not getattr(settings, "match_owner", False):
        return kind
    return dataclasses.replace(kind, settings=dataclasses.replace(settings, epochs=max(settings.epoch_list()),
                                                                  match_owner=False, until_converged=True))


def _refine_config(overrides: str):
    """True (protect's default refinement), or a RefineConfig with the KEY=VALUE overrides."""
    if not overrides:
        return True
    from ipguard_fast.selection.refine import RefineConfig

    return RefineConfig(**_overrides(overrides, RefineConfig(), "--refine"))


def _overrides(text: str, default, option: str) -> dict:
    """KEY=VALUE,... as the settings of `default`'s dataclass they name, each typed as its
    default is (a setting None by default, like negative_weight, is a float)."""
    import dataclasses

    names = sorted(f.name for f in dataclasses.fields(default))
    settings = {}
    for entry in text.split(","):
        key, _, value = entry.partition("=")
        if key not in names:
            raise SystemExit(f"{option}: {type(default).__name__} has no {key!r} (it has {names})")
        settings[key] = int(value) if isinstance(getattr(default, key), int) else float(value)
    return settings


def _summary(bed: str, seed: int, result, protect_seconds: float) -> dict:
    from ipguard_fast import metrics

    row = {"bed": bed, "seed": seed, "owner_accuracy": result.owner["accuracy"], "protect_seconds": protect_seconds}
    plain = max((r for r in result.runs if r.method == "ipguard"), key=lambda r: r.aruc)
    for name, run in (("plain", plain), ("selected", result.run("selected")), ("mistakes", result.run("mistakes"))):
        counted = [s for s in run.suspects if s.get("counted", True)]
        paper = [s["matching_rate"] for s in counted if s["role"] == "positive" and s["family"] in PAPER_FAMILIES]
        negatives = [s["matching_rate"] for s in counted if s["role"] == "negative"]
        row[name] = {"aruc": run.aruc, "roc_auc": run.roc_auc, "k": run.k,
                     "aruc_paper_families": metrics.aruc(paper, negatives), "verdicts": run.verdicts,
                     "field_families": {s["name"]: s["matching_rate"] for s in counted
                                        if s["role"] == "positive" and s["family"] not in PAPER_FAMILIES}}
    part = result.settings.get("student_part")
    if part is not None:   # a copy when either part calls it one
        main, own = row["selected"]["verdicts"], part["verdicts"]
        row["students"] = {"aruc": part["aruc"], "roc_auc": part["roc_auc"], "k": None, "verdicts": own,
                           "aruc_paper_families": float("nan"), "rates": part["rates"]}
        combined = {"threshold": float("nan"), "tpr": float("nan"),
                    "false_accusations": sorted(set(main["false_accusations"]) | set(own["false_accusations"])),
                    "missed": sorted(set(main["missed"]) & set(own["missed"]))}
        counted = main["positives"]
        combined["tpr"] = (counted - len(combined["missed"])) / counted if counted else float("nan")
        row["combined"] = {"aruc": float("nan"), "roc_auc": float("nan"), "k": None, "verdicts": combined,
                           "aruc_paper_families": float("nan")}
    return row


def _write_summary(out: Path) -> None:
    files = sorted(out.glob("*-seed*.json"))
    rows = [json.loads(f.read_text())["summary"] for f in files]
    order = {"demo": 0, "hard": 1, "foreign": 2}
    rows.sort(key=lambda r: (order.get(r["bed"], 9), r["seed"]))
    commands = sorted({json.loads(f.read_text())["command"] for f in files})
    (out / "summary.json").write_text(json.dumps({"commands": commands, "rows": rows}, indent=1, default=str) + "\n")
    lines = ["| bed | seed | method | ARUC | ARUC (paper families) | ROC AUC | threshold | false accusations | "
             "missed | TPR |", "|---|---:|---|---:|---:|---:|---:|---|---|---:|"]
    for row in rows:
        for name in ("plain", "selected", "mistakes", "students", "combined"):
            if name not in row:
                continue
            r, v = row[name], row[name]["verdicts"]
            lines.append(f"| {row['bed']} | {row['seed']} | {name}{_k(r['k'])} "
                         f"| {r['aruc']:.3f} | {r['aruc_paper_families']:.3f} | {r['roc_auc']:.3f} | "
                         f"{v.get('threshold', float('nan')):.2f} | {', '.join(v.get('false_accusations', [])) or '-'} "
                         f"| {', '.join(v.get('missed', [])) or '-'} | {v.get('tpr', float('nan')):.2f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def _k(k) -> str:
    return "" if k is None else f" k={k:g}"


if __name__ == "__main__":
    sys.exit(main())
