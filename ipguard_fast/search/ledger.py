"""The engine's bookkeeping: which candidates finished (accepted or not), which still run,
and which index this rank launches next.

The result rule lives here: the fingerprints are the first n accepted candidates *by
candidate index* whose image no earlier accepted candidate already holds (a set never
holds two identical fingerprints). Every rank holds the same global view (finished,
pending, the accepted images' digests), updated from the exchange after each harvest,
so every rank takes the same stop decision.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from .._hashing import tensor_bytes

__all__ = ["CandidateLedger", "Outcome"]


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
    def __init__(self, n: int, max_candidates: int, rank: int = 0, world: int = 1, resume=None):
        self.n, self.max_candidates, self.rank, self.world = n, max_candidates, rank, world
        # Global view, identical on every rank.
        self.finished: dict[int, bool] = {}
        self.digests: dict[int, bytes] = {}   # accepted candidates' image digests
        self.pending: list[int] = []
        self.accepted_count = 0
        self.streams_done = False
        # This rank's own part: its accepted outcomes (with images), what finished since
        # the last exchange, and its next candidate index.
        self.outcomes: dict[int, Outcome] = {}
        self.unshared: list[tuple[int, bool]] = []
        self.next_index = rank
        self.skip: set[int] = set()   # this rank's indices finished before a resume
        if resume is not None:
            self.finished, self.outcomes = dict(resume[0]), dict(resume[1])
            self.digests = {c: image_digest(o.image) for c, o in self.outcomes.items()}
            self.skip = {c for c in self.finished if c % world == rank}
            self.accepted_count = len(self.wins())

    # -- the result rule -----------------------------------------------------
    def wins(self) -> list[int]:
        """Accepted candidate indices in index order, each image once (its lowest index)."""
        seen: set[bytes] = set()
        wins = []
        for c in sorted(c for c, ok in self.finished.items() if ok):
            digest = self.digests.get(c)
            if digest is not None:
                if digest in seen:
                    continue
                seen.add(digest)
            wins.append(c)
        return wins

    def duplicates(self) -> int:
        """Accepted candidates left out because an earlier one holds the same image."""
        return sum(self.finished.values()) - len(self.wins())

    def determined(self) -> bool:
        """True when the first n accepted candidates by index are known (same on every rank)."""
        wins = self.wins()
        if len(wins) >= self.n:
            last = wins[self.n - 1]
            return all(c > last for c in self.pending)
        return not self.pending and self.streams_done

    def result(self) -> list[int]:
        return self.wins()[: self.n]

    # -- launching -----------------------------------------------------------
    def launch_count(self, free: int) -> int:
        """How many new candidates this rank should start in `free` slots: what could still
        be needed, with a margin for the failure rate seen so far, shared between the ranks."""
        in_flight, finished = len(self.pending), len(self.finished)
        fails = finished - self.accepted_count
        spare = math.ceil(in_flight * fails / finished) if finished else 0
        wanted = math.ceil((self.n - self.accepted_count - in_flight + spare) / self.world)
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
            digest = image_digest(outcome.image)
        self.unshared.append((index, outcome.accepted, digest))

    def share(self, running: list[int]):
        """This rank's part of the exchange: new outcomes, what it runs, whether its stream ended."""
        payload = (self.unshared, running, self.stream_left() == 0)
        self.unshared = []
        return payload

    def merge(self, views) -> None:
        """Take in every rank's part (from share), giving the same global view everywhere."""
        self.pending = []
        for outcomes, pending, _ in views:
            for index, ok, digest in outcomes:
                self.finished[index] = ok
                if ok:
                    self.digests[index] = digest
            self.pending.extend(pending)
        self.accepted_count = len(self.wins())
        self.streams_done = all(done for _, _, done in views)
