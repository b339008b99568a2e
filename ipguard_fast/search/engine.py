"""The batched boundary-search engine: continuous batching over fixed slots.

Candidates are launched in index order into free slots, stepped together, and
harvested every `check_every` steps (the only host sync): converged ones go to
float32 acceptance, exhausted ones fail, and the freed slots take new
candidates. When nothing is left to launch, the batch shrinks to a bucket size
just above the live count, so finished slots cost nothing.

The result is the first n accepted candidates *by candidate index* (ledger.py),
and each candidate depends only on (seed, index): the fingerprints do not depend on
batch_size, on how candidates were scheduled, or on how many torch.distributed
ranks share the stream (distributed.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .acceptance import accept
from .candidates import CandidateSource
from .config import ExtractConfig
from .distributed import SingleProcess
from .ledger import CPU_SPARE_BREAK_EVEN, CandidateLedger, Outcome
from .slots import Slots
from .step import SearchStep

__all__ = ["Outcome", "SearchEngine", "SearchStats"]


@dataclass
class SearchStats:
    """What one extraction did: counts of candidates and steps, and where the time went.

    run_extraction returns it next to the fingerprints (Extraction.stats); the file's
    metadata keeps the counts that describe the result (candidates_tried, ...)."""

    tried: int = 0           # candidates started, over the whole extraction (a resume included)
    launched: int = 0        # candidates started by this call
    accepted: int = 0
    rejected: int = 0        # converged in the search precision, failed float32 acceptance
    exhausted: int = 0       # hit max_steps (or non-finite logits) without converging
    steps_run: int = 0       # batched steps executed
    slot_steps: int = 0      # sum over steps of the batch size run
    harvests: int = 0
    oom_halvings: int = 0    # out-of-memory errors answered by halving the batch
    duplicates: int = 0      # accepted, but an earlier candidate holds the same image
    batch_sizes: dict = field(default_factory=dict)    # batch size -> harvest periods run at it
    batch_seconds: dict = field(default_factory=dict)  # batch size -> seconds spent stepping at it
    batch_steps: dict = field(default_factory=dict)    # batch size -> steps run at it


class SearchEngine:
    """Runs one extraction. `config` must be fixed for the device (ExtractConfig.on_device).

    model: what the search steps run (possibly torch.compile'd); acceptance_model: the
    plain eager model acceptance runs in float32 (default: model). resume: (finished,
    outcomes) from a checkpoint; on_checkpoint(finished, outcomes) is called at most every
    config.checkpoint_every seconds, and on interrupt.
    """

    def __init__(self, model, source: CandidateSource, config: ExtractConfig, device: torch.device, *,
                 comm=None, progress=None, acceptance_model=None, resume=None, on_checkpoint=None):
        self.model, self.source, self.config = model, source, config
        self.acceptance_model = acceptance_model or model
        self.comm = comm or SingleProcess()
        self.slots = Slots(config.slots(device), source.input_shape, device, channels_last=config.channels_last)
        self.step = SearchStep.from_config(model, self.slots, config)
        # On CUDA a batch costs about the same whether its slots are full or not: spares
        # always, and the bucket filled. On CPU each slot costs its share: spares only from
        # the failure rate at which they pay for themselves.
        self.ledger = CandidateLedger(config.n, config.max_candidates, self.comm.rank, self.comm.world, resume,
                                      rule=config.result_rule, spares=config.spares,
                                      spare_break_even=0.0 if device.type == "cuda" else CPU_SPARE_BREAK_EVEN)
        self.fill_batch = device.type == "cuda" and config.spares
        self.parked: list[dict] = []   # candidates taken out after an out-of-memory, state kept
        self.stats = SearchStats()
        self.progress = progress
        if resume is not None:
            # Candidates finished before the interruption count as tried (the file's
            # candidates_tried covers the whole extraction, not only this run).
            self.stats.tried = len(self.ledger.finished)
            if progress is not None:
                progress.update(min(config.n, self.ledger.accepted_count))
        self.on_checkpoint = on_checkpoint
        self.last_checkpoint = time.monotonic()

    # -- scheduling ---------------------------------------------------------
    def _refill(self) -> None:
        in_flight = sum(1 for c in self.slots.candidate if c >= 0)
        back = self.parked[: self.slots.capacity - in_flight]
        if back:  # back from an out-of-memory: they go first, as they were
            self.parked = self.parked[len(back):]
            self.slots.resize_for(in_flight + len(back))
            self.slots.restore(self.slots.free_positions()[: len(back)], back)
            in_flight += len(back)
        count = self.ledger.launch_count(self.slots.capacity - in_flight) if not self.parked else 0
        count = self._filled(in_flight, count)
        self.slots.resize_for(max(1, in_flight + count))
        if count > 0:
            positions = self.slots.free_positions()[:count]
            indices = self.ledger.take(count)
            self.stats.tried += count
            self.stats.launched += count
            x0, i, j = self.source.make(indices)
            self.slots.load(positions, indices, x0, i, j)
        self._exchange()

    def _filled(self, in_flight: int, count: int) -> int:
        """`count`, raised on CUDA to fill the bucket the batch runs at anyway."""
        if not self.fill_batch or self.parked or self.ledger.accepted_count >= self.config.n or in_flight + count == 0:
            return count
        bucket = next(b for b in self.slots.buckets if b >= in_flight + count)
        return max(count, min(bucket - in_flight, self.ledger.stream_left()))

    def _exchange(self) -> None:
        """Share what finished and what runs with the other ranks (a no-op alone)."""
        running = [c for c in self.slots.candidate if c >= 0] + [p["candidate"] for p in self.parked]
        self.ledger.merge(self.comm.exchange(self.ledger.share(running)))

    # -- harvesting ---------------------------------------------------------
    def _harvest(self) -> None:
        self.stats.harvests += 1
        s = self.slots
        # The host sync: both flag vectors in one transfer.
        active, converged = torch.stack((s.active[: s.size], s.converged[: s.size])).tolist()
        finished = [p for p in range(s.size) if s.candidate[p] >= 0 and not active[p]]
        if not finished:
            return
        done = [p for p in finished if converged[p]]
        if done:
            self._accept(done)
        for p in finished:
            if not converged[p]:
                self.ledger.record(s.candidate[p], Outcome(False))
                self.stats.exhausted += 1
        s.release(finished)

    def _accept(self, positions: list[int]) -> None:
        """Float32 acceptance of the converged candidates in `positions`."""
        s = self.slots
        pos = torch.tensor(positions, device=s.x.device)
        x, i, j = s.x.index_select(0, pos), s.i.index_select(0, pos), s.j.index_select(0, pos)
        ok, margins = accept(self.acceptance_model, x, i, j, self.config.k)
        steps = s.step.index_select(0, pos).tolist()
        x_cpu, i_l, j_l = x.float().cpu().contiguous(), i.tolist(), j.tolist()
        for n, p in enumerate(positions):
            if bool(ok[n]):
                self.ledger.record(s.candidate[p], Outcome(True, x_cpu[n], i_l[n], j_l[n], float(margins[n]),
                                                           steps[n]))
                self.stats.accepted += 1
                if self.progress is not None:
                    self.progress.update(1)
            else:
                self.ledger.record(s.candidate[p], Outcome(False))
                self.stats.rejected += 1

    def _halve_batch(self) -> None:
        """Out of memory: continue on half the slots. A failed step is harmless to
        repeat (its only writes before the fused update, the active/converged
        flags, are idempotent, and the update itself allocates nothing), so every
        candidate keeps its exact state, in the smaller slots or parked until one
        frees up."""
        self.slots, spilled = self.slots.halved()
        self.parked = spilled + self.parked
        self.step.rebind(self.slots)
        self.stats.oom_halvings += 1
        if self.slots.x.is_cuda:
            torch.cuda.empty_cache()

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if self.on_checkpoint is None:
            return
        if force or time.monotonic() - self.last_checkpoint >= self.config.checkpoint_every:
            self.on_checkpoint(self.ledger.finished_here(), self.ledger.outcomes)
            self.last_checkpoint = time.monotonic()

    # -- the loop -----------------------------------------------------------
    def run(self) -> list[Outcome]:
        try:
            return self._run()
        except KeyboardInterrupt:
            self._maybe_checkpoint(force=True)  # keep what finished, then stop as asked
            raise

    def _run(self) -> list[Outcome]:
        self._refill()
        while not self.ledger.determined():
            if any(c >= 0 for c in self.slots.candidate):
                size, started = self.slots.size, time.perf_counter()
                self._steps()
                self._harvest()  # the host sync: the time includes the device's work
                self.stats.batch_seconds[size] = self.stats.batch_seconds.get(size, 0.0) + (
                    time.perf_counter() - started)
            if self.progress is not None:
                self.progress.set_postfix(tried=self.stats.tried, batch=self.slots.size, refresh=False)
            self._refill()  # also exchanges the harvest with the other ranks
            self._maybe_checkpoint()
        result = self.ledger.result()
        own = {c: self.ledger.outcomes[c] for c in result if c in self.ledger.outcomes}
        every_rank = self.comm.gather_dict(own)
        self._sum_stats_over_ranks()
        self.stats.duplicates = self.ledger.duplicates()  # the global view: the same on every rank
        return [every_rank[c] for c in result]

    def _steps(self) -> None:
        """check_every steps on the live slots (fewer after an out-of-memory halving)."""
        for _ in range(self.config.check_every):
            try:
                self.step()
            except torch.OutOfMemoryError:
                self._halve_batch()
                break
            self.stats.steps_run += 1
            self.stats.slot_steps += self.slots.size
            self.stats.batch_steps[self.slots.size] = self.stats.batch_steps.get(self.slots.size, 0) + 1
        self.stats.batch_sizes[self.slots.size] = self.stats.batch_sizes.get(self.slots.size, 0) + 1

    def _sum_stats_over_ranks(self) -> None:
        if self.comm.world == 1:
            return
        counts = ("tried", "launched", "accepted", "rejected", "exhausted", "steps_run", "slot_steps", "harvests")
        views = self.comm.exchange({name: getattr(self.stats, name) for name in counts})
        for name in counts:
            setattr(self.stats, name, sum(v[name] for v in views))
