"""Evaluating fingerprints: suspects, matching rates, robustness/uniqueness, ARUC, reports.

matplotlib (extra ``eval``) is imported only when a report's plots are drawn.
"""
from .metrics import aruc, robustness, roc_auc, ru_curve, uniqueness
from .pipeline import build_suspects, evaluate
from .report import summary_table, write_report
from .suspects import FAMILIES, Suspect, negative_suspects, positive_suspects

__all__ = ["FAMILIES", "Suspect", "aruc", "build_suspects", "evaluate", "negative_suspects", "positive_suspects",
           "robustness", "roc_auc", "ru_curve", "summary_table", "uniqueness", "write_report"]
