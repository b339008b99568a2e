"""The fingerprint set: data points near the owner's decision boundary, and their file format.

IPGuard (Cao, Jia, Gong, AsiaCCS 2021) fingerprints a classifier with images x that
the owner model labels j while sitting close to the boundary with some other class i.
A :class:`FingerprintSet` holds those images with their owner labels, plus what the
search recorded about them (source label i, logit margin, steps used) and a ``meta``
dict describing how they were made.

File format (one safetensors file, never pickle):

* tensors ``images``, ``labels``, ``source_labels``, ``margins``, ``steps``;
* string metadata ``format`` = ``"ipguard_fast.fingerprints"``, ``format_version`` = ``"1"``,
  ``ipguard_meta`` = JSON of ``meta`` and ``content_sha256`` = SHA-256 over a canonical
  serialisation of the tensors and the meta (see :func:`_content_sha256`).

The hash catches truncation, bit rot and naive edits (someone changing a label or the
meta by hand). It is not a signature: anyone who can write the file can recompute it.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open

from ._atomic import atomic_save
from ._files import check_safetensors_header, check_writable_output, no_json_constant, short_error, unique_keys
from ._hashing import tensors_sha256, update_framed
from ._validate import ArgumentError, non_negative_int, positive_int
from .fingerprint_fields import check_label_range, check_pixel_box, check_recorded_shape

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FingerprintFileError", "FingerprintSet", "state_dict_sha256"]

FORMAT_NAME = "ipguard_fast.fingerprints"
# A fingerprint file's header is a few tensors and a JSON meta of some kilobytes (a selected
# set adds a score per fingerprint); anything far larger is refused before it is parsed.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Domain string of the tensor hashes (content and weights); changing it invalidates every file.
_TENSORS_DOMAIN = b"ipguard_fast-tensors-v1"
FORMAT_VERSION = "1"

# Tensor fields in the fixed order used by the content hash, with their required dtype.
# `None` for the rank means "at least 2" (images: [n, *input_shape]); 1 means [n].
_TENSOR_FIELDS: tuple[tuple[str, torch.dtype, int | None], ...] = (
    ("images", torch.float32, None),
    ("labels", torch.int64, 1),
    ("source_labels", torch.int64, 1),
    ("margins", torch.float32, 1),
    ("steps", torch.int64, 1),
)


class FingerprintFileError(ValueError):
    """A fingerprint file is truncated, corrupted, tampered with or not a fingerprint file."""


@dataclass
class FingerprintSet:
    """Fingerprints of one owner model.

    Attributes:
        images: float32 CPU tensor ``[n, *input_shape]``, the fingerprint inputs.
        labels: int64 ``[n]``, the owner's label j for each image (what a copy must predict).
        source_labels: int64 ``[n]``, the label i of the natural image the search started from.
        margins: float32 ``[n]``, the owner's logit margin ``g_j - max_{t != j} g_t`` at the image.
        steps: int64 ``[n]``, optimisation steps the search used for each image.
        meta: JSON-serialisable dict describing the run (k, lr, seed, num_classes, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    source_labels: torch.Tensor
    margins: torch.Tensor
    steps: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = None
        for name, dtype, rank in _TENSOR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"FingerprintSet.{name}: must be a torch.Tensor, got {type(value).__name__}")
            if value.dtype != dtype:
                raise ValueError(f"FingerprintSet.{name}: must have dtype {dtype}, got {value.dtype}")
            if value.device.type != "cpu":
                raise ValueError(f"FingerprintSet.{name}: must be on the CPU (call .cpu()), got {value.device}")
            if rank is None and (value.dim() < 2 or 0 in value.shape[1:]):
                raise ValueError(f"FingerprintSet.{name}: must have shape [n, *input_shape] with non-empty images, "
                                 f"got {tuple(value.shape)}")
            if rank is not None and value.dim() != rank:
                raise ValueError(f"FingerprintSet.{name}: must have shape [n], got {tuple(value.shape)}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(
                    f"FingerprintSet.{name}: has {value.shape[0]} entries but images has {n}; all fields need the same n"
                )

        if not isinstance(self.meta, dict):
            raise ValueError(f"FingerprintSet.meta: must be a dict, got {type(self.meta).__name__}")
        try:
            # Keep meta as its JSON round-trip (tuples become lists, keys strings) so the
            # in-memory set equals what load() returns and the hash sees the same meta.
            self.meta = json.loads(_meta_json(self.meta))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"FingerprintSet.meta: must be JSON-serialisable (no NaN, string keys): {exc}") from exc

        check_recorded_shape(self.images, self.meta)
        if not torch.isfinite(self.images).all():
            raise ValueError("FingerprintSet.images: contains NaN or infinite values")
        check_pixel_box(self.images, self.meta)
        if "requested" in self.meta:   # read by `requested` / `complete` and by the extraction's checks
            non_negative_int("FingerprintSet.meta['requested']", self.meta["requested"])
        num_classes = self.num_classes
        if num_classes is not None and positive_int("FingerprintSet.meta['num_classes']", num_classes) < 2:
            raise ArgumentError("FingerprintSet.meta['num_classes']", f"must be an int >= 2, got {num_classes!r}")
        for name in ("labels", "source_labels"):
            check_label_range(name, getattr(self, name), num_classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one fingerprint image, e.g. ``(3, 32, 32)``."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int | None:
        """Number of classes of the owner model (``meta["num_classes"]``), or None when not recorded."""
        return self.meta.get("num_classes")

    @property
    def requested(self) -> int:
        """How many fingerprints the run asked for (defaults to how many there are)."""
        return int(self.meta.get("requested", len(self)))

    @property
    def complete(self) -> bool:
        """True when the search produced at least as many fingerprints as requested."""
        return len(self) >= self.requested

    # ------------------------------------------------------------------ file I/O

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the set to one safetensors file at ``path``, atomically.

        The data goes to a temporary file in the same folder, which then replaces
        ``path`` in one ``os.replace``: an interrupted save leaves either the old file
        or the new one, never half a file.
        """
        path = check_writable_output("path", path)
        tensors = {name: getattr(self, name).contiguous() for name, _, _ in _TENSOR_FIELDS}
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "ipguard_meta": _meta_json(self.meta),
            "content_sha256": _content_sha256(tensors, self.meta),
        }
        return atomic_save(path, lambda handle: handle.write(safetensors.torch.save(tensors, metadata=metadata)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "FingerprintSet":
        """Read a file written by :meth:`save`, checking format and content hash.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            FingerprintFileError: the file is not a safetensors file, is truncated,
                corrupted or tampered with (hash mismatch, missing or extra tensors),
                or has an unknown format/version.
        """
        path = Path(path)
        if path.is_dir():
            raise FingerprintFileError(f"{path} is a folder, not a fingerprint file")
        if path.exists() and not path.is_file():
            raise FingerprintFileError(f"{path} is not a regular file (a FIFO, a device or a socket)")
        if not path.is_file():
            raise FileNotFoundError(f"fingerprint file not found: {path}")
        check_safetensors_header(path, MAX_HEADER_BYTES, FingerprintFileError, "fingerprint file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as reader:
                metadata = reader.metadata() or {}
                tensors = {name: reader.get_tensor(name) for name in reader.keys()}
        except Exception as exc:  # safetensors raises its own error type for every header problem
            raise FingerprintFileError(
                f"{path} is not a readable fingerprint file (truncated, corrupted or not safetensors): "
                f"{short_error(exc)}") from None

        meta = _checked_layout(path, metadata, tensors)
        stored_hash = metadata.get("content_sha256", "")
        actual_hash = _content_sha256(tensors, meta)
        if not hmac.compare_digest(stored_hash.encode("utf-8"), actual_hash.encode("utf-8")):
            raise FingerprintFileError(
                f"{path} is corrupted or tampered with: content SHA-256 is {actual_hash}, "
                f"the file records {stored_hash or 'none'}"
            )
        try:
            return cls(**tensors, meta=meta)
        except (ValueError, RecursionError) as exc:
            raise FingerprintFileError(f"{path} holds an invalid fingerprint set: {short_error(exc)}") from None


def _checked_layout(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The file's meta, once its format, version, tensor names and meta are what load expects."""
    if metadata.get("format") != FORMAT_NAME:
        raise FingerprintFileError(
            f"{path} is not an ipguard_fast fingerprint file (format={metadata.get('format')!r}); "
            "it may be corrupted or tampered with"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise FingerprintFileError(
            f"{path} has fingerprint format version {metadata.get('format_version')!r}; "
            f"this library reads version {FORMAT_VERSION}"
        )

    expected_names = {name for name, _, _ in _TENSOR_FIELDS}
    if set(tensors) != expected_names:
        missing = sorted(expected_names - set(tensors))
        extra = sorted(set(tensors) - expected_names)
        raise FingerprintFileError(
            f"{path} is corrupted or tampered with: missing tensors {missing}, unexpected tensors {extra}"
        )
    try:
        meta = json.loads(metadata["ipguard_meta"], parse_constant=no_json_constant, object_pairs_hook=unique_keys)
    except (KeyError, ValueError, RecursionError) as exc:
        raise FingerprintFileError(f"{path} is corrupted or tampered with: unreadable ipguard_meta "
                                   f"({short_error(exc)})") from None
    if not isinstance(meta, dict):
        raise FingerprintFileError(f"{path} is corrupted or tampered with: ipguard_meta is not a JSON object")
    if not isinstance(meta.get("num_classes"), int):
        # Without it a label outside the owner's classes could not be caught.
        raise FingerprintFileError(f"{path} is refused: its meta records no num_classes")
    return meta


# ---------------------------------------------------------------------- hashing


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights: every state_dict entry's name, dtype, shape and bytes, sorted by name.

    Two models with identical weights hash the same whatever their Python class; the
    engine records this hash of the owner model in the fingerprints' meta.
    """
    if not isinstance(model, torch.nn.Module):
        raise ArgumentError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
    state = model.state_dict()
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            # Non-tensor "extra state" has no canonical byte form; refuse rather than hash something unstable.
            raise ArgumentError("model", f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor; "
                                         "cannot hash it")
    return tensors_sha256(sorted(state.items()), _TENSORS_DOMAIN).hexdigest()


def _content_sha256(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """Hash of a fingerprint file's content: the tensors in the fixed field order, then the meta JSON."""
    ordered = [(name, tensors[name]) for name, _, _ in _TENSOR_FIELDS]
    digest = tensors_sha256(ordered, _TENSORS_DOMAIN)
    update_framed(digest, b"meta")
    update_framed(digest, _meta_json(meta).encode("utf-8"))
    return digest.hexdigest()


def _meta_json(meta: dict[str, Any]) -> str:
    """Canonical JSON of meta: sorted keys, no whitespace, strict (no NaN), so the hash is stable."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
