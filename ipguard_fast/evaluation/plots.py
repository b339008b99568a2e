"""The evaluation's two plots as PNG bytes: R(t)/U(t) curves and matching rates per suspect.

Drawn on matplotlib ``Figure`` objects with the Agg canvas directly, never through
pyplot, so writing a report neither needs a display nor changes the process's global
backend. matplotlib (extra ``eval``) is imported only here, when a report is drawn.
"""
from __future__ import annotations

import io
import math
from typing import Any, Mapping

from .._optional import require
from ..metrics import ru_curve
from .rows import family_roles, fmt, is_number, role_rates, run_label

__all__ = ["matching_rates_png", "ru_curves_png"]

_ROLE_STYLE = {  # how each role is drawn in matching_rates.png
    "positive": {"marker": "o", "color": "tab:red", "label": "positive (copy)"},
    "negative": {"marker": "x", "color": "tab:blue", "label": "negative (independent)"},
}


def ru_curves_png(result: Mapping[str, Any]) -> bytes:
    return _png_bytes(_ru_curves_figure(result))


def matching_rates_png(result: Mapping[str, Any]) -> bytes:
    return _png_bytes(_matching_rates_figure(result))


def _figure():
    return require("matplotlib.figure", "eval", "the evaluation plots", package="matplotlib").Figure




def _ru_curves_figure(result: Mapping[str, Any]):
    """R(t) (solid) and U(t) (dashed) for every k, one colour per k."""
    fig = _figure()(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    for index, run in enumerate(result["runs"]):
        # The curves ARUC integrates: a copy no longer useful (evaluate's useful_drop) is left out.
        positives = [s["matching_rate"] for s in run["suspects"] if s["role"] == "positive" and s.get("counted", True)]
        negatives = role_rates(run, "negative")
        if not positives or not negatives:
            continue  # a curve needs both roles; the JSON and table still hold this run
        t, r, u = ru_curve(positives, negatives)
        colour = f"C{index % 10}"
        ax.plot(t, r, color=colour, linestyle="-",
                label=f"R(t), {run_label(run)} (ARUC {fmt(run['aruc'])})")
        ax.plot(t, u, color=colour, linestyle="--", label=f"U(t), {run_label(run)}")
    ax.set_title(f"Robustness R(t) and uniqueness U(t): {result.get('owner', {}).get('name', 'owner model')}")
    ax.set_xlabel("threshold t on the matching rate")
    ax.set_ylabel("share of suspects")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small", loc="lower left")
    return fig


def _matching_rates_figure(result: Mapping[str, Any]):
    """One panel per run (k, or a selected set): each suspect's matching rate, grouped by family along x, marker by role."""
    runs = result["runs"]
    families = list(dict.fromkeys(family for family, _ in family_roles(runs)))
    ncols = min(len(runs), 3)
    nrows = math.ceil(len(runs) / ncols)
    fig = _figure()(figsize=(max(5.0, 0.9 * len(families) + 2) * ncols, 4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    labelled: set[str] = set()
    for ax, run in zip(axes, runs):
        for family_index, family in enumerate(families):
            members = [s for s in run["suspects"] if s["family"] == family]
            for member_index, suspect in enumerate(members):
                # Spread a family's suspects over a 0.8-wide slot centred on the family's tick.
                x = family_index + (member_index - (len(members) - 1) / 2) * 0.8 / max(len(members), 1)
                style = dict(_ROLE_STYLE[suspect["role"]])
                if suspect["role"] in labelled:
                    style.pop("label")
                labelled.add(suspect["role"])
                ax.scatter([x], [suspect["matching_rate"]], s=36, **style)
        threshold = run.get("threshold", result.get("settings", {}).get("threshold"))
        if is_number(threshold):
            ax.axhline(threshold, color="grey", linestyle=":", label=None if "t" in labelled else "threshold")
            labelled.add("t")
        ax.set_title(f"{run_label(run)} ({run['n_fingerprints']} fingerprints)")
        ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    axes[0].set_ylabel("matching rate")
    fig.suptitle("Matching rate per suspect")
    if labelled:
        fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    return fig


def _png_bytes(fig) -> bytes:
    backend = require("matplotlib.backends.backend_agg", "eval", "the evaluation plots", package="matplotlib")
    backend.FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: no pyplot, no global backend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
