"""The public-reimplementation loop: one candidate at a time.

What the open IPGuard reimplementations do: for each candidate, x = x0.clone()
.requires_grad_(), torch.optim.Adam([x], lr), the model's parameters left requiring
grad, the loss from plain torch ops on the logits, loss.backward(), opt.step(),
x.data.clamp_(0, 1); stop when the loss (computed before the step) is 0 or after
max_steps steps. Like the engine, a candidate's loss is looked at on max_steps + 1
points (after 0 .. max_steps updates).
"""
from __future__ import annotations

import time

import torch

from . import PeerResult, clock, ipguard_loss


def run(model, x0, i, j, *, k, lr, max_steps, device) -> PeerResult:
    device = torch.device(device)
    model.to(device).eval()
    m = x0.shape[0]
    images = torch.empty_like(x0, device="cpu")
    converged = torch.zeros(m, dtype=torch.bool)
    steps = torch.zeros(m, dtype=torch.int64)
    step_seconds: list[float] = []
    start = clock(device)
    for n in range(m):
        x = x0[n : n + 1].clone().to(device).requires_grad_()
        target_i, target_j = i[n : n + 1].to(device), j[n : n + 1].to(device)
        opt = torch.optim.Adam([x], lr=lr)
        for step in range(max_steps + 1):
            t = time.perf_counter()
            opt.zero_grad()
            model.zero_grad()
            logits = model(x)
            loss = ipguard_loss(logits, target_i, target_j, k).sum()
            if loss.item() == 0:
                converged[n] = True
                break
            if step == max_steps:
                break
            loss.backward()
            opt.step()
            x.data.clamp_(0, 1)
            steps[n] += 1
            step_seconds.append(time.perf_counter() - t)  # .item() above synchronised the device
        images[n] = x.detach()[0].cpu()
    seconds = clock(device) - start
    model.zero_grad()
    return PeerResult(images, converged, steps, seconds, int(steps.sum()), step_seconds, batch_size=1)
