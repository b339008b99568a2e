"""The two fused ops every search step runs, compiled when available.

`logit_gap_loss` and `boundary_adam_step_` dispatch to torch.ops.ipguard.*
(C++ on CPU, CUDA on GPU; csrc/) and fall back to the pure-PyTorch reference
(reference.py) when the library is not built or IPGUARD_FAST_FORCE_REFERENCE=1.
This module also registers the ops' fake (meta) kernels, so torch.compile
traces them, and the loss's autograd formula.
"""
from __future__ import annotations

import torch

from . import _checks, reference
from ._extension import force_reference, has_extension, use_compiled

__all__ = ["logit_gap_loss", "boundary_adam_step_", "has_extension", "cpu_capability"]


def _register_python_parts() -> None:
    """Fake kernels and autograd for the compiled ops (needs the library loaded)."""

    @torch.library.register_fake("ipguard::logit_gap_loss")
    def _(logits, i, j, k):
        loss_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        B, C = logits.shape
        return logits.new_empty((B,), dtype=loss_dtype), logits.new_empty((B, C))

    @torch.library.register_fake("ipguard::boundary_adam_step_")
    def _(x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi):
        return None

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_loss, _grad_of_grad):
        (grad_logits,) = ctx.saved_tensors
        if grad_loss is None:
            return None, None, None, None
        return (grad_loss[:, None] * grad_logits).to(grad_logits.dtype), None, None, None

    torch.library.register_autograd("ipguard::logit_gap_loss", backward, setup_context=setup_context)


if has_extension():
    _register_python_parts()


def logit_gap_loss(logits: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float, *, check: bool = True):
    """IPGuard's loss on logits [B, C] and its gradient w.r.t. the logits.

    loss = relu(g_i - g_j + k) + relu(g_t* - g_i), t* the runner-up over the
    classes other than i and j (lowest index on ties; C == 2: no second term).
    Math in float32 (float64 for float64 logits). Returns (loss [B], grad
    [B, C] in the logits' dtype). Non-finite rows: loss NaN, zero grad.
    Differentiable w.r.t. logits: d loss / d logits = grad_out[:, None] * grad.

    check=False skips the label-value checks (i, j in [0, C), i != j), which
    cost a host sync on CUDA; the kernels still never read out of bounds (a bad
    row gets a NaN loss).
    """
    if not use_compiled():
        return reference.logit_gap_loss(logits, i, j, k, check=check)
    k = _checks.logit_gap_args(logits, i, j, k, check_values=check)
    return torch.ops.ipguard.logit_gap_loss(logits, i, j, k)


def boundary_adam_step_(x, grad, exp_avg, exp_avg_sq, step, active, lr=0.01, beta1=0.9,
                        beta2=0.999, eps=1e-8, lo=0.0, hi=1.0, *, check: bool = True) -> None:
    """Per-sample Adam step on the input batch x, then clamp to [lo, hi]; in place.

    x, grad, exp_avg, exp_avg_sq: float32 [B, ...] (grad any strides); step [B]
    int64/int32; active [B] bool. Active samples advance step and take
    torch.optim.Adam's update with their own step count; inactive samples stay
    bit-identical.

    check=False skips the step-count check (every active count >= 0 and able to
    advance), which costs a host sync on CUDA: so called, the op never syncs and is
    safe inside a CUDA graph, and an active negative count gives that sample NaN in x
    (the kernels compute Adam's formula as given, as torch.ops.ipguard's op always does).
    """
    if not use_compiled():
        return reference.boundary_adam_step_(x, grad, exp_avg, exp_avg_sq, step, active,
                                             lr, beta1, beta2, eps, lo, hi, check=check)
    lr, beta1, beta2, eps, lo, hi = _checks.adam_args(
        x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi, aliasing=False)
    if check:
        _checks.adam_step_values(step, active)
    torch.ops.ipguard.boundary_adam_step_(x, grad, exp_avg, exp_avg_sq, step, active,
                                          lr, beta1, beta2, eps, lo, hi)
    if not torch.compiler.is_compiling():
        # The kernels write through data pointers: tell autograd, as the reference's
        # copy_ does, so that a graph that saved one of these tensors fails loudly.
        torch.autograd.graph.increment_version((x, exp_avg, exp_avg_sq, step))


def cpu_capability() -> str | None:
    """Which build of the compiled CPU loss kernels runs: "avx2" or "default".

    Chosen once, when the library loads, by the CPU's features;
    IPGUARD_FAST_CPU_CAPABILITY=default|avx2 forces one (tests, A/B runs). None
    when the compiled ops are not in use (not built, or IPGUARD_FAST_FORCE_REFERENCE=1).
    """
    if force_reference() or not has_extension():
        return None
    return torch.ops.ipguard._cpu_capability()
