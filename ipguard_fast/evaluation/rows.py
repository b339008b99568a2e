"""The evaluation result's JSON form, read: its check (errors name the offending entry)
and the small readers the Markdown table and the plots share."""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

__all__ = ["ROLES", "as_dict", "check_result", "family_roles", "fmt", "is_number", "fmt_k", "role_rates", "run_label"]

ROLES = ("positive", "negative")


def as_dict(result: Any) -> Any:
    """The JSON form of an EvaluationResult (a dict is taken as it is)."""
    return result.to_dict() if hasattr(result, "to_dict") else result


def check_result(result: Any) -> None:
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
            if not is_number(run[key]) and not (key == "k" and run[key] is None and "label" in run):
                raise ValueError(f"{where}[{key!r}]: must be a number, got {run[key]!r}")
        for key in ("aruc", "roc_auc"):  # None/NaN allowed: a run may lack one role
            if run[key] is not None and not is_number(run[key]):
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
    if not is_number(rate) or not 0 <= rate <= 1:
        raise ValueError(f"{where}['matching_rate']: must be a number in [0, 1], got {rate!r}")


def run_label(run: Mapping[str, Any]) -> str:
    """A run's column title: its label (a selected set's), else its k."""
    return str(run["label"]) if run.get("label") else f"k={fmt_k(run['k'])}"


def family_roles(runs: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(family, role) pairs in order of first appearance across all runs."""
    return list(dict.fromkeys((s["family"], s["role"]) for run in runs for s in run["suspects"]))


def role_rates(run: Mapping[str, Any], role: str) -> list[float]:
    return [s["matching_rate"] for s in run["suspects"] if s["role"] == role]


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def fmt(value: Any) -> str:
    return f"{value:.3f}" if is_number(value) and math.isfinite(value) else "n/a"


def fmt_k(k: Any) -> str:
    return f"{k:g}"
