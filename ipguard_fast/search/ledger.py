"""The engine's bookkeeping: which candidates finished (accepted or not), which still run,
which index this rank launches next, and how many to launch.

The result rule lives here. By default ("index") the fingerprints are the first n
accepted candidates *by candidate index*: since a candidate depends only on (seed,
index), the result does not depend on the batch size, the device or the number of
ranks. "completion" takes the first n accepted *in the order they finished* (ties by
index): it stops as soon as n are accepted instead of waiting for slow low-index
candidates, at the price of a result that depends on the batch size and the schedule.
Under either rule an accepted image that an earlier fingerprint already holds is left
out: a set never holds two identical fingerprints. Every rank holds the same global view
(finished, pending, the accepted images' digests), updated from the exchange after each
harvest, so every rank takes the same stop decision.

Spares. A candidate that fails is known to have failed only when it exhausts max_steps,
and with the index rule its replacement is needed before the result is known; launched
then, it would run alone at the end. So the ledger launches enough candidates that, at
the failure rate expected (a prior, then what is observed), n acceptances remain likely
among what runs -- the replacements are already running when the failures show. Spares
never change the result (they are later indices, used only if needed).
"""
from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass

import torch

from .._hashing import tensor_bytes
from .._validate import ArgumentError

__all__ = ["CPU_SPARE_BREAK_EVEN", "CandidateLedger", "Outcome", "RESULT_RULES"]

RESULT_RULES = ("index", "completion")

# The failure rate assumed before any candidate finished, as pseudo-counts (1 in 20):
# enough for a few spares from the start; observations outweigh it within a batch.
_PRIOR_FAILURES, _PRIOR_TRIALS = 1.0, 20.0


# On CPU a slot costs its share of the step: ResNet-20 at 32x32 on 2 cores, one candidate
# of a full batch costs 3.3-4.5 ms a step and a batch of one 13.7-17.8 ms
# (the CPU runs in benchmarks/results/). A spare costs about one full-batch share per
# step it runs and saves, with probability the failure rate, about as many steps run at
# batch one, so it pays for itself from a failure rate of about 4.1 / 16 = 0.25. Below
# that, as in every CPU benchmark run here (0-4 % failures), spares measured 2-6 % slower.
CPU_SPARE_BREAK_EVEN = 0.25


@dataclass
class Outcome:
    accepted: bool
    image: torch.Tensor | None = None
    i: int = -1
    j: int = -1
    margin: float = float("nan")
    steps: int = 0


def image_digest(image: torch.Tensor) -> bytes:
    """What identifies a fingerprint's image in the exchange: 16 bytes of its SHA-256."""
    return hashlib.sha256(tensor_bytes(image)).digest()[:16]


