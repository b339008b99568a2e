"""The two seed spaces: the evaluation's suspects below EVALUATION_SEED_LIMIT, protect()'s
reference models at or above it, so an evaluated suspect is never a reference model.

Both are stable across runs (unlike hash()) and distinct per name.
"""
from __future__ import annotations

import hashlib
import zlib

__all__ = ["EVALUATION_SEED_LIMIT", "evaluation_seed", "independent_seeds", "reference_seed"]

EVALUATION_SEED_LIMIT = 2**62


def evaluation_seed(seed: int, name: str) -> int:
    """A suspect's seed, below EVALUATION_SEED_LIMIT."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % EVALUATION_SEED_LIMIT


def reference_seed(seed: int, name: str) -> int:
    """A reference model's seed, in [2**62, 2**63): SHA-256 of (seed, name)."""
    digest = hashlib.sha256(f"ipguard_fast.protect/{int(seed)}/{name}".encode()).digest()
    return EVALUATION_SEED_LIMIT + int.from_bytes(digest[:8], "little") % EVALUATION_SEED_LIMIT


def independent_seeds(owner_seed: int, count: int = 3) -> tuple[int, ...]:
    """The `count` seeds after the owner's, (1, 2, 3) for seed 0: never the owner's own (an
    independent model with the owner's seed would start from the owner's initial weights)."""
    return tuple((int(owner_seed) + i) % EVALUATION_SEED_LIMIT for i in range(1, count + 1))
