"""A careful batched eager loop: what a PyTorch user writes without custom ops.

The whole batch in one tensor, torch.optim.Adam([x], lr) on it, the model frozen
(eval, requires_grad False) and torch.autograd.grad(loss.sum(), x) w.r.t. the input
only. Per-sample freezing by mask: a sample whose loss hits 0 keeps that point --
its gradient is zeroed and, since Adam's momentum would still move it, its x is
restored after the step. Runs until every sample converged or max_steps steps; the
`.all()` check each step is the host sync such loops have. All samples start
together, so Adam's single step count is every live sample's own count.
"""
from __future__ import annotations

import time

import torch

from ...modules import frozen
from . import PeerResult, clock, ipguard_loss


def run(model, x0, i, j, *, k, lr, max_steps, device, batch_size: int | None = None) -> PeerResult:
    """batch_size: chunks of candidates run one after the other (default: all at once)."""
    device = torch.device(device)
    m = x0.shape[0]
    chunk = m if not batch_size else min(batch_size, m)
    parts, step_seconds, steps_run = [], [], 0
    with frozen(model.to(device)):  # eval, no parameter gradients: the engine's own freezing
        start = clock(device)
        for s in range(0, m, chunk):
            out = _search(model, x0[s : s + chunk], i[s : s + chunk], j[s : s + chunk], k, lr, max_steps,
                          device, step_seconds)
            parts.append(out)
            steps_run += out[3]
        seconds = clock(device) - start
    images, converged, steps = (torch.cat([p[n] for p in parts]) for n in range(3))
    return PeerResult(images, converged, steps, seconds, steps_run, step_seconds, batch_size=chunk)


def _search(model, x0, i, j, k, lr, max_steps, device, step_seconds):
    x = x0.clone().to(device).requires_grad_(True)
    i, j = i.to(device), j.to(device)
    opt = torch.optim.Adam([x], lr=lr)
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=device)
    steps = torch.zeros(x.shape[0], dtype=torch.int64, device=device)
    kept = torch.empty_like(x, requires_grad=False)  # the point each converged sample froze at
    row = (-1,) + (1,) * (x.dim() - 1)
    iterations = 0
    for step in range(max_steps + 1):
        t = time.perf_counter()
        logits = model(x)
        loss = ipguard_loss(logits, i, j, k)
        with torch.no_grad():
            newly = (loss == 0) & ~done
            kept.copy_(torch.where(newly.view(row), x, kept))
            done |= newly
        if bool(done.all()) or step == max_steps:  # the host check
            break
        (grad,) = torch.autograd.grad(loss.sum(), x)
        x.grad = grad.masked_fill_(done.view(row), 0.0)
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
            x.copy_(torch.where(done.view(row), kept, x))
            steps += (~done).long()
        iterations += 1
        # The next iteration's .all() waits for this one's work, so on CUDA the times
        # of consecutive iterations add up to the device time; their median is honest.
        step_seconds.append(time.perf_counter() - t)
    return x.detach().cpu(), done.cpu(), steps.cpu(), iterations
