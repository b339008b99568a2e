"""EvaluationConfig: what an evaluation runs, checked once; EvaluationResult and RunResult:
what it measured, typed, with the report's JSON form (report.py reads that form)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .._validate import ArgumentError, finite_number, positive_int
from ..search.config import check_search_options
from ..selection.config import ProtectConfig

__all__ = ["METHODS", "EvaluationConfig", "EvaluationResult", "RunResult"]

METHODS = ("ipguard", "selected", "mistakes")


@dataclass(frozen=True)
class EvaluationConfig:
    """ks: the k of each plain IPGuard run; n: fingerprints per run; seed: the search's;
    methods: "ipguard", "selected" (protect's selection, judged by the same suspects)
    and/or "mistakes" (the owner's misclassified held-out inputs: the baseline to beat);
    search: extra extract_fingerprints keywords; protect: the selected method's settings
    (default ProtectConfig(n=n)); reference_cache: where protect keeps its reference
    models; useful_drop: a copy whose test accuracy is more than this below the owner's
    is no longer a useful copy: reported, not counted as a positive (None: all count)."""

    ks: Sequence[float] = (1.0, 3.0, 10.0)
    n: int = 100
    seed: int = 0
    methods: Sequence[str] = ("ipguard",)
    search: dict = field(default_factory=dict)
    protect: ProtectConfig | None = None
    reference_cache: Any = None
    useful_drop: float | None = 0.10

    def __post_init__(self) -> None:
        positive_int("n", self.n)
        methods = tuple(self.methods)
        if not methods or any(m not in METHODS for m in methods) or len(set(methods)) != len(methods):
            raise ArgumentError("methods", f"expected distinct entries of {METHODS}, got {list(methods)}")
        object.__setattr__(self, "methods", methods)
        ks = tuple(finite_number("ks", k, minimum=0.0) for k in self.ks)
        if "ipguard" in methods and not ks:
            raise ArgumentError("ks", "need at least one k")
        if len(set(ks)) != len(ks):   # one run per k, its rows named by k: a repeat is the same run twice
            raise ArgumentError("ks", f"has repeated values {list(ks)}")
        object.__setattr__(self, "ks", ks)
        search = check_search_options("search", self.search, ("n", "k", "input_shape", "seed"))
        object.__setattr__(self, "search", search)
        if self.useful_drop is not None:
            finite_number("useful_drop", self.useful_drop, minimum=0.0)
        if self.protect is not None and not isinstance(self.protect, ProtectConfig):
            raise ArgumentError("protect", f"expected a ProtectConfig, got {type(self.protect).__name__}")

    def protect_config(self) -> ProtectConfig:
        return self.protect if self.protect is not None else ProtectConfig(n=self.n)

    def as_meta(self) -> dict:
        """The report's "settings"."""
        return {"ks": list(self.ks), "n": self.n, "seed": self.seed, "methods": list(self.methods),
                "useful_drop": self.useful_drop, "extract_options": {k: str(v) for k, v in self.search.items()}}


@dataclass
class RunResult:
    """One method's fingerprints judged by every suspect: the suspects' rows (name, family,
    role, accuracy, matching rate, counted), ARUC and ROC AUC over the counted suspects,
    and the verdicts at the set's threshold as a user reads them (`verdicts`: the
    threshold, TPR, the false accusations, the missed copies, the copies no longer
    useful). k is None for a selected set or mistakes; label, threshold and selection
    describe a selected set."""

    method: str
    k: float | None
    n_fingerprints: int
    extract_seconds: float
    candidates_tried: int
    suspects: list[dict]
    aruc: float
    roc_auc: float
    verdicts: dict = field(default_factory=dict)
    label: str | None = None
    threshold: float | None = None
    selection: dict | None = None

    def to_dict(self) -> dict:
        head = {"method": self.method, "k": self.k}
        if self.label is not None:
            head["label"] = self.label
        if self.method in ("selected", "students"):
            head.update(threshold=self.threshold, selection=self.selection)
        return {**head, "n_fingerprints": self.n_fingerprints, "extract_seconds": self.extract_seconds,
                "candidates_tried": self.candidates_tried, "suspects": self.suspects, "aruc": self.aruc,
                "roc_auc": self.roc_auc, "verdicts": self.verdicts}


@dataclass
class EvaluationResult:
    """The owner (name, accuracy), the settings, and one RunResult per method and k."""

    owner: dict
    settings: dict
    runs: list[RunResult]

    def to_dict(self) -> dict:
        """The report's JSON form (report.write_report)."""
        out = {"owner": dict(self.owner), "settings": dict(self.settings), "runs": [r.to_dict() for r in self.runs]}
        combined = self.combined_verdicts()
        if combined is not None:
            out["combined_verdicts"] = combined
        return out

    def run(self, method: str) -> RunResult:
        """The last run of `method`."""
        return [r for r in self.runs if r.method == method][-1]

    def combined_verdicts(self) -> dict | None:
        """The verdicts of the selected set and its student part together, as verify_parts
        gives them (a copy when either part shows it): the innocents either part accuses, the
        copies both miss; None without a student part's run."""
        methods = {r.method for r in self.runs}
        if not {"selected", "students"} <= methods:
            return None
        main, part = self.run("selected").verdicts, self.run("students").verdicts
        accused = sorted(set(main["false_accusations"]) | set(part["false_accusations"]))
        missed = [name for name in main["missed"] if name in set(part["missed"])]
        counted = main["positives"]
        return {"false_accusations": accused, "missed": missed, "positives": counted, "negatives": main["negatives"],
                "tpr": (counted - len(missed)) / counted if counted else None}
