"""Argument checks shared by ipguard_fast.ops and ipguard_fast.reference.

They mirror csrc/checks.h: a ValueError naming the argument. Metadata checks
are free; value checks (labels in range, i != j; step counts that can advance) read
the tensors, which costs a host sync on CUDA, so callers that own those values (the
search engine) pass check=False.
"""
from __future__ import annotations

import math

import torch
from torch._subclasses.fake_tensor import is_fake

LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
FLOAT32_MAX = torch.finfo(torch.float32).max


def _number(name: str, value) -> float:
    if isinstance(value, (str, bytes, bool)):   # float() reads "1" and True; the ops' schema takes neither
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None


def _finite(name: str, value: float) -> float:
    value = _number(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    return value


def _float32_bound(name: str, value) -> float:
    """lo or hi as the kernels use it, cast to float32: beyond its range, +-inf (which
    torch.clamp takes, where it refuses a float its float32 input cannot hold)."""
    value = _number(name, value)
    if abs(value) > FLOAT32_MAX:
        return math.copysign(math.inf if abs(value) >= FLOAT32_MAX + 2.0 ** 103 else FLOAT32_MAX, value)
    return value


def _share_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two dense tensors (each one block of memory) share any byte; False for
    tensors without memory to compare (meta, fake or functional ones, while tracing)."""
    if a.numel() == 0 or b.numel() == 0 or a.device.type == "meta" or is_fake(a) or is_fake(b):
        return False
    try:
        if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
            return False
        a0, b0 = a.data_ptr(), b.data_ptr()
    except RuntimeError:  # "Cannot access data pointer of Tensor (e.g. FakeTensor, FunctionalTensor)"
        return False
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def _check_no_aliasing(x, exp_avg, exp_avg_sq, step) -> None:
    """The op writes x, exp_avg, exp_avg_sq and step: none may share memory (read at run time)."""
    if torch.compiler.is_compiling():
        return
    for name, t, other_name, other in (("exp_avg", exp_avg, "x", x), ("exp_avg_sq", exp_avg_sq, "x", x),
                                       ("exp_avg_sq", exp_avg_sq, "exp_avg", exp_avg)):
        if _share_memory(t, other):
            raise ValueError(f"{name}: must not share memory with {other_name}")
    if step.device.type != "meta" and torch._debug_has_internal_overlap(step) == 1:
        raise ValueError("step: elements share memory (an expanded tensor?); pass a tensor of its own")


def _tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def _batch_major_dense(x: torch.Tensor) -> bool:
    """Contiguous or channels_last: each sample is one contiguous block."""
    return (x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
            or (x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)))


def logit_gap_args(logits, i, j, k, check_values: bool = True) -> float:
    logits, i, j = _tensor("logits", logits), _tensor("i", i), _tensor("j", j)
    if logits.dim() != 2:
        raise ValueError(f"logits: expected a 2-D tensor [B, C], got {logits.dim()} dimensions")
    B, C = logits.shape
    if C < 2:
        raise ValueError(f"logits: need at least 2 classes, got C = {C}")
    if logits.dtype not in LOGIT_DTYPES:
        raise ValueError(f"logits: expected float32, float16, bfloat16 or float64, got {logits.dtype}")
    for name, t in (("i", i), ("j", j)):
        if t.dim() != 1 or t.shape[0] != B:
            raise ValueError(f"{name}: expected shape [B] = [{B}], got {list(t.shape)}")
        if t.dtype != torch.int64:
            raise ValueError(f"{name}: expected int64, got {t.dtype}")
        if t.device != logits.device:
            raise ValueError(f"{name}: on {t.device} but logits on {logits.device}")
    k = _finite("k", k)
    if check_values and B > 0 and not torch.compiler.is_compiling():
        for name, t in (("i", i), ("j", j)):
            bad = (t < 0) | (t >= C)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(f"{name}: label {int(t[row])} at row {row} is outside [0, {C})")
        same = i == j
        if bool(same.any()):
            row = int(same.nonzero()[0, 0])
            raise ValueError(f"i, j: i == j == {int(i[row])} at row {row}")
    return k


def adam_args(x, grad, exp_avg, exp_avg_sq, step, active, lr, beta1, beta2, eps, lo, hi, *, aliasing: bool = True):
    """Returns the scalars as floats after checking everything. aliasing=False leaves the
    shared-memory checks to the compiled op, which makes them in C++ (checks.h) with the same
    messages: in Python they cost more than the step itself at small batches (26 us of 40)."""
    x = _tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x: expected a tensor [B, ...], got a scalar")
    if x.dtype != torch.float32:
        raise ValueError(f"x: expected float32, got {x.dtype}")
    B = x.shape[0]
    for name, t in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        t = _tensor(name, t)
        if t.shape != x.shape:
            raise ValueError(f"{name}: expected the shape of x {list(x.shape)}, got {list(t.shape)}")
        if t.dtype != torch.float32:
            raise ValueError(f"{name}: expected float32, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: on {t.device} but x on {x.device}")
    if torch.is_grad_enabled():  # an in-place update autograd cannot follow (the kernels have none)
        for name, t in (("x", x), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            if t.requires_grad:
                raise ValueError(f"{name}: requires grad; run the step under torch.no_grad()")
    if not _batch_major_dense(x):
        raise ValueError("x: must be dense with the batch as its outermost dimension (contiguous or channels_last)")
    for name, t in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if t.stride() != x.stride():
            raise ValueError(f"{name}: must have the strides of x (allocate it with torch.zeros_like(x))")
    step, active = _tensor("step", step), _tensor("active", active)
    if step.dim() != 1 or step.shape[0] != B:
        raise ValueError(f"step: expected shape [B] = [{B}], got {list(step.shape)}")
    if step.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"step: expected int64 or int32, got {step.dtype}")
    if active.dim() != 1 or active.shape[0] != B:
        raise ValueError(f"active: expected shape [B] = [{B}], got {list(active.shape)}")
    if active.dtype != torch.bool:
        raise ValueError(f"active: expected bool, got {active.dtype}")
    for name, t in (("step", step), ("active", active)):
        if t.device != x.device:
            raise ValueError(f"{name}: on {t.device} but x on {x.device}")
    if aliasing:
        _check_no_aliasing(x, exp_avg, exp_avg_sq, step)
    lr = _finite("lr", lr)
    if lr < 0:
        raise ValueError(f"lr: must be >= 0, got {lr}")
    beta1, beta2 = _finite("beta1", beta1), _finite("beta2", beta2)
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= b < 1:
            raise ValueError(f"{name}: must be in [0, 1), got {b}")
    if lr / (1 - beta1) >= FLOAT32_MAX + 2.0 ** 103:  # the first step's size, inf in float32: inf * 0 is NaN
        raise ValueError(f"lr: {lr} with beta1 = {beta1} makes the first step's size lr / (1 - beta1) overflow "
                         f"float32 (the kernels' type); need lr / (1 - beta1) <= {FLOAT32_MAX:.7g}")
    eps = _finite("eps", eps)
    if eps <= 0:
        raise ValueError(f"eps: must be > 0, got {eps}")
    if eps <= 2.0 ** -150:  # float32 rounds it to 0: a zero gradient would divide 0 by 0
        raise ValueError(f"eps: {eps} is 0 in float32 (the kernels' type); need at least 1.4e-45")
    lo, hi = _float32_bound("lo", lo), _float32_bound("hi", hi)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"lo, hi: need lo <= hi, got lo = {lo}, hi = {hi}")
    return lr, beta1, beta2, eps, lo, hi


def adam_step_values(step: torch.Tensor, active: torch.Tensor) -> None:
    """Every active sample's step count must advance to a count Adam can use: from >= 0 to
    at most the dtype's maximum. A negative count makes the bias corrections 1 - beta^t zero
    or negative, so the update is NaN in all three implementations; at the maximum the
    increment wraps to a negative one. Inactive samples are not advanced, so not checked.
    Reads the values: a host sync on CUDA (callers that own the counts pass check=False)."""
    if torch.compiler.is_compiling() or step.numel() == 0 or is_fake(step):
        return
    top = torch.iinfo(step.dtype).max
    for bad, problem in ((active & (step < 0), "is negative; Adam's step counts start at 0 (the update would be NaN)"),
                         (active & (step == top), f"cannot advance: the next count overflows {step.dtype}")):
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"step: count {int(step[row])} at row {row} {problem}")
