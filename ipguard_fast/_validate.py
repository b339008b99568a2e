"""Argument checks for the public API: an ArgumentError (a ValueError) that names the argument.

One copy of each check, so every entry point words the same mistake the same way
("n: must be a positive int, got 0"). The argument's name travels as a field too
(`ArgumentError.argument`), so a front end can name its own option for it without
parsing the message. The ops' tensor checks live in _checks.py.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["ArgumentError", "MAX_IMAGE_ELEMENTS", "MAX_THREADS", "finite_number", "image_shape", "non_negative_int",
           "positive_int", "probability", "thread_count"]

MAX_IMAGE_ELEMENTS = 2**40


class ArgumentError(ValueError):
    """Bad input to the API: `argument` names what was wrong, the message reads "argument: problem"."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem

    def renamed(self, argument: str) -> "ArgumentError":
        """The same problem reported against another name (a CLI option for an API argument)."""
        return ArgumentError(argument, self.problem)


def positive_int(name: str, value: Any) -> int:
    """value as an int >= 1; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentError(name, f"must be a positive int, got {value!r}")
    return int(value)


MAX_THREADS = 4096   # torch.set_num_threads takes a C int; no machine runs more threads usefully


def thread_count(name: str, value: Any) -> int:
    """value as a thread count for torch.set_num_threads: an int in [1, MAX_THREADS]."""
    value = positive_int(name, value)
    if value > MAX_THREADS:
        raise ArgumentError(name, f"must be at most {MAX_THREADS} threads, got {value}")
    return value


def non_negative_int(name: str, value: Any) -> int:
    """value as an int >= 0; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ArgumentError(name, f"must be a non-negative int, got {value!r}")
    return int(value)


def finite_number(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """value as a finite float (>= minimum, or > 0 with positive=True); bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ArgumentError(name, f"must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ArgumentError(name, f"must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ArgumentError(name, f"must be >= {minimum:g}, got {value!r}")
    return float(value)


def probability(name: str, value: Any) -> float:
    """value as a float in [0, 1] (a threshold, a rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ArgumentError(name, f"must be a number in [0, 1], got {value!r}")
    return float(value)


def image_shape(name: str, value: Any) -> tuple[int, ...]:
    """The shape of one image without the batch axis: a non-empty sequence of positive ints."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArgumentError(name, f"expected a sequence of positive ints such as (3, 32, 32), got {value!r}")
    shape = tuple(value)
    if not shape or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ArgumentError(name, f"expected a non-empty sequence of positive ints (no batch axis), got {value!r}")
    if math.prod(shape) > MAX_IMAGE_ELEMENTS:   # a batch of them would overflow torch's 64-bit sizes
        raise ArgumentError(name, f"{math.prod(shape)} values per image is more than any image has "
                                  f"(at most 2**40), got {value!r}")
    return tuple(int(d) for d in shape)
