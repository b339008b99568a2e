"""The float32 acceptance test every fingerprint must pass.

Whatever precision the search ran in, a candidate is accepted only if, at its
final clamped point, a float32 forward (TF32 off) gives loss exactly 0 and the
owner's label j. The benchmark peers are counted with this same rule.
"""
from __future__ import annotations

import contextlib

import torch

from .. import reference

__all__ = ["accept", "owner_label_margin", "strict_float32"]


@contextlib.contextmanager
def strict_float32():
    """TF32 off for matmuls and convolutions, restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def owner_label_margin(logits: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The margin of label j in each row of logits [m, C]: g_j - max_{t != j} g_t, shape [m].

    Positive where the model says j. Differentiable (selection's refinement climbs it);
    acceptance records it as each fingerprint's margin."""
    g_j = logits.gather(1, j[:, None]).squeeze(1)
    others = logits.scatter(1, j[:, None], float("-inf"))
    return g_j - others.max(dim=1).values


@torch.no_grad()
def accept(model, x: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float, batch_size: int = 256):
    """-> (accepted [m] bool, margins [m] float32), evaluated in float32 in batches."""
    accepted, margins = [], []
    with strict_float32():
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            logits = model(x[sl].float()).float()
            loss, _ = reference.logit_gap_loss(logits, i[sl], j[sl], k, check=False)
            accepted.append((loss == 0) & (logits.argmax(dim=1) == j[sl]))
            margins.append(owner_label_margin(logits, j[sl]))
    if not accepted:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(accepted), torch.cat(margins)
