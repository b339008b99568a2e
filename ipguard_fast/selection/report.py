"""ProtectReport: what protect() chose and measured, typed; one serializer writes it into
the fingerprint file's meta["protect"] and reads it back."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

__all__ = ["ProtectReport"]


@dataclass
class ProtectReport:
    """k: as asked ("auto" or the list); k_grid: the k the pool was extracted at;
    k_factors and median_margin: how "auto" made the grid (None otherwise). chosen /
    negative_weight / init_chosen: the configuration the held-out references chose;
    candidates: every configuration with its held-out ARUC, ROC AUC, extremes and pool
    size; threshold, the level it adds the fingerprints' sampling noise to at
    threshold_significance (significance.py), the floor under that level (the highest
    held-out negative rate and the kind it came from, refining.calibrate_threshold), and
    the held-out rates the level came from;
    where the references came from (built or given, the cache key, each one's build
    seconds); each stage's seconds; the plan that set the knobs (with its estimates,
    beside `timings`)."""

    k: Any
    k_grid: list[float]
    k_factors: list[float] | None
    median_margin: float | None
    init: str
    init_chosen: str
    labels: str
    pool_factor: int
    seed: int
    chosen: str
    negative_weight: float
    candidates: list[dict]
    threshold: float
    held_out_rates: dict[str, list[float]]
    references_built: bool
    reference_cache_key: str | None
    reference_seconds: dict[str, float]
    timings: dict[str, float]
    plan: dict | None = None          # plan.Plan.to_meta(): the knobs, the budget, the estimates
    pool_mistakes: int | None = None  # the owner's held-out mistakes in the pool (None: no held_out_data given)
    threshold_level: float | None = None          # None: a file older than the significance margin
    threshold_significance: float | None = None   # None: no margin (or an older file)
    threshold_floor: float | None = None          # None: a file older than the held-out kinds' floor
    threshold_floor_source: str | None = None     # the held-out reference kind that set the floor


    def to_meta(self) -> dict:
        """The JSON-able dict stored as meta["protect"] (key names are the file format; a
        report without a plan or a threshold level, read from a file older than them, is
        written back without them; pool_mistakes only when held-out data was given)."""
        meta = asdict(self)
        for optional in ("plan", "pool_mistakes"):
            if meta[optional] is None:
                del meta[optional]
        if meta["threshold_level"] is None:   # a file from before the significance margin
            del meta["threshold_level"], meta["threshold_significance"]
        if meta["threshold_floor"] is None:   # a file from before the held-out kinds' floor
            del meta["threshold_floor"]
        if meta["threshold_floor_source"] is None:
            del meta["threshold_floor_source"]
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> "ProtectReport":
        """A report from a file's meta["protect"]; keys a newer version added are ignored."""
        known = {f.name for f in fields(cls)}
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(meta)
        if missing:
            raise ValueError(f"meta['protect']: lacks {sorted(missing)}")
        return cls(**{key: value for key, value in meta.items() if key in known})
