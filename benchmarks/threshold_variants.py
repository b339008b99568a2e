"""Thresholds by other sets of threshold negatives, recomputed offline from a three_beds.py
folder run with --threshold-twins 2: the selection is the same for every variant
(threshold negatives take no part in it), so only the threshold and the verdicts change.

    python benchmarks/threshold_variants.py benchmarks/results/<folder> [--extra-suffix -extra]

Variants: the validation replica's negatives plus the recipe's threshold negatives, plus
one, plus two more seeds of each of them that has the owner's architecture (the kinds
three_beds.py named "<kind>-extraN"; "-twinN" in runs made before recipe version 5, whose
own second seeds took that name). Each variant's threshold is made as protect makes it: the
level, plus the sampling-noise margin at the significance the run recorded (none in runs
made before the margin). Writes <folder>/threshold-variants.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_fast.selection.choice import threshold_between  # noqa: E402
from ipguard_fast.selection.significance import significant_threshold  # noqa: E402


def variants(suffix: str) -> dict:
    """Variant name -> which threshold negatives it keeps, by kind."""
    return {"the recipe's": lambda kind: suffix not in kind,
            "the recipe's + one more seed of each owner-architecture one": lambda kind: suffix not in kind
            or kind.endswith(f"{suffix}1"),
            "the recipe's + two more seeds": lambda kind: True}


def held_out(recorded: dict) -> tuple[list[float], list[tuple[str, float]], list[tuple[str, float]]]:
    """(validation positives' rates, validation negatives' (kind, rate), threshold negatives'
    (kind, rate)) from protect's held_out_rates: the validation replica's positives; its
    negatives and then the threshold negatives, each in the references' order."""
    refs, rates = recorded["references"], recorded["held_out_rates"]
    validate = [r["kind"] for r in refs if r["split"] == "validate" and r["role"] == "negative"]
    threshold = [r["kind"] for r in refs if r["split"] == "threshold"]
    if len(rates["negatives"]) != len(validate) + len(threshold):
        raise SystemExit("held-out negatives do not match the validation and threshold references")
    return (rates["positives"], list(zip(validate, rates["negatives"][:len(validate)])),
            list(zip(threshold, rates["negatives"][len(validate):])))


def threshold_of(recorded: dict, keep, n: int) -> tuple[float, float]:
    """(threshold, top threshold-negative rate) from the validation replica and the
    threshold negatives whose kind `keep` accepts."""
    positives, validate, threshold = held_out(recorded)
    extra = [rate for kind, rate in threshold if keep(kind)]
    level = threshold_between(positives, [rate for _, rate in validate] + extra, n)
    significance = recorded.get("threshold_significance")
    stored = level if significance is None else significant_threshold(level, n, significance)[0]
    return stored, max(extra, default=float("nan"))


def verdicts(suspects: list[dict], threshold: float) -> dict:
    counted = [s for s in suspects if s.get("counted", True)]
    return {"threshold": threshold,
            "false_accusations": [s["name"] for s in counted if s["role"] == "negative"
                                  and s["matching_rate"] >= threshold],
            "missed": [s["name"] for s in counted if s["role"] == "positive" and s["matching_rate"] < threshold]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--extra-suffix", default="-extra", help="how three_beds.py named the extra seeds")
    args = p.parse_args(argv)
    out, chosen = Path(args.folder), variants(args.extra_suffix)
    rows = []
    for path in sorted(out.glob("*-seed*.json")):
        result = json.loads(path.read_text())
        refs = result["settings"]["protect_references"]
        selected = next(r for r in result["runs"] if r["method"] == "selected")
        every, _ = threshold_of(refs, lambda kind: True, selected["n_fingerprints"])
        if abs(every - refs["threshold"]) > 1e-9:
            raise SystemExit(f"{path.name}: recomputed {every} != stored threshold {refs['threshold']}")
        for name, keep in chosen.items():
            threshold, top = threshold_of(refs, keep, selected["n_fingerprints"])
            rows.append({"bed": result["bed"], "seed": result["seed"], "variant": name,
                         "top_threshold_negative": top, **verdicts(selected["suspects"], threshold),
                         "threshold_negatives": {kind: rate for kind, rate in held_out(refs)[2] if keep(kind)}})
    order = {"demo": 0, "hard": 1, "foreign": 2}
    rows.sort(key=lambda r: (list(chosen).index(r["variant"]), order.get(r["bed"], 9), r["seed"]))
    (out / "threshold-variants.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| threshold negatives | bed | seed | top of them | threshold | false accusations | missed |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['bed']} | {r['seed']} | {r['top_threshold_negative']:.2f} | "
                     f"{r['threshold']:.2f} | {', '.join(r['false_accusations']) or '-'} | "
                     f"{', '.join(r['missed']) or '-'} |")
    for name in chosen:
        mine = [r for r in rows if r["variant"] == name]
        lines.append(f"\n{name}: {sum(len(r['false_accusations']) for r in mine)} false accusations, "
                     f"{sum(len(r['missed']) for r in mine)} missed, in {len(mine)} cells")
    (out / "threshold-variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
