"""Argument checks for the public API: a ValueError whose message starts with the argument's name.

One copy of each check, so every entry point words the same mistake the same way
("n: must be a positive int, got 0"). The ops' tensor checks live in _checks.py.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["finite_number", "image_shape", "positive_int", "probability"]


def positive_int(name: str, value: Any) -> int:
    """value as an int >= 1; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: must be a positive int, got {value!r}")
    return int(value)


def finite_number(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """value as a finite float (>= minimum, or > 0 with positive=True); bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum:g}, got {value!r}")
    return float(value)


def probability(name: str, value: Any) -> float:
    """value as a float in [0, 1] (a threshold, a rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name}: must be a number in [0, 1], got {value!r}")
    return float(value)


def image_shape(name: str, value: Any) -> tuple[int, ...]:
    """The shape of one image without the batch axis: a non-empty sequence of positive ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}: expected a sequence of positive ints such as (3, 32, 32), got {value!r}")
    shape = tuple(value)
    if not shape or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints (no batch axis), got {value!r}")
    return tuple(int(d) for d in shape)
