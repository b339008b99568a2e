"""The channel between the verifier and a suspect's worker: plain bytes, never pickle.

A message is a 4-byte big-endian length, a JSON object of at most HEADER_LIMIT bytes, and
a payload whose size follows from the header (raw tensor bytes: dtype and shape in the
header). The worker is hostile, so the verifier reads nothing it has not sized first:
the length is checked before the header is read, the header's dtype and shape (and the
batch it answers) before the payload is, and every read and write has a deadline.
"""
from __future__ import annotations

import json
import math
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "HEADER_LIMIT",
    "REPLY_LIMIT",
    "ChannelClosed",
    "ChannelError",
    "ChannelTimeout",
    "decode_tensor",
    "decode_tensors",
    "receive",
    "send",
    "tensor_message",
    "tensor_size",
    "tensors_message",
    "tensors_size",
]

HEADER_LIMIT = 64 * 1024
REPLY_LIMIT = 64 << 20        # the most bytes of one answer (labels or logits of one batch)
REQUEST_LIMIT = 16 << 30      # the verifier's images: trusted, bounded only against mistakes
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "uint8": torch.uint8}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_LENGTH = struct.Struct(">I")
_CHUNK = 1 << 20


class ChannelError(Exception):
    """The other side sent something malformed."""


class ChannelClosed(ChannelError):
    """The other side closed the channel (or died)."""


class ChannelTimeout(ChannelError):
    """The deadline passed before the message was through."""


def send(sock: socket.socket, header: dict[str, Any], payload: Any = b"", deadline: float | None = None) -> None:
    """Send one message (``payload``: bytes or a buffer) before ``deadline`` (time.monotonic)."""
    data = json.dumps(header, separators=(",", ":")).encode()
    try:
        _set_deadline(sock, deadline)
        sock.sendall(_LENGTH.pack(len(data)) + data)
        if len(memoryview(payload)):
            _set_deadline(sock, deadline)
            sock.sendall(payload)
    except TimeoutError:
        raise ChannelTimeout("the deadline passed while sending") from None
    except OSError as exc:  # a closed or reset channel
        raise ChannelClosed(f"the channel closed while sending ({exc.strerror or exc})") from None


def receive(sock: socket.socket, deadline: float | None,
            payload_size: Callable[[dict[str, Any]], int]) -> tuple[dict[str, Any], bytearray]:
    """One message: its header (a JSON object) and payload, whose size ``payload_size(header)``
    gives (it raises ChannelError for a header it refuses)."""
    (length,) = _LENGTH.unpack(_read(sock, _LENGTH.size, deadline))
    if length > HEADER_LIMIT:
        raise ChannelError(f"a header of {length} bytes (at most {HEADER_LIMIT})")
    try:
        header = json.loads(bytes(_read(sock, length, deadline)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ChannelError(f"a header that is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise ChannelError("a header that is not a JSON object")
    return header, _read(sock, payload_size(header), deadline)


def tensor_message(tensor: torch.Tensor) -> tuple[dict[str, Any], memoryview]:
    """The header fields and raw bytes of a CPU tensor of one of the channel's dtypes."""
    tensor = tensor.detach().cpu().contiguous()
    header = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape)}
    if tensor.numel() == 0:   # memoryview cannot cast a view with a zero in its shape
        return header, memoryview(b"")
    return header, memoryview(tensor.numpy()).cast("B")


def tensor_size(header: dict[str, Any], batch: int | None = None, limit: int = REPLY_LIMIT) -> int:
    """The payload size the header's dtype and shape announce, after checking them: a known
    dtype, 1 to 8 sizes, and, with ``batch``, labels ``[batch]`` or logits ``[batch, C]``."""
    dtype, shape = header.get("dtype"), header.get("shape")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ChannelError(f"an unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8 \
            or not all(type(size) is int and 0 <= size < 1 << 40 for size in shape):
        raise ChannelError("a shape that is not a list of 1 to 8 sizes")
    if batch is not None and (len(shape) not in (1, 2) or shape[0] != batch or (len(shape) == 2 and not shape[1])):
        raise ChannelError(f"an answer of shape {shape} to a batch of {batch}")
    size = math.prod(shape) * DTYPES[dtype].itemsize
    if size > limit:
        raise ChannelError(f"an answer of {size} bytes (at most {limit})")
    return size


def decode_tensor(header: dict[str, Any], payload: bytearray) -> torch.Tensor:
    """The tensor a checked header (tensor_size) and its payload describe."""
    dtype, shape = DTYPES[header["dtype"]], header["shape"]
    if not payload:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(payload, dtype=dtype).reshape(shape)


def tensors_message(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], bytes]:
    """Several named tensors in one message: their dtypes and shapes under "tensors", their bytes in order."""
    entries, parts = [], []
    for name, tensor in tensors.items():
        header, data = tensor_message(tensor)
        entries.append({"name": name, **header})
        parts.append(data)
    return {"tensors": entries}, b"".join(parts)


def tensors_size(header: dict[str, Any], names: tuple[str, ...], limit: int) -> int:
    """The payload size of a tensors_message holding exactly ``names`` (in order), at most ``limit`` bytes."""
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) != len(names) \
            or not all(isinstance(entry, dict) and entry.get("name") == name for entry, name in zip(entries, names)):
        raise ChannelError(f"a message without exactly the tensors {', '.join(names)}")
    size = sum(tensor_size(entry, limit=limit) for entry in entries)
    if size > limit:
        raise ChannelError(f"a message of {size} bytes (at most {limit})")
    return size


def decode_tensors(header: dict[str, Any], payload: bytearray) -> dict[str, torch.Tensor]:
    """The tensors a checked header (tensors_size) and its payload describe, by name."""
    tensors, view, offset = {}, memoryview(payload), 0
    for entry in header["tensors"]:
        size = tensor_size(entry, limit=len(payload))
        tensors[entry["name"]] = decode_tensor(entry, view[offset:offset + size])
        offset += size
    return tensors


def _read(sock: socket.socket, size: int, deadline: float | None) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    try:
        while got < size:
            _set_deadline(sock, deadline)
            count = sock.recv_into(view[got:], min(size - got, _CHUNK))
            if not count:
                raise ChannelClosed("the channel closed")
            got += count
    except TimeoutError:
        raise ChannelTimeout("the deadline passed while receiving") from None
    except ConnectionError as exc:
        raise ChannelClosed(f"the channel closed ({exc.strerror or exc})") from None
    return buffer


def _set_deadline(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise ChannelTimeout("the deadline passed")
    sock.settimeout(left)