class CandidateLedger:
    """The global view of one extraction (the same on every rank) and this rank's own part.

    spares: False launches only what is needed plus the failures seen among what runs
    (ExtractConfig.spares; the A/B baseline of the benchmark).
    """

    def __init__(self, n: int, max_candidates: int, rank: int = 0, world: int = 1, resume=None,
                 rule: str = "index", spare_break_even: float = 0.0, spares: bool = True):
        if rule not in RESULT_RULES:
            raise ArgumentError("result_rule", f"expected one of {RESULT_RULES}, got {rule!r}")
        self.n, self.max_candidates, self.rank, self.world, self.rule = n, max_candidates, rank, world, rule
        self.spares = spares
        # Spares go out only while the expected failure rate is at least this: the rate at
        # which a spare's cost (its share of every step it runs) equals what it saves (a
        # replacement running alone at the end). 0 where a partly empty batch costs as much
        # as a full one (CUDA); see CPU_SPARE_BREAK_EVEN.
        self.spare_break_even = spare_break_even
        # Global view, identical on every rank.
        self.finished: dict[int, bool] = {}
        self.digests: dict[int, bytes] = {}   # accepted candidates' image digests
        self.completion: list[int] = []   # accepted indices in the order their harvest shared them
        self.pending: list[int] = []
        self.accepted_count = 0
        self.streams_done = False
        # This rank's own part: its accepted outcomes (with images), what finished since
        # the last exchange, and its next candidate index.
        self.outcomes: dict[int, Outcome] = {}
        self.unshared: list[tuple[int, bool]] = []
        self.next_index = rank
        self.skip: set[int] = set()   # this rank's indices finished before a resume
        # The result rule kept up to date as outcomes arrive (wins() recomputed after every
        # harvest made a long extraction quadratic: 8 s of protect's 45 s pool on the digits
        # owner): the accepted indices in the rule's order, each image's holder (its first
        # accepted index in that order), and the accepted indices an earlier one's image
        # leaves out, sorted.
        self._accepted: list[int] = []
        self._holder: dict[bytes, int] = {}
        self._left_out: list[int] = []
        if resume is not None:
            self.finished, self.outcomes = dict(resume[0]), dict(resume[1])
            self.digests = {c: image_digest(o.image) for c, o in self.outcomes.items() if o.image is not None}
            self.skip = {c for c in self.finished if c % world == rank}
            self.completion = sorted(c for c, ok in self.finished.items() if ok)
            for c in self.completion:
                self._count(c, self.digests.get(c))
            self.accepted_count = len(self._accepted) - len(self._left_out)

    # -- the result rule -----------------------------------------------------
    def wins(self) -> list[int]:
        """Accepted candidate indices in the rule's order, each image once (its first holder)."""
        order = self.completion if self.rule == "completion" else sorted(
            c for c, ok in self.finished.items() if ok)
        seen: set[bytes] = set()
        wins = []
        for c in order:
            digest = self.digests.get(c)
            if digest is not None:
                if digest in seen:
                    continue
                seen.add(digest)
            wins.append(c)
        return wins

    def _count(self, index: int, digest: bytes | None) -> None:
        """Take in one newly accepted candidate (in completion order): the running form of wins()."""
        if self.rule == "completion":
            self._accepted.append(index)
            if digest is not None:
                if digest in self._holder:
                    self._left_out.append(index)   # completion order only grows: the newcomer is later
                else:
                    self._holder[digest] = index
            return
        bisect.insort(self._accepted, index)
        if digest is None:   # no image to compare (an outcome recorded without one): always kept
            return
        holder = self._holder.get(digest)
        if holder is None:
            self._holder[digest] = index
        elif index > holder:
            bisect.insort(self._left_out, index)
        else:   # a lower index with the same image arrived late: it holds the image now
            self._holder[digest] = index
            bisect.insort(self._left_out, holder)

    def _nth_win(self, position: int) -> int:
        """wins()[position] under the index rule, walking only the (few) left-out indices."""
        at = position
        for left_out in self._left_out:   # each left out at or before the candidate moves it one on
            if left_out > self._accepted[at]:
                break
            at += 1
        return self._accepted[at]

    def duplicates(self) -> int:
        """Accepted candidates left out because an earlier one holds the same image."""
        return len(self._left_out)

    def determined(self) -> bool:
        """True when the result is known (the same on every rank)."""
        if self.rule == "completion":
            return self.accepted_count >= self.n or (not self.pending and self.streams_done)
        if self.accepted_count >= self.n:
            last = self._nth_win(self.n - 1)
            return all(c > last for c in self.pending)
        return not self.pending and self.streams_done

    def result(self) -> list[int]:
        """The indices of the fingerprints, in the order of the returned set."""
        return self.wins()[: self.n]

    # -- launching -----------------------------------------------------------
    def failure_rate(self) -> float:
        """Share of candidates expected to fail: the prior, updated by every finished one."""
        finished = len(self.finished)
        fails = finished - self.accepted_count
        return (fails + _PRIOR_FAILURES) / (finished + _PRIOR_TRIALS)

    def launch_count(self, free: int) -> int:
        """How many new candidates this rank should start in `free` slots: enough that,
        at the expected failure rate, what runs still yields the acceptances missing,
        plus one -- shared between the ranks."""
        needed = self.n - self.accepted_count
        if needed <= 0:
            return 0
        if self.spares and self.failure_rate() >= self.spare_break_even:
            rate = min(self.failure_rate(), 0.95)
            target = math.ceil(needed / (1.0 - rate)) + 1
        else:  # the policy before spares: what is needed, plus the failures seen among what runs
            finished = len(self.finished)
            fails = finished - self.accepted_count
            target = needed + (math.ceil(len(self.pending) * fails / finished) if finished else 0)
        wanted = math.ceil((target - len(self.pending)) / self.world)
        return max(0, min(free, wanted, self.stream_left()))

    def stream_left(self) -> int:
        """How many of this rank's candidate indices are still to launch."""
        ahead = sum(1 for c in self.skip if self.next_index <= c < self.max_candidates)
        return len(range(self.next_index, self.max_candidates, self.world)) - ahead

    def take(self, count: int) -> list[int]:
        """This rank's next `count` candidate indices, skipping any finished before a resume."""
        indices = []
        while len(indices) < count:
            if self.next_index in self.skip:
                self.skip.discard(self.next_index)
            else:
                indices.append(self.next_index)
            self.next_index += self.world
        return indices

    # -- outcomes and the exchange between ranks ------------------------------
    def record(self, index: int, outcome: Outcome) -> None:
        digest = None
        if outcome.accepted:
            self.outcomes[index] = outcome
            digest = image_digest(outcome.image) if outcome.image is not None else None
        self.unshared.append((index, outcome.accepted, digest))

    def finished_here(self) -> dict[int, bool]:
        """``finished`` with this rank's outcomes not shared yet (a harvest that an interrupt cut
        off from its exchange): what a checkpoint keeps."""
        finished = dict(self.finished)
        for index, ok, _ in self.unshared:
            finished[index] = finished.get(index, False) or ok
        return finished

    def share(self, running: list[int]):
        """This rank's part of the exchange: new outcomes, what it runs, whether its stream ended."""
        payload = (self.unshared, running, self.stream_left() == 0)
        self.unshared = []
        return payload

    def merge(self, views) -> None:
        """Take in every rank's part (from share), giving the same global view everywhere."""
        self.pending = []
        newly = []
        for outcomes, pending, _ in views:
            for index, ok, digest in outcomes:
                if ok and not self.finished.get(index, False):
                    self.digests[index] = digest
                    newly.append(index)
                self.finished[index] = self.finished.get(index, False) or ok
            self.pending.extend(pending)
        # Candidates accepted in the same harvest count as finished together: by index.
        self.completion.extend(sorted(newly))
        for index in sorted(newly):
            self._count(index, self.digests.get(index))
        self.accepted_count = len(self._accepted) - len(self._left_out)
        self.streams_done = all(done for _, _, done in views)
