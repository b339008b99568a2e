"""torchattacks.CW in targeted mode: the general attack library a user would pick.

    atk = torchattacks.CW(model, c=c, kappa=k, steps=max_steps, lr=lr)
    atk.set_mode_targeted_by_label(quiet=True)
    adv = atk(x0, j)

CW optimises w in tanh space (x = (tanh(w) + 1) / 2) with Adam on
||x - x0||^2 + c * max(max_{t != j} g_t - g_j, -kappa), stops early when the total
cost rose at a check (every steps // 10 steps), and returns, per sample, the
smallest-L2 point that the model labelled j (x0 itself when there was none). Its
loss asks for a margin of kappa over every other class but does not make i the
runner-up, so its outputs can fail IPGuard's acceptance: `converged` here is
"passes ipguard_fast's float32 acceptance", the rule every method is counted with.
"""
from __future__ import annotations

import time

import torch

from ..._optional import require
from . import PeerResult, clock

DEFAULT_C = 1.0  # torchattacks' doc: "With default c, you can't easily get adversarial images. Set higher c like 1."


def _import():
    return require("torchattacks", "bench", "the torchattacks_cw peer")


def available() -> bool:
    try:
        _import()
    except ImportError:
        return False
    return True


def run(model, x0, i, j, *, k, lr, max_steps, device, c: float = DEFAULT_C,
        batch_size: int | None = None) -> PeerResult:
    """batch_size: chunks of candidates attacked one after the other (default: all at once)."""
    torchattacks = _import()
    from ...search import accept

    device = torch.device(device)
    model.to(device).eval()
    m = x0.shape[0]
    chunk = m if not batch_size else min(batch_size, m)
    # The attack calls the model once per Adam step: count and time those calls.
    calls: list[float] = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(time.perf_counter()))
    outs, per_chunk_calls = [], []
    try:
        start = clock(device)
        for s in range(0, m, chunk):
            before = len(calls)
            atk = torchattacks.CW(model, c=c, kappa=k, steps=max_steps, lr=lr)
            atk.set_mode_targeted_by_label(quiet=True)
            outs.append(atk(x0[s : s + chunk].to(device), j[s : s + chunk].to(device)).detach())
            per_chunk_calls.append(len(calls) - before)
        seconds = clock(device) - start
    finally:
        hook.remove()
        model.zero_grad()
    images = torch.cat(outs).float()
    ok, _ = accept(model, images, i.to(device), j.to(device), k)
    steps = torch.cat([torch.full((min(chunk, m - s),), n, dtype=torch.int64)
                       for s, n in zip(range(0, m, chunk), per_chunk_calls)])
    if device.type == "cuda":
        # Without a sync per step the host intervals are enqueue times: use the mean.
        step_seconds = [seconds / max(1, len(calls))] * len(calls)
    else:
        step_seconds = [b - a for a, b in zip(calls, calls[1:])]
    return PeerResult(images.cpu(), ok.cpu(), steps, seconds, len(calls), step_seconds, batch_size=chunk,
                      notes=f"c={c}; early stop at a cost rise; converged = passes float32 acceptance")
