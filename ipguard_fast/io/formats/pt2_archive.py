"""The safety inspection of a torch.export (.pt2) archive, before torch sees it (pt2.py's ``inspect``).

A suspect's model file comes from the party accused of piracy. ``torch.export.load``
trusts its archive, and an archive can make it run code while loading:

- weights or constants marked ``use_pickle`` are read with ``torch.load(weights_only=False)``;
- custom and opaque objects among the constants are unpickled (``pickle.loads``);
- legacy ``<model>.pt`` weight files and the sample inputs go through a loader that falls
  back to ``weights_only=False`` when the safe load fails;
- ``data/aotinductor/`` holds native shared libraries that are loaded;
- the graph JSON is evaluated in parts (pt2_graph.py), and the graph then runs on the
  verifier's machine: its operators must be pure tensor operators (io/operators.py).

``inspect_archive`` reads the archive's bytes with the package's own zip reader
(io/archive.py: the members torch will read, duplicates, odd names and memory bombs
refused before anything is inflated; pt2.py hands torch those same bytes) and checks them
against what a plain export of an ATen graph contains: raw tensor weights and constants,
sample inputs that are a weights-only torch.save archive, graphs that pass pt2_graph.
Everything else is refused with ModelLoadError, saying why.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

import torch

from ..._files import short_error as _short
from ..archive import ZipArchive, open_archive
from ..weights import ModelLoadError
from .pt2_graph import check_program

__all__ = ["inspect_archive"]

# The fixed members of an archive, below its root folder.
_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_NAME = r"[A-Za-z0-9_\-]+"
_MEMBER_PATTERNS = [
    re.compile(rf"models/(?P<model>{_NAME})\.json"),
    re.compile(rf"data/weights/(?P<model>{_NAME})_weights_config\.json"),
    re.compile(r"data/weights/weight_\d+"),
    re.compile(rf"data/constants/(?P<model>{_NAME})_constants_config\.json"),
    re.compile(r"data/constants/tensor_\d+"),
    re.compile(rf"data/sample_inputs/(?P<model>{_NAME})\.pt"),
    re.compile(r"extra/[^/]+"),  # free-form strings the loader only reads as text
]
# JSON is parsed whole: a bound on its bytes and on its containers bounds the memory it takes.
_MAX_JSON_BYTES = 64 << 20
_MAX_JSON_CONTAINERS = 4_000_000
_MAX_SAMPLE_BYTES = 64 << 20


def inspect_archive(data: bytes, name: str = "archive") -> None:
    """Raise ModelLoadError unless the archive holds only data and allowed graphs (see the module doc)."""
    if not data.startswith(b"PK\x03\x04"):
        raise ModelLoadError(f"{name} is not a loadable torch.export (.pt2) archive: not a zip archive")
    archive = open_archive(data, name)
    models = set()
    for member in archive.names:
        if member in _FIXED:
            continue
        match = next((m for p in _MEMBER_PATTERNS if (m := p.fullmatch(member))), None)
        if match is None:
            raise ModelLoadError(f"{name}: refused: the archive holds {member!r}, which is not plain tensor data or "
                                 f"an ATen graph ({_why(member)}); only .pt2 files of plain exported programs load")
        if match.groupdict().get("model"):
            models.add(match["model"])
    if not models:
        raise ModelLoadError(f"{name}: refused: the archive holds no exported program")
    for model in sorted(models):
        _check_payload_config(archive, f"data/weights/{model}_weights_config.json", "weight_", name)
        _check_payload_config(archive, f"data/constants/{model}_constants_config.json", "tensor_", name)
        _check_sample_inputs(archive, f"data/sample_inputs/{model}.pt", name)
        check_program(_read_json(archive, f"models/{model}.json", name), f"models/{model}.json", name)


def _why(member: str) -> str:
    if member.startswith("data/aotinductor/"):
        return "AOTInductor native code would be loaded"
    if member.endswith(".pt") or "custom_obj_" in member or "opaque_obj_" in member:
        return "it would be unpickled"
    return "unknown member"


def _read_json(archive: ZipArchive, member: str, name: str) -> Any:
    data = archive.read(member, _MAX_JSON_BYTES)
    containers = data.count(b"[") + data.count(b"{")
    if containers > _MAX_JSON_CONTAINERS:
        raise ModelLoadError(f"{name}: refused: {member} holds {containers} JSON lists and objects, more than "
                             f"{_MAX_JSON_CONTAINERS}")
    try:
        return json.loads(data.decode("utf-8"))  # as torch decodes it, not json's guess at the encoding
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{name}: refused: {member} is not readable JSON: {_short(exc)}") from None


def _check_payload_config(archive: ZipArchive, member: str, prefix: str, name: str) -> None:
    """Every weight and constant must be raw tensor bytes (use_pickle false, a tensor file)."""
    if member not in archive:
        return  # a program without weights (or constants) has no config
    config = _read_json(archive, member, name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ModelLoadError(f"{name}: refused: {member} is not a payload config")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ModelLoadError(f"{name}: refused: {member} asks for {fqn!r} to be unpickled (use_pickle), which "
                                 "could run code from the file")
        path = meta.get("path_name")
        if not isinstance(path, str) or not re.fullmatch(rf"{prefix}\d+", path):
            raise ModelLoadError(f"{name}: refused: {member} stores {fqn!r} as {path!r}, not as raw tensor data")


def _check_sample_inputs(archive: ZipArchive, member: str, name: str) -> None:
    """torch falls back to weights_only=False when the safe load fails: make sure it cannot fail.

    The sample inputs are a torch.save archive of their own: read through the same zip reader,
    naming only globals the weights-only unpickler allows, and loading weights-only here.
    """
    data = archive.read(member, _MAX_SAMPLE_BYTES)
    if not data:
        return  # torch reads no sample inputs from an empty member
    where = f"{name}: {member}"
    if not data.startswith(b"PK\x03\x04"):
        raise ModelLoadError(f"{where}: refused: not a torch.save archive (torch would unpickle it without "
                             "restrictions)")
    open_archive(data, where)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
        if not unsafe:
            torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{where}: refused: it holds more than tensors (torch would unpickle it without "
                             f"restrictions): {_short(exc)}") from None
    if unsafe:
        raise ModelLoadError(f"{where}: refused: it names {', '.join(unsafe[:3])}, which torch would unpickle "
                             "without restrictions")
