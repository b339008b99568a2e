"""Evaluating fingerprints: suspects, matching rates, robustness/uniqueness, ARUC, reports."""
from .metrics import aruc, robustness, roc_auc, ru_curve, uniqueness
from .pipeline import build_suspects, evaluate
from .report import summary_table, write_report
from .variants import Suspect, negative_suspects, positive_suspects

__all__ = ["evaluate", "build_suspects", "aruc", "roc_auc", "robustness", "uniqueness", "ru_curve",
           "summary_table", "write_report", "Suspect", "positive_suspects", "negative_suspects"]
