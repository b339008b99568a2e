"""Writing an evaluation result to a folder: JSON, a Markdown summary and two plots.

The result is an EvaluationResult, or its JSON form (EvaluationResult.to_dict())::

    {"owner": {"name": str, "accuracy": float},
     "settings": {...any JSON...},
     "runs": [   # one per k (method "ipguard"), and one per selected set (method "selected")
        {"k": float | None, "method": str, "label": str (optional), "n_fingerprints": int,
         "extract_seconds": float,
         "suspects": [{"name": str, "family": str, "role": "positive" | "negative",
                       "accuracy": float, "matching_rate": float}, ...],
         "aruc": float, "roc_auc": float}, ...]}

The plots are drawn in plots.py, which alone imports matplotlib.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from .._atomic import atomic_write_bytes
from .rows import as_dict, check_result, family_roles, fmt, is_number, role_rates, run_label

__all__ = ["combined_summary", "run_label", "summary_table", "verdict_summary", "write_report"]


def summary_table(result: Mapping[str, Any]) -> str:
    """Markdown summary: per family and role, mean [min, max] matching rate per k; ARUC / ROC AUC per k."""
    result = as_dict(result)
    check_result(result)
    runs = result["runs"]
    owner = result.get("owner", {})
    lines = [f"# IPGuard evaluation: {owner.get('name', 'owner model')}", ""]
    if is_number(owner.get("accuracy")):
        lines += [f"Owner accuracy: {owner['accuracy']:.4f}", ""]

    lines += [
        "Cells give the mean matching rate over the family's suspects, with [min, max].",
        "",
        "| Family | Role | Suspects | " + " | ".join(_md_cell(run_label(run)) for run in runs) + " |",
        "|---|---|---:|" + "---:|" * len(runs),
    ]
    for family, role in family_roles(runs):
        cells = []
        count = 0
        for run in runs:
            rates = [s["matching_rate"] for s in run["suspects"] if s["family"] == family and s["role"] == role]
            count = max(count, len(rates))
            cells.append(f"{np.mean(rates):.3f} [{min(rates):.3f}, {max(rates):.3f}]" if rates else "–")
        lines.append(f"| {_md_cell(family)} | {role} | {count} | " + " | ".join(cells) + " |")
    lines.append(
        "| **ARUC / ROC AUC** | | | "
        + " | ".join(f"{fmt(run['aruc'])} / {fmt(run['roc_auc'])}" for run in runs)
        + " |"
    )
    if all(run.get("verdicts") for run in runs):
        lines.append("| **wrong verdicts** at the threshold | | | "
                     + " | ".join(_md_cell(verdict_summary(run["verdicts"])) for run in runs) + " |")

    lines.append("")
    for run in runs:
        lines.append(
            f"- {run_label(run)}: {run['n_fingerprints']} fingerprints extracted in "
            f"{run['extract_seconds']:.1f} s; positives {_role_mean(run, 'positive')}, "
            f"negatives {_role_mean(run, 'negative')} mean matching rate; "
            f"ARUC {fmt(run['aruc'])}, ROC AUC {fmt(run['roc_auc'])}"
        )
    combined = result.get("combined_verdicts")
    if combined:
        lines.append(f"- selected set and student part together (a copy when either shows it): "
                     f"{combined_summary(combined)}")
    return "\n".join(lines) + "\n"


def combined_summary(combined: Mapping[str, Any]) -> str:
    """EvaluationResult.combined_verdicts in one line."""
    accused, missed = combined["false_accusations"], combined["missed"]
    text = (f"{len(accused)}/{combined['negatives']} accused, {len(missed)}/{combined['positives']} missed"
            + (f"; falsely accused: {', '.join(accused)}" if accused else ""))
    return text + (f"; missed: {', '.join(missed)}" if missed else "")


def verdict_summary(verdicts: Mapping[str, Any]) -> str:
    """One cell: the threshold, false accusations (the worst error) and missed copies."""
    accused, missed = verdicts["false_accusations"], verdicts["missed"]
    text = (f"t={verdicts['threshold']:.2f}: {len(accused)}/{verdicts['negatives']} accused, "
            f"{len(missed)}/{verdicts['positives']} missed")
    if verdicts.get("not_useful"):
        text += f" ({len(verdicts['not_useful'])} not useful)"
    if verdicts.get("label_bias"):
        text += f" ({len(verdicts['label_bias'])} at t no copy: their label frequencies explain their matches)"
    if verdicts.get("conclusive") is False:
        text += " (inconclusive: the set's threshold can show no copy)"
    if verdicts.get("calibrated") is False:
        text += " (t uncalibrated, as if typed: verify gives such a set no verdict without --threshold)"
    return text


def write_report(result: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``ru_curves.png`` and ``matching_rates.png`` to ``out_dir``.

    Every file is written atomically (temp file + rename), and only once all four are made (the
    plots take a while), so a run interrupted or failing there leaves the folder as it was,
    never this run's results beside an earlier run's plots. Non-finite floats become JSON
    ``null`` because strict JSON has no NaN. Returns the written paths under the keys
    ``"json"``, ``"markdown"``, ``"ru_curves"`` and ``"matching_rates"``.
    """
    result = as_dict(result)
    check_result(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "ru_curves": out / "ru_curves.png",
        "matching_rates": out / "matching_rates.png",
    }
    json_text = json.dumps(_jsonable(result, "result"), indent=2, allow_nan=False) + "\n"
    from .plots import matching_rates_png, ru_curves_png  # matplotlib, only when a report is written

    contents = {"json": json_text.encode("utf-8"), "markdown": summary_table(result).encode("utf-8"),
                "ru_curves": ru_curves_png(result), "matching_rates": matching_rates_png(result)}
    for name, data in contents.items():
        atomic_write_bytes(paths[name], data)
    return paths


# ---------------------------------------------------------------------- small helpers








def _role_mean(run: Mapping[str, Any], role: str) -> str:
    rates = role_rates(run, role)
    return f"{np.mean(rates):.3f}" if rates else "n/a"






def _md_cell(text: str) -> str:
    """Escape the one character that would split a Markdown table cell."""
    return text.replace("|", "\\|")




def _jsonable(value: Any, where: str) -> Any:
    """A copy of ``value`` that strict JSON can hold: numpy scalars/arrays unwrapped, NaN/inf -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where}: is a {type(value).__name__}, which cannot be written to JSON")
