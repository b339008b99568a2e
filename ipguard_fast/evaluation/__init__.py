"""Evaluating fingerprints: suspects (the attacks of ipguard_fast.attacks on beds),
matching rates, robustness/uniqueness, ARUC, reports.

matplotlib (extra ``eval``) is imported only when a report's plots are drawn.
"""
from ..metrics import aruc, robustness, roc_auc, ru_curve, uniqueness
from .beds import BEDS, Bed, make_bed
from .config import EvaluationConfig, EvaluationResult, RunResult
from .pipeline import evaluate, run_evaluation
from .report import summary_table, write_report
from .suspects import FAMILIES, Suspect, Variant, build_suspects, build_variants, negative_suspects, positive_suspects

__all__ = ["BEDS", "Bed", "EvaluationConfig", "EvaluationResult", "FAMILIES", "RunResult", "Suspect", "Variant",
           "aruc", "build_suspects", "build_variants", "evaluate", "make_bed", "negative_suspects",
           "positive_suspects", "robustness", "roc_auc", "ru_curve", "run_evaluation", "summary_table",
           "uniqueness", "write_report"]
