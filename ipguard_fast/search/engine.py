"""The batched boundary-search engine: continuous batching over fixed slots.

Candidates are launched in index order into free slots, stepped together, and
harvested every `check_every` steps (the only host sync): converged ones go to
float32 acceptance, exhausted ones fail, and the freed slots take new
candidates. When nothing is left to launch, the batch shrinks to a bucket size
just above the live count, so finished slots cost nothing.

The result is the first n accepted candidates *by candidate index*, and each
candidate depends only on (seed, index): the fingerprints do not depend on
batch_size, on how candidates were scheduled, or on how many torch.distributed
ranks share the stream (distributed.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .acceptance import accept
from .candidates import CandidateSource
from .distributed import SingleProcess
from .slots import Slots
from .step import SearchStep


@dataclass
class Outcome:
    accepted: bool
    image: torch.Tensor | None = None
    i: int = -1
    j: int = -1
    margin: float = float("nan")
    steps: int = 0


@dataclass
class SearchStats:
    tried: int = 0
    accepted: int = 0
    rejected: int = 0        # converged in the search precision, failed float32 acceptance
    exhausted: int = 0       # hit max_steps (or non-finite logits) without converging
    steps_run: int = 0       # batched steps executed
    slot_steps: int = 0      # sum over steps of the batch size run
    harvests: int = 0
    oom_halvings: int = 0    # out-of-memory errors answered by halving the batch
    batch_sizes: dict = field(default_factory=dict)


class SearchEngine:
    def __init__(self, model, source: CandidateSource, *, n: int, k: float, lr: float,
                 max_steps: int, max_candidates: int, batch_size: int, check_every: int,
                 lo: float, hi: float, device: torch.device, amp_dtype=None,
                 cuda_graph: bool = False, channels_last: bool = False, progress=None, comm=None,
                 acceptance_model=None, resume=None, on_checkpoint=None, checkpoint_every: float = 30.0):
        self.model, self.source = model, source
        # Acceptance runs the plain eager model in float32, even when the search runs
        # a torch.compile'd one.
        self.acceptance_model = acceptance_model or model
        self.n, self.k, self.max_candidates = n, k, max_candidates
        self.check_every = check_every
        self.slots = Slots(batch_size, source.input_shape, device, channels_last=channels_last)
        self.step = SearchStep(model, self.slots, k=k, lr=lr, max_steps=max_steps, lo=lo, hi=hi,
                               amp_dtype=amp_dtype, cuda_graph=cuda_graph)
        self.comm = comm or SingleProcess()
        # Global view, identical on every rank: index -> accepted, and what runs where.
        self.finished: dict[int, bool] = {}
        self.pending: list[int] = []
        self.global_accepted = 0
        self.streams_done = False
        # This rank's own results (with images) and its next candidate index.
        self.outcomes: dict[int, Outcome] = {}
        self.new_outcomes: list[tuple[int, bool]] = []
        self.next_index = self.comm.rank
        self.parked: list[dict] = []   # candidates taken out after an out-of-memory, state kept
        self.stats = SearchStats()
        self.progress = progress
        # Resuming: finished candidates are known and skipped; on_checkpoint(finished,
        # outcomes) is called at most every checkpoint_every seconds, and on interrupt.
        self.skip: set[int] = set()   # this rank's indices finished before a resume
        if resume is not None:
            self.finished, self.outcomes = dict(resume[0]), dict(resume[1])
            self.skip = {c for c in self.finished if c % self.comm.world == self.comm.rank}
            self.global_accepted = sum(self.finished.values())
            if self.progress is not None:
                self.progress.update(min(self.n, self.global_accepted))
        self.on_checkpoint, self.checkpoint_every = on_checkpoint, checkpoint_every
        self.last_checkpoint = time.monotonic()

    # -- scheduling ---------------------------------------------------------
    def _successes_in_order(self) -> list[int]:
        return sorted(c for c, ok in self.finished.items() if ok)

    def _determined(self) -> bool:
        """True when the first n accepted candidates by index are known (same on every rank)."""
        wins = self._successes_in_order()
        if len(wins) >= self.n:
            last = wins[self.n - 1]
            return all(c > last for c in self.pending)
        return not self.pending and self.streams_done

    def _launch_count(self, free: int) -> int:
        in_flight = len(self.pending)
        finished = len(self.finished)
        fails = finished - self.global_accepted
        # Launch what could still be needed, with a margin for the failure rate seen
        # so far, shared evenly between the ranks.
        spare = math.ceil(in_flight * fails / finished) if finished else 0
        wanted = math.ceil((self.n - self.global_accepted - in_flight + spare) / self.comm.world)
        return max(0, min(free, wanted, self._stream_left()))

    def _stream_left(self) -> int:
        """How many of this rank's candidate indices are still to launch."""
        ahead = sum(1 for c in self.skip if self.next_index <= c < self.max_candidates)
        return len(range(self.next_index, self.max_candidates, self.comm.world)) - ahead

    def _take_indices(self, count: int) -> list[int]:
        """This rank's next `count` candidate indices, skipping any finished before a resume."""
        indices = []
        while len(indices) < count:
            if self.next_index in self.skip:
                self.skip.discard(self.next_index)
            else:
                indices.append(self.next_index)
            self.next_index += self.comm.world
        return indices

    def _refill(self) -> None:
        in_flight = sum(1 for c in self.slots.candidate if c >= 0)
        back = self.parked[: self.slots.capacity - in_flight]
        if back:  # back from an out-of-memory: they go first, as they were
            self.parked = self.parked[len(back):]
            self.slots.resize_for(in_flight + len(back))
            self.slots.restore(self.slots.free_positions()[: len(back)], back)
            in_flight += len(back)
        count = self._launch_count(self.slots.capacity - in_flight) if not self.parked else 0
        self.slots.resize_for(max(1, in_flight + count))
        if count > 0:
            positions = self.slots.free_positions()[:count]
            indices = self._take_indices(count)
            self.stats.tried += count
            x0, i, j = self.source.make(indices)
            self.slots.load(positions, indices, x0, i, j)
        self._sync_view()

    def _sync_view(self) -> None:
        """Share what finished and what runs with the other ranks (a no-op alone)."""
        running = [c for c in self.slots.candidate if c >= 0] + [p["candidate"] for p in self.parked]
        payload = (self.new_outcomes, running, self._stream_left() == 0)
        self.new_outcomes = []
        views = self.comm.exchange(payload)
        self.pending = []
        for outcomes, pending, done in views:
            for index, ok in outcomes:
                self.finished[index] = ok
                self.global_accepted += ok
            self.pending.extend(pending)
        self.streams_done = all(done for _, _, done in views)

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
            pos = torch.tensor(done, device=s.x.device)
            x, i, j = s.x.index_select(0, pos), s.i.index_select(0, pos), s.j.index_select(0, pos)
            ok, margins = accept(self.acceptance_model, x, i, j, self.k)
            steps = s.step.index_select(0, pos).tolist()
            x_cpu, i_l, j_l = x.float().cpu().contiguous(), i.tolist(), j.tolist()
            for n, p in enumerate(done):
                if bool(ok[n]):
                    self._record(s.candidate[p], Outcome(True, x_cpu[n], i_l[n], j_l[n],
                                                         float(margins[n]), steps[n]))
                    self.stats.accepted += 1
                    if self.progress is not None:
                        self.progress.update(1)
                else:
                    self._record(s.candidate[p], Outcome(False))
                    self.stats.rejected += 1
        for p in finished:
            if not converged[p]:
                self._record(s.candidate[p], Outcome(False))
                self.stats.exhausted += 1
        s.release(finished)

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

    def _record(self, index: int, outcome: Outcome) -> None:
        if outcome.accepted:
            self.outcomes[index] = outcome
        self.new_outcomes.append((index, outcome.accepted))

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if self.on_checkpoint is None:
            return
        if force or time.monotonic() - self.last_checkpoint >= self.checkpoint_every:
            self.on_checkpoint(self.finished, self.outcomes)
            self.last_checkpoint = time.monotonic()

    def run(self) -> list[Outcome]:
        try:
            return self._run()
        except KeyboardInterrupt:
            self._maybe_checkpoint(force=True)  # keep what finished, then stop as asked
            raise

    def _run(self) -> list[Outcome]:
        self._refill()
        while not self._determined():
            if any(c >= 0 for c in self.slots.candidate):
                for _ in range(self.check_every):
                    try:
                        self.step()
                    except torch.OutOfMemoryError:
                        self._halve_batch()
                        break
                    self.stats.steps_run += 1
                    self.stats.slot_steps += self.slots.size
                self.stats.batch_sizes[self.slots.size] = self.stats.batch_sizes.get(self.slots.size, 0) + 1
                self._harvest()
            if self.progress is not None:
                self.progress.set_postfix(tried=self.stats.tried, batch=self.slots.size, refresh=False)
            self._refill()  # also exchanges the harvest with the other ranks
            self._maybe_checkpoint()
        wins = self._successes_in_order()[: self.n]
        mine = {c: self.outcomes[c] for c in wins if c in self.outcomes}
        everything = self.comm.gather_outcomes(mine)
        self._sum_stats_over_ranks()
        return [everything[c] for c in wins]

    def _sum_stats_over_ranks(self) -> None:
        if self.comm.world == 1:
            return
        counts = ("tried", "accepted", "rejected", "exhausted", "steps_run", "slot_steps", "harvests")
        views = self.comm.exchange({name: getattr(self.stats, name) for name in counts})
        for name in counts:
            setattr(self.stats, name, sum(v[name] for v in views))
