"""Writing an evaluation result to a folder: JSON, a Markdown summary and two plots.

The result is the plain dict the evaluation code produces::

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
import numbers
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from .._atomic import atomic_write_bytes

__all__ = ["run_label", "summary_table", "write_report"]

ROLES = ("positive", "negative")


def summary_table(result: Mapping[str, Any]) -> str:
    """Markdown summary: per family and role, mean [min, max] matching rate per k; ARUC / ROC AUC per k."""
    _check_result(result)
    runs = result["runs"]
    owner = result.get("owner", {})
    lines = [f"# IPGuard evaluation: {owner.get('name', 'owner model')}", ""]
    if _is_number(owner.get("accuracy")):
        lines += [f"Owner accuracy: {owner['accuracy']:.4f}", ""]

    lines += [
        "Cells give the mean matching rate over the family's suspects, with [min, max].",
        "",
        "| Family | Role | Suspects | " + " | ".join(_md_cell(run_label(run)) for run in runs) + " |",
        "|---|---|---:|" + "---:|" * len(runs),
    ]
    for family, role in _family_roles(runs):
        cells = []
        count = 0
        for run in runs:
            rates = [s["matching_rate"] for s in run["suspects"] if s["family"] == family and s["role"] == role]
            count = max(count, len(rates))
            cells.append(f"{np.mean(rates):.3f} [{min(rates):.3f}, {max(rates):.3f}]" if rates else "–")
        lines.append(f"| {_md_cell(family)} | {role} | {count} | " + " | ".join(cells) + " |")
    lines.append(
        "| **ARUC / ROC AUC** | | | "
        + " | ".join(f"{_fmt(run['aruc'])} / {_fmt(run['roc_auc'])}" for run in runs)
        + " |"
    )

    lines.append("")
    for run in runs:
        lines.append(
            f"- {run_label(run)}: {run['n_fingerprints']} fingerprints extracted in "
            f"{run['extract_seconds']:.1f} s; positives {_role_mean(run, 'positive')}, "
            f"negatives {_role_mean(run, 'negative')} mean matching rate; "
            f"ARUC {_fmt(run['aruc'])}, ROC AUC {_fmt(run['roc_auc'])}"
        )
    return "\n".join(lines) + "\n"


def write_report(result: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``ru_curves.png`` and ``matching_rates.png`` to ``out_dir``.

    Every file is written atomically (temp file + rename). Non-finite floats become JSON
    ``null`` because strict JSON has no NaN. Returns the written paths under the keys
    ``"json"``, ``"markdown"``, ``"ru_curves"`` and ``"matching_rates"``.
    """
    _check_result(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "ru_curves": out / "ru_curves.png",
        "matching_rates": out / "matching_rates.png",
    }
    json_text = json.dumps(_jsonable(result, "result"), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(paths["json"], json_text.encode("utf-8"))
    atomic_write_bytes(paths["markdown"], summary_table(result).encode("utf-8"))
    from .plots import matching_rates_png, ru_curves_png  # matplotlib, only when a report is written

    atomic_write_bytes(paths["ru_curves"], ru_curves_png(result))
    atomic_write_bytes(paths["matching_rates"], matching_rates_png(result))
    return paths


# ---------------------------------------------------------------------- validation


def _check_result(result: Any) -> None:
    """Check the parts of the result this module reads; errors name the offending entry."""
    if not isinstance(result, Mapping):
        raise ValueError(f"result: must be a dict, got {type(result).__name__}")
    owner = result.get("owner", {})
    if not isinstance(owner, Mapping):
        raise ValueError("result['owner']: must be a dict")
    runs = result.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError("result['runs']: must be a non-empty list (one entry per k)")
    for i, run in enumerate(runs):
        where = f"result['runs'][{i}]"
        if not isinstance(run, Mapping):
            raise ValueError(f"{where}: must be a dict")
        for key in ("k", "n_fingerprints", "extract_seconds", "suspects", "aruc", "roc_auc"):
            if key not in run:
                raise ValueError(f"{where}: is missing {key!r}")
        for key in ("k", "n_fingerprints", "extract_seconds"):
            if not _is_number(run[key]) and not (key == "k" and run[key] is None and "label" in run):
                raise ValueError(f"{where}[{key!r}]: must be a number, got {run[key]!r}")
        for key in ("aruc", "roc_auc"):  # None/NaN allowed: a run may lack one role
            if run[key] is not None and not _is_number(run[key]):
                raise ValueError(f"{where}[{key!r}]: must be a number or None, got {run[key]!r}")
        if not isinstance(run["suspects"], list):
            raise ValueError(f"{where}['suspects']: must be a list")
        for j, suspect in enumerate(run["suspects"]):
            _check_suspect(suspect, f"{where}['suspects'][{j}]")


def _check_suspect(suspect: Any, where: str) -> None:
    if not isinstance(suspect, Mapping):
        raise ValueError(f"{where}: must be a dict")
    for key in ("name", "family"):
        if not isinstance(suspect.get(key), str):
            raise ValueError(f"{where}[{key!r}]: must be a string, got {suspect.get(key)!r}")
    if suspect.get("role") not in ROLES:
        raise ValueError(f"{where}['role']: must be 'positive' or 'negative', got {suspect.get('role')!r}")
    rate = suspect.get("matching_rate")
    if not _is_number(rate) or not 0 <= rate <= 1:
        raise ValueError(f"{where}['matching_rate']: must be a number in [0, 1], got {rate!r}")


# ---------------------------------------------------------------------- small helpers


def run_label(run: Mapping[str, Any]) -> str:
    """A run's column title: its label (a selected set's), else its k."""
    return str(run["label"]) if run.get("label") else f"k={_fmt_k(run['k'])}"


def _family_roles(runs: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(family, role) pairs in order of first appearance across all runs."""
    return list(dict.fromkeys((s["family"], s["role"]) for run in runs for s in run["suspects"]))


def _role_rates(run: Mapping[str, Any], role: str) -> list[float]:
    return [s["matching_rate"] for s in run["suspects"] if s["role"] == role]


def _role_mean(run: Mapping[str, Any], role: str) -> str:
    rates = _role_rates(run, role)
    return f"{np.mean(rates):.3f}" if rates else "n/a"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if _is_number(value) and math.isfinite(value) else "n/a"


def _md_cell(text: str) -> str:
    """Escape the one character that would split a Markdown table cell."""
    return text.replace("|", "\\|")


def _fmt_k(k: Any) -> str:
    return f"{k:g}"


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
