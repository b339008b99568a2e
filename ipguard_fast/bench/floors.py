"""The best the bare model can do for one search step's worth of work: forward plus the
gradient with respect to the input, at a given batch.

The engine's step is judged against a floor; a floor that is itself slow hides the real
gap. So besides the plain floor (the model as given, in the engine's dtype and layout)
this measures what a careful user could get out of the model alone, and reports the
best:

- ``plain``: eager, float32, contiguous;
- ``cudnn_benchmark`` (CUDA): cuDNN picks its fastest algorithms for these shapes;
- ``channels_last``: NHWC weights and input;
- ``bf16`` / ``bf16_channels_last`` (CUDA): autocast to bfloat16;
- ``compiled``: ``torch.compile`` of the model (forward and backward graphs);
- ``cuda_graph`` (CUDA): the best eager variant captured and replayed as a CUDA graph.

Every variant runs on a private copy of the model, so the caller's model (and its
layout) is never touched, and a variant that fails (a model torch.compile cannot trace,
say) is reported with its error instead of stopping the others.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
from typing import Callable

import torch

from ..modules import frozen
from .measure import timed

__all__ = ["best_floor"]


def best_floor(model, input_shape, batch: int, num_classes: int, device: torch.device, reps: int = 10,
               include_compile: bool = True) -> dict:
    """{"variants": {name: median seconds or {"error": ...}}, "best": name, "best_s": seconds}."""
    cuda = device.type == "cuda"
    problem = _Problem(model, tuple(input_shape), batch, num_classes, device, reps)
    variants: dict[str, _Variant] = {
        "plain": _Variant(),
        "channels_last": _Variant(channels_last=True),
    }
    if cuda:
        variants.update({"cudnn_benchmark": _Variant(cudnn_benchmark=True),
                         "bf16": _Variant(cudnn_benchmark=True, amp=torch.bfloat16),
                         "bf16_channels_last": _Variant(cudnn_benchmark=True, amp=torch.bfloat16, channels_last=True)})
    if include_compile:
        variants["compiled"] = _Variant(compile=True)
    results: dict[str, object] = {}
    for name, variant in variants.items():
        results[name] = _measure(problem, variant)
    if cuda:
        eager = [n for n in ("plain", "cudnn_benchmark", "channels_last", "bf16", "bf16_channels_last")
                 if isinstance(results.get(n), float)]
        if eager:
            fastest = min(eager, key=lambda n: results[n])
            results["cuda_graph"] = _measure(problem, dataclasses.replace(variants[fastest], cuda_graph=True))
    timings = {n: v for n, v in results.items() if isinstance(v, float)}
    best = min(timings, key=timings.get) if timings else None
    return {"batch": batch, "variants": results, "best": best, "best_s": timings.get(best)}


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What is measured: one search step of `model` at `batch`, the median of `reps`."""

    model: torch.nn.Module
    input_shape: tuple
    batch: int
    num_classes: int
    device: torch.device
    reps: int


@dataclasses.dataclass(frozen=True)
class _Variant:
    """How it runs: the layout, autocast, cuDNN's autotuner, torch.compile, a CUDA graph."""

    channels_last: bool = False
    amp: torch.dtype | None = None
    cudnn_benchmark: bool = False
    compile: bool = False  # noqa: A003 - torch's word
    cuda_graph: bool = False


def _measure(p: _Problem, v: _Variant):
    try:
        with _cudnn_benchmark(v.cudnn_benchmark):
            copy_ = copy.deepcopy(p.model).to(p.device)
            fmt = torch.channels_last if v.channels_last and len(p.input_shape) == 3 else torch.contiguous_format
            copy_.to(memory_format=fmt)
            with frozen(copy_):
                run = copy_ if not v.compile else torch.compile(copy_, dynamic=False)
                step = _step(run, p.input_shape, p.batch, p.num_classes, p.device, fmt, v.amp)
                for _ in range(3):  # warm-up: algorithm choice, compilation, allocator
                    step()
                if v.cuda_graph:
                    step = _captured(step)
                return statistics.median(timed(step, p.device) for _ in range(p.reps))
    except Exception as exc:  # one variant failing must not stop the others
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def _step(model, input_shape, batch, num_classes, device, fmt, amp) -> Callable[[], None]:
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(1)).to(device)
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    g = torch.randn(batch, num_classes, generator=torch.Generator().manual_seed(2)).to(device)

    def step() -> None:
        with torch.enable_grad():
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                logits = model(x)
            torch.autograd.grad(logits, x, g.to(logits.dtype))

    return step


def _captured(step: Callable[[], None]) -> Callable[[], None]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


@contextlib.contextmanager
def _cudnn_benchmark(on: bool):
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on or was
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was
