"""Sharing one search between torch.distributed ranks (torchrun), or none.

Rank r owns the candidate indices r, r + W, r + 2W, ... (W ranks). After every
harvest the ranks exchange what finished (index, accepted, image digest) and what is still
running, so each holds the same global view and takes the same decisions: when
the first n accepted candidates by index are known, every rank stops at the
same harvest. Since a candidate depends only on (seed, index), the accepted set
is the one a single process finds, whatever W is (up to floating-point noise).
Payloads are small Python lists of our own ranks (all_gather_object); the
fingerprint images travel once, at the end.
"""
from __future__ import annotations

import math
import os
from datetime import timedelta

import torch.distributed as dist

from .._files import short_error
from .._validate import ArgumentError

__all__ = ["JOIN_TIMEOUT_VARIABLE", "Communicator", "SingleProcess", "TorchDistributed", "communicator",
           "join_process_group", "join_timeout", "torchrun_ranks"]

JOIN_TIMEOUT_VARIABLE = "IPGUARD_FAST_JOIN_TIMEOUT"
DEFAULT_JOIN_TIMEOUT = 300.0   # seconds; torch's own wait is the collectives' (30 min with gloo)
_MAX_JOIN_TIMEOUT = 7 * 86400.0


class Communicator:
    """The ranks of one run: `exchange` gives every rank the list of every rank's payload."""

    rank, world = 0, 1

    def exchange(self, payload) -> list:
        return [payload]

    def gather_dict(self, local: dict) -> dict:
        """Every rank's `local` dict merged into one, the same on every rank (ranks hold
        disjoint keys; on a shared key the highest rank's value wins)."""
        merged = {}
        for part in self.exchange(local):
            merged.update(part)
        return merged

    def agree(self, settings: dict) -> None:
        """Refuse, on every rank alike, a run whose ranks were given different `settings`
        (argument name -> value): they would merge the work of different runs into one
        result. Every rank sees every rank's settings, so all raise the same error (no rank
        is left waiting in a collective); the first argument that differs is named."""
        if self.world == 1:
            return
        views = self.exchange(settings)
        for rank, view in enumerate(views):
            for name in dict.fromkeys([*views[0], *view]):
                if view.get(name) != views[0].get(name):
                    raise ArgumentError(name, f"rank {rank} was given {_shown(view.get(name))}, rank 0 "
                                              f"{_shown(views[0].get(name))}: every torchrun rank must run the "
                                              "same command on the same inputs")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class SingleProcess(Communicator):
    """One process: nothing to share."""


class TorchDistributed(Communicator):
    """The default process group (gloo on CPU, nccl on GPU), as torchrun sets it up."""

    def __init__(self):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def exchange(self, payload) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, payload)
        return out


def communicator() -> Communicator:
    """The process group when one is initialised with several ranks, else a no-op."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributed()
    return SingleProcess()


def torchrun_ranks() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from the environment torchrun sets ((0, 1) where it is unset),
    checked: a rank outside [0, WORLD_SIZE) would wait for its peers forever."""
    values = {}
    for name, default in (("WORLD_SIZE", "1"), ("RANK", "0")):
        text = os.environ.get(name, default)
        try:
            values[name] = int(text)
        except ValueError:
            raise ArgumentError(name, f"expected an int in this environment variable, got {text!r}") from None
    if values["WORLD_SIZE"] < 1:
        raise ArgumentError("WORLD_SIZE", f"expected a positive int, got {values['WORLD_SIZE']}")
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ArgumentError("RANK", f"expected a rank in [0, WORLD_SIZE={values['WORLD_SIZE']}), got {values['RANK']}")
    return values["RANK"], values["WORLD_SIZE"]


def join_timeout() -> float:
    """Seconds a rank waits for all the others to join the process group: IPGUARD_FAST_JOIN_TIMEOUT,
    default 300 (a rank that never starts ends the run then, not after torch's 30 minutes)."""
    text = os.environ.get(JOIN_TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_JOIN_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= _MAX_JOIN_TIMEOUT:
        raise ArgumentError(JOIN_TIMEOUT_VARIABLE, f"expected seconds in (0, {_MAX_JOIN_TIMEOUT:g}] in this "
                                                   f"environment variable, got {text!r}")
    return value


def join_process_group(backend: str) -> None:
    """``init_process_group(backend)``, its rendezvous bounded by `join_timeout`; the collectives then
    keep torch's default timeout for the backend (30 min with gloo, 10 with nccl), since a rank may
    wait long for another legitimately (rank 0 measuring the plan, an uneven share of references)."""
    from torch.distributed.constants import default_pg_nccl_timeout, default_pg_timeout

    collectives = (default_pg_nccl_timeout if backend == "nccl" else None) or default_pg_timeout
    seconds = join_timeout()
    set_timeout = getattr(dist, "set_timeout", None)   # an older torch without it: the collectives' wait throughout
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=seconds) if set_timeout else collectives)
    except getattr(dist, "DistError", RuntimeError) as exc:
        ranks = os.environ.get("WORLD_SIZE")
        if not any(word in str(exc).lower() for word in ("timeout", "timed out")):   # e.g. the port in use
            raise RuntimeError(f"torchrun: the {ranks} ranks could not join: {short_error(exc)}") from exc
        raise RuntimeError(f"torchrun: the {ranks} ranks did not all join within {seconds:g} s (a rank that "
                           f"never started? {JOIN_TIMEOUT_VARIABLE} sets the wait): {short_error(exc)}") from exc
    if set_timeout:
        set_timeout(collectives)
