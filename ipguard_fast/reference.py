"""Pure-PyTorch implementations of ipguard's two ops.

Both the fallback when the compiled library is missing and the oracle the
compiled kernels are tested against. Written the way a careful PyTorch user
would: batched, no Python loops over samples, no host synchronisation.
The contracts are in ops.py; the compiled kernels' arithmetic is csrc/boundary_math.h.
"""
from __future__ import annotations

import torch

from . import _checks


def _logit_gap_loss(logits: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float):
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    g = logits.to(acc)
    B, C = g.shape
    if B == 0:
        return g.new_empty(0), torch.empty_like(logits, memory_format=torch.contiguous_format)
    # Labels outside [0, C) or i == j (possible only with check=False) make a NaN row, as
    # in the CUDA kernel: never an out-of-range gather (a device-side assert on CUDA).
    labels_ok = (i >= 0) & (i < C) & (j >= 0) & (j < C) & (i != j)
    i, j = torch.where(labels_ok, i, 0), torch.where(labels_ok, j, 1)
    i_col, j_col = i[:, None], j[:, None]
    g_i = g.gather(1, i_col).squeeze(1)
    g_j = g.gather(1, j_col).squeeze(1)
    first = g_i - g_j + k
    if C > 2:
        # Runner-up t* over t not in {i, j}; torch.max returns the first maximal index.
        others = g.scatter(1, i_col, float("-inf")).scatter_(1, j_col, float("-inf"))
        g_t, t_star = others.max(dim=1)
        second = g_t - g_i
    else:
        t_star = i  # unused: the second term is identically 0
        second = torch.zeros_like(first)
    first_on, second_on = first > 0, second > 0
    loss = torch.where(first_on, first, 0.0) + torch.where(second_on, second, 0.0)
    a1, a2 = first_on.to(acc), second_on.to(acc)
    grad = torch.zeros_like(g)
    grad.scatter_add_(1, i_col, (a1 - a2)[:, None])
    grad.scatter_add_(1, j_col, -a1[:, None])
    if C > 2:
        grad.scatter_add_(1, t_star[:, None], a2[:, None])
    finite = torch.isfinite(g).all(dim=1) & labels_ok
    loss = torch.where(finite, loss, float("nan"))
    grad = torch.where(finite[:, None], grad, 0.0)
    return loss, grad.to(logits.dtype)


def logit_gap_loss(logits: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float, *, check: bool = True):
    """IPGuard's loss on logits [B, C] and its gradient w.r.t. the logits.

    loss = relu(g_i - g_j + k) + relu(g_t* - g_i), t* = argmax over t not in {i, j}
    (lowest index on ties; no second term when C == 2). Returns (loss [B] float32,
    or float64 for float64 logits; grad [B, C] in the logits' dtype, contiguous).
    A row with any non-finite logit gets loss NaN and a zero gradient row; so does a
    row with bad labels (outside [0, C), or i == j) when check=False lets them in.
    """
    k = _checks.logit_gap_args(logits, i, j, k, check_values=check)
    return _logit_gap_loss(logits, i, j, k)


def _boundary_adam_step_(x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi):
    B = x.shape[0]
    if B == 0:
        return
    step.add_(active.to(step.dtype))
    shape = (B,) + (1,) * (x.dim() - 1)
    # Per-sample bias corrections in float64, as torch.optim.Adam does in Python floats.
    t = step.to(torch.float64)
    step_size = (lr / (1 - torch.pow(beta1, t))).to(torch.float32).view(shape)
    bc2_sqrt = torch.sqrt(1 - torch.pow(beta2, t)).to(torch.float32).view(shape)
    m = torch.lerp(exp_avg, grad, 1 - beta1)
    v = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    x_new = (x - step_size * (m / (v.sqrt() / bc2_sqrt + eps))).clamp_(lo, hi)
    mask = active.view(shape)
    # torch.where keeps the old values of inactive samples bit for bit (their
    # step count may be 0, where the bias correction divides by zero).
    x.copy_(torch.where(mask, x_new, x))
    exp_avg.copy_(torch.where(mask, m, exp_avg))
    exp_avg_sq.copy_(torch.where(mask, v, exp_avg_sq))


def boundary_adam_step_(x, grad, exp_avg, exp_avg_sq, step, active, lr=0.01, beta1=0.9,
                        beta2=0.999, eps=1e-8, lo=0.0, hi=1.0, *, check: bool = True) -> None:
    """One Adam step on the input batch x, per sample, then clamp to [lo, hi]; in place.

    For every b with active[b]: step[b] += 1, then torch.optim.Adam's update of x[b]
    with step count step[b] (no weight decay), then clamp. Inactive samples are left
    untouched bit for bit. check=False skips the step-count check (an active count below
    0 then gives x[b] NaN, as the compiled kernels do).
    """
    lr, beta1, beta2, eps, lo, hi = _checks.adam_args(
        x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi)
    if check:
        _checks.adam_step_values(step, active)
    _boundary_adam_step_(x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi)
