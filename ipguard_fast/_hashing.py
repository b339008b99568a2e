"""SHA-256 over tensors, every piece length-framed, so the serialisation is unambiguous.

Framing each piece (name, dtype, shape, raw bytes) with its length means moving bytes
from one tensor into the next, or renaming one, always changes the digest. The
fingerprint file's content hash and the remote progress file's fingerprint digest
both use it, each under its own domain string.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable

import torch

__all__ = ["tensor_bytes", "tensors_sha256", "update_framed"]


def update_framed(digest: "hashlib._Hash", data: bytes) -> None:
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a tensor; works for dtypes numpy lacks (bfloat16) via a uint8 view."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def tensors_sha256(items: Iterable[tuple[str, torch.Tensor]], domain: bytes) -> "hashlib._Hash":
    """A SHA-256 object fed with `domain`, then (name, dtype, shape, bytes) of each tensor, framed."""
    digest = hashlib.sha256(domain)
    for name, tensor in items:
        update_framed(digest, name.encode("utf-8"))
        update_framed(digest, str(tensor.dtype).encode("ascii"))
        update_framed(digest, json.dumps(list(tensor.shape)).encode("ascii"))
        update_framed(digest, tensor_bytes(tensor))
    return digest
