"""ExtractConfig: every setting of one extraction, checked once, shared by the whole path.

extract_fingerprints, the engine, the command line and the checkpoint all read the same
frozen object: the checks live in __post_init__, the checkpoint's resume key and the
fingerprint file's metadata are derived from it, so a setting cannot mean one thing in
one place and another elsewhere.
"""
from __future__ import annotations

import dataclasses
import datetime
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from .._validate import ArgumentError, finite_number, image_shape, positive_int
from .candidates import LABEL_MODES
from .ledger import RESULT_RULES

__all__ = ["AMP_DTYPES", "AUTO_BATCH_START", "ExtractConfig", "check_search_options"]

AMP_DTYPES = {None: None, "none": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16}
# batch_size="auto": the batch the search starts at on each device type, halved on out-of-memory.
AUTO_BATCH_START = {"cpu": 256, "cuda": 4096}
MAX_COUNT = 2**62   # n, max_steps, max_candidates: beyond it a step or candidate index overflows int64


def _int(name: str, value: Any) -> int:
    """Any int, negative included (a seed); _validate has checks for positive and non-negative ones only."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(name, f"must be an int, got {value!r}")
    return int(value)


def _count(name: str, value: Any) -> int:
    """A positive int that the search's 64-bit counters and candidate indices can hold."""
    if positive_int(name, value) > MAX_COUNT:
        raise ArgumentError(name, f"must be at most 2**62, got {value!r}")
    return int(value)


def _choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ArgumentError(name, f"expected one of {tuple(choices)}, got {value!r}")


