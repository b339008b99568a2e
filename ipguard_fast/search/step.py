"""One search step on the slots, eager or replayed from a CUDA graph.

    logits = model(x)                    (optionally under bf16/fp16 autocast)
    loss, g = logit_gap_loss(logits, i, j, k)            fused op 1
    gx = d<logits, g>/dx                  input gradient only: weights are frozen
    converged |= active & loss == 0;  active &= loss > 0 and step < max_steps
    boundary_adam_step_(x, gx, m, v, step, active, ...)  fused op 2

A candidate is frozen (active False) at the point where its loss was 0, before
Adam's momentum could move it on. Nothing here reads a value back to the host,
so a step can be queued without waiting and captured in a CUDA graph.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .. import ops
from .config import ExtractConfig

__all__ = ["SearchStep", "StepSettings"]


@dataclass(frozen=True)
class StepSettings:
    """What one step needs of the extraction's settings (plus Adam's betas and eps)."""

    k: float
    lr: float
    max_steps: int
    lo: float = 0.0
    hi: float = 1.0
    amp_dtype: torch.dtype | None = None
    cuda_graph: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @classmethod
    def from_config(cls, config: ExtractConfig) -> "StepSettings":
        """The step of an extraction with these settings (config fixed by ExtractConfig.on_device)."""
        return cls(k=config.k, lr=config.lr, max_steps=config.max_steps, lo=config.lo, hi=config.hi,
                   amp_dtype=config.amp_dtype, cuda_graph=bool(config.cuda_graph))


class SearchStep:
    """One step on `slots` with `settings`; calling it runs the step (see the module docstring).

    SearchStep.from_config builds the step the engine runs, for the engine and for the
    benchmark's instruments alike."""

    def __init__(self, model, slots, settings: StepSettings):
        self.model = model
        self.slots = slots
        self.settings = settings
        self.k, self.lr, self.max_steps, self.lo, self.hi = (settings.k, settings.lr, settings.max_steps,
                                                             settings.lo, settings.hi)
        self.betas, self.eps = settings.betas, settings.eps
        self.amp_dtype = settings.amp_dtype
        self.device = slots.x.device
        self.cuda_graph = settings.cuda_graph and self.device.type == "cuda"
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        # One memory pool for every bucket's graph: they never replay concurrently.
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None

    @classmethod
    def from_config(cls, model, slots, config: ExtractConfig) -> "SearchStep":
        """The engine's step for an extraction with these settings."""
        return cls(model, slots, StepSettings.from_config(config))

    def rebind(self, slots) -> None:
        """Run on other slots from now on (after an out-of-memory halving)."""
        self.slots = slots
        self.graphs.clear()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)

    def _eager(self) -> None:
        x, m, v, step, i, j, active, converged = self.slots.views()
        x_leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with self._autocast():
                logits = self.model(x_leaf)
            loss, g_logits = ops.logit_gap_loss(logits, i, j, self.k, check=False)
            (g_x,) = torch.autograd.grad(logits, x_leaf, g_logits)
        done = loss == 0
        converged |= active & done
        # NaN loss (non-finite logits) fails the comparison and stops the candidate too.
        active &= (loss > 0) & (step < self.max_steps)
        ops.boundary_adam_step_(x, g_x, m, v, step, active, self.lr, self.betas[0], self.betas[1],
                                self.eps, self.lo, self.hi, check=False)   # the slots' counts start at 0

    def __call__(self) -> None:
        if not self.cuda_graph:
            self._eager()
            return
        size = self.slots.size
        graph = self.graphs.get(size)
        if graph is None:
            graph = self._capture()
            self.graphs[size] = graph
        graph.replay()

    def _capture(self) -> "torch.cuda.CUDAGraph":
        # Warm up on a side stream (cuDNN/cuBLAS pick algorithms, autograd allocates),
        # on a copy of the state so the real candidates take no extra step.
        saved = [t.clone() for t in self.slots.views()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        for buf, old in zip(self.slots.views(), saved):
            buf.copy_(old)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._eager()
        return graph
