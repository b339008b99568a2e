"""The slot buffers the search runs on: fixed storage, a live prefix of it.

All per-candidate state lives in buffers of `capacity` rows allocated once, so
every step sees the same tensors (CUDA graphs can be captured and replayed).
The step runs on the first `size` rows; `size` is one of a few bucket sizes, so
when few candidates are left the batch shrinks (finished slots cost nothing)
without a new shape per step.
"""
from __future__ import annotations

from typing import Sequence

import torch


def bucket_sizes(capacity: int) -> list[int]:
    """Batch sizes the search may run at: eighths of capacity, then halvings.

    Padding above the live count is at most 1/8 of capacity in the upper range and
    under 2x below it, while a CUDA-graph run captures at most ~8 + log2 graphs."""
    sizes = {max(1, -(-capacity * m // 8)) for m in range(1, 9)}
    s = capacity // 16
    while s >= 1:
        sizes.add(s)
        s //= 2
    return sorted(sizes)


class Slots:
    STATE = ("x", "exp_avg", "exp_avg_sq", "step", "i", "j", "active", "converged")

    def __init__(self, capacity: int, input_shape: Sequence[int], device: torch.device,
                 channels_last: bool = False):
        self.input_shape, self.channels_last = tuple(input_shape), channels_last
        self.capacity = capacity
        self.buckets = bucket_sizes(capacity)
        self.size = capacity
        shape = (capacity, *input_shape)
        fmt = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
        self.x = torch.zeros(shape, device=device).contiguous(memory_format=fmt)
        self.exp_avg = torch.zeros_like(self.x)
        self.exp_avg_sq = torch.zeros_like(self.x)
        self.step = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.i = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.j = torch.ones(capacity, dtype=torch.int64, device=device)
        self.active = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.converged = torch.zeros(capacity, dtype=torch.bool, device=device)
        # Host side: which candidate each slot holds (-1: free).
        self.candidate = [-1] * capacity

    def views(self):
        """The live prefix of every device buffer, as the step uses them."""
        s = self.size
        return (self.x[:s], self.exp_avg[:s], self.exp_avg_sq[:s], self.step[:s], self.i[:s],
                self.j[:s], self.active[:s], self.converged[:s])

    def occupied(self) -> list[int]:
        return [p for p in range(self.size) if self.candidate[p] >= 0]

    def free_positions(self) -> list[int]:
        return [p for p in range(self.size) if self.candidate[p] < 0]

    def load(self, positions: Sequence[int], indices: Sequence[int], x0, i, j) -> None:
        """Start candidates `indices` in `positions`: fresh Adam state, step 0, active."""
        pos = torch.tensor(positions, dtype=torch.int64, device=self.x.device)
        self.x.index_copy_(0, pos, x0)
        for buf in (self.exp_avg, self.exp_avg_sq):
            buf.index_fill_(0, pos, 0.0)
        self.step.index_fill_(0, pos, 0)
        self.i.index_copy_(0, pos, i)
        self.j.index_copy_(0, pos, j)
        self.active.index_fill_(0, pos, True)
        self.converged.index_fill_(0, pos, False)
        for p, c in zip(positions, indices):
            self.candidate[p] = c

    def release(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        pos = torch.tensor(positions, dtype=torch.int64, device=self.x.device)
        self.active.index_fill_(0, pos, False)
        for p in positions:
            self.candidate[p] = -1

    def resize_for(self, needed: int) -> None:
        """Move live slots to the front and set size to the smallest bucket >= needed."""
        target = next(b for b in self.buckets if b >= needed)
        if target == self.size:
            return
        if target < self.size:
            live = self.occupied()
            if any(p >= target for p in live):
                src = torch.tensor(live, dtype=torch.int64, device=self.x.device)
                for name in self.STATE:
                    buf = getattr(self, name)
                    buf[: len(live)] = buf.index_select(0, src)
                moved = [self.candidate[p] for p in live]
                self.candidate = moved + [-1] * (self.capacity - len(moved))
                self.active[len(live):].fill_(False)
        else:
            self.active[self.size:target].fill_(False)
        self.size = target

    # -- out of memory: fewer slots, nothing lost -------------------------------
    def park(self, positions: Sequence[int]) -> list[dict]:
        """Take candidates out with their whole search state (on the CPU), freeing the slots."""
        if not positions:
            return []
        pos = torch.tensor(positions, dtype=torch.int64, device=self.x.device)
        states = {name: getattr(self, name).index_select(0, pos).cpu() for name in self.STATE}
        parked = [{"candidate": self.candidate[p], **{name: states[name][n] for name in self.STATE}}
                  for n, p in enumerate(positions)]
        self.release(positions)
        return parked

    def restore(self, positions: Sequence[int], parked: Sequence[dict]) -> None:
        """Put parked candidates back, exactly as they were."""
        pos = torch.tensor(positions, dtype=torch.int64, device=self.x.device)
        for name in self.STATE:
            buf = getattr(self, name)
            buf.index_copy_(0, pos, torch.stack([p[name] for p in parked]).to(buf.device))
        for p, state in zip(positions, parked):
            self.candidate[p] = state["candidate"]

    def halved(self) -> tuple["Slots", list[dict]]:
        """New slots with half the capacity; live candidates that do not fit come back parked."""
        if self.capacity == 1:
            raise torch.OutOfMemoryError("out of memory with a single slot: the model does not fit")
        live = self.occupied()
        smaller = Slots(self.capacity // 2, self.input_shape, self.x.device, self.channels_last)
        keep, spill = live[: smaller.capacity], live[smaller.capacity:]
        spilled = self.park(spill)
        kept = self.park(keep)
        if kept:
            smaller.restore(list(range(len(kept))), kept)
        smaller.resize_for(max(1, len(kept)))
        return smaller, spilled