@dataclass(frozen=True)
class ExtractConfig:
    """The settings of one extraction (see extract_fingerprints for their meaning).

    Device-dependent defaults (check_every, cuda_graph, the "auto" batch) stay None /
    "auto" here and are fixed by :meth:`on_device`.
    """

    n: int
    k: float
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    labels: str = "random"
    lr: float = 0.01
    max_steps: int = 1000
    max_candidates: int | None = None
    batch_size: int | str = 256
    seed: int = 0
    check_every: int | None = None
    amp: str | None = None
    cuda_graph: bool | None = None
    channels_last: bool = False
    compile_model: bool = False
    checkpoint_every: float = 30.0
    lo: float = 0.0
    hi: float = 1.0
    result_rule: str = "index"
    # Launch spare candidates ahead of the failures they replace (ledger.py). False is the
    # benchmark's A/B baseline. A speed option: spares are later candidate indices used only
    # when needed, so the index rule's result is the same either way, and it is left out of
    # the resume key (a checkpoint made with spares resumes without them and vice versa) and
    # of the file's metadata, like cuda_graph and channels_last.
    spares: bool = True

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        put("n", _count("n", self.n))
        put("k", finite_number("k", self.k, minimum=0.0))
        put("input_shape", image_shape("input_shape", self.input_shape))
        if self.num_classes is not None:
            put("num_classes", positive_int("num_classes", self.num_classes))
            if self.num_classes < 2:
                raise ArgumentError("num_classes", f"must be at least 2, got {self.num_classes}")
        _choice("labels", self.labels, LABEL_MODES)
        put("lr", finite_number("lr", self.lr, positive=True))
        put("max_steps", _count("max_steps", self.max_steps))
        put("max_candidates", _count("max_candidates", min(10 * self.n, MAX_COUNT) if self.max_candidates is None
                                     else self.max_candidates))
        if self.batch_size != "auto":
            put("batch_size", positive_int("batch_size", self.batch_size))
        put("seed", _int("seed", self.seed))
        if self.check_every is not None:
            put("check_every", positive_int("check_every", self.check_every))
        if self.amp not in AMP_DTYPES:
            raise ArgumentError("amp", f"expected one of 'bf16', 'fp16' or None, got {self.amp!r}")
        put("amp", None if AMP_DTYPES[self.amp] is None else self.amp)
        put("checkpoint_every", finite_number("checkpoint_every", self.checkpoint_every, minimum=0.0))
        put("lo", finite_number("lo", self.lo))
        put("hi", finite_number("hi", self.hi))
        if not self.lo < self.hi:
            raise ArgumentError("hi", f"must be greater than lo ({self.lo:g}), got {self.hi:g}")
        _choice("result_rule", self.result_rule, RESULT_RULES)
        for name in ("cuda_graph", "channels_last", "compile_model", "spares"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (value is None and name == "cuda_graph")):
                raise ArgumentError(name, f"must be True or False, got {value!r}")

    # -- derived -------------------------------------------------------------
    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp]

    def on_device(self, device: torch.device) -> "ExtractConfig":
        """The same settings with the device-dependent defaults fixed: a harvest every
        step on CPU (nothing waits for it) and every 8 on CUDA, CUDA graphs on CUDA."""
        cuda = device.type == "cuda"
        return dataclasses.replace(
            self, check_every=self.check_every if self.check_every is not None else (8 if cuda else 1),
            cuda_graph=cuda if self.cuda_graph is None else bool(self.cuda_graph))

    def slots(self, device: torch.device) -> int:
        """The batch the search starts with on `device` (never more than there are candidates)."""
        start = AUTO_BATCH_START.get(device.type, 256) if self.batch_size == "auto" else self.batch_size
        return min(start, self.max_candidates)

    def resume_key(self, *, model_sha256: str, init: str) -> dict[str, Any]:
        """What a checkpoint must have been made with to be resumed: everything that changes
        which fingerprints come out (not the speed options, which do not)."""
        key = {"n": self.n, "k": self.k, "lr": self.lr, "max_steps": self.max_steps,
               "max_candidates": self.max_candidates, "seed": self.seed, "labels": self.labels,
               "input_shape": list(self.input_shape), "lo": self.lo, "hi": self.hi, "init": init,
               "model_sha256": model_sha256, "amp": self.amp or "none"}
        if self.result_rule != "index":  # absent by default: checkpoints of earlier versions still fit
            key["result_rule"] = self.result_rule
        return key

    def meta(self, *, num_classes: int, model_sha256: str, init: str, library_version: str,
             stats: Any, world_size: int, seed_images: int = 0) -> dict[str, Any]:
        """The fingerprint file's metadata for a run with these settings.

        seed_images: how many seed images init gave (0 for uniform noise); candidates past
        them started from a jittered copy (jittered_starts), never from a repeated point.
        """
        return {
            "k": self.k, "lr": self.lr, "max_steps": self.max_steps, "seed": self.seed, "init": init,
            "labels": self.labels, "input_shape": list(self.input_shape), "num_classes": num_classes,
            "lo": self.lo, "hi": self.hi, "model_sha256": model_sha256, "library_version": library_version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "requested": self.n, "candidates_tried": stats.tried, "rejected_float32": stats.rejected,
            "exhausted": stats.exhausted, "amp": self.amp or "none", "batch_size": self.batch_size,
            "world_size": world_size, "oom_halvings": stats.oom_halvings, "result_rule": self.result_rule,
            "seed_images": seed_images, "seed_images_used": min(seed_images, stats.tried),
            "jittered_starts": max(0, stats.tried - seed_images) if seed_images else 0,
            "duplicates_dropped": stats.duplicates,
        }


# What a caller that sets n, k, the shape, the seed and the starts itself may still set.
_RUN_OPTIONS = ("device", "progress", "checkpoint")


def check_search_options(name: str, options: Any, fixed: tuple[str, ...] = ()) -> dict:
    """`options` as a dict of extract_fingerprints keywords: ExtractConfig's fields (less the
    `fixed` ones the caller sets) and the run's (device, progress, checkpoint)."""
    if not isinstance(options, dict):
        raise ArgumentError(name, f"expected a dict of extract_fingerprints keywords, got {type(options).__name__}")
    allowed = ({f.name for f in dataclasses.fields(ExtractConfig)} | set(_RUN_OPTIONS)) - set(fixed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ArgumentError(name, f"unknown or fixed extract_fingerprints keywords {unknown}; allowed: "
                                  f"{sorted(allowed)}")
    return dict(options)
