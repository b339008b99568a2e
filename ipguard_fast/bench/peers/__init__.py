"""Peers the engine is benchmarked against, each written from its public description.

Every peer has the same signature:

    run(model, x0 [m, *shape] float32, i [m], j [m], *, k, lr, max_steps, device) -> PeerResult

and solves the same candidates (x0, i, j) as the engine (the runner takes them from
the engine's CandidateSource). What a peer reports as converged is its own view;
the runner counts accepted fingerprints with ipguard_fast.search.accept, the same
float32 rule the engine uses.

- per_sample:      the loop of the public IPGuard reimplementations: one candidate at a
                   time, torch.optim.Adam on a batch of 1, loss.backward() with the
                   model's parameters requiring grad.
- eager_batched:   a careful batched eager loop: torch.optim.Adam on the batch tensor,
                   autograd.grad w.r.t. the input only, per-sample freezing by mask.
- torchattacks_cw: torchattacks.CW in targeted mode (a general attack library).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

PEERS = ("per_sample", "eager_batched", "torchattacks_cw")


@dataclass
class PeerResult:
    images: torch.Tensor        # [m, *shape] final points (on the CPU)
    converged: torch.Tensor     # [m] bool: the peer's own stopping criterion was met
    steps: torch.Tensor         # [m] int64: optimiser steps taken per candidate
    seconds: float              # wall time of the search (host-synchronised)
    steps_run: int              # loop iterations (batched steps; per_sample: summed over candidates)
    step_seconds: list = field(default_factory=list)  # per-iteration wall times, as the loop saw them
    batch_size: int = 1         # the batch one loop iteration runs on
    notes: str = ""


def ipguard_loss(logits: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float) -> torch.Tensor:
    """IPGuard's loss per row with plain torch ops, as the public code writes it:
    relu(g_i - g_j + k) + relu(max_{t != i, j} g_t - g_i)."""
    g_i = logits.gather(1, i[:, None]).squeeze(1)
    g_j = logits.gather(1, j[:, None]).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask.scatter_(1, i[:, None], True).scatter_(1, j[:, None], True)
    g_t = logits.masked_fill(mask, float("-inf")).max(dim=1).values
    return torch.relu(g_i - g_j + k) + torch.relu(g_t - g_i)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def clock(device) -> float:
    """perf_counter after a device sync: host timestamps that bound device work."""
    sync(device)
    return time.perf_counter()


def get(name: str):
    """The run() function of peer `name` (imported lazily: torchattacks is optional)."""
    if name == "per_sample":
        from .per_sample import run
    elif name == "eager_batched":
        from .eager_batched import run
    elif name == "torchattacks_cw":
        from .torchattacks_cw import run
    else:
        raise ValueError(f"name: unknown peer {name!r}; known: {', '.join(PEERS)}")
    return run
