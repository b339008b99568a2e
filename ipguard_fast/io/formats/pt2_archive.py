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
# torch.export's ScalarType codes (torch/_export/serde/schema.py) -> bytes per element.
_ELEMENT_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2, 28: 2, 29: 1,
                  30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}
_GRADIENT_TYPES = {6, 7, 8, 9, 10, 11, 13}    # floating and complex: the dtypes that may require gradients
_DEVICES = {"cpu", "cuda"}


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
    dtypes: dict[str, Any] = {}
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ModelLoadError(f"{name}: refused: {member} asks for {fqn!r} to be unpickled (use_pickle), which "
                                 "could run code from the file")
        path = meta.get("path_name")
        if not isinstance(path, str) or not re.fullmatch(rf"{prefix}\d+", path):
            raise ModelLoadError(f"{name}: refused: {member} stores {fqn!r} as {path!r}, not as raw tensor data")
        record = f"{member.rsplit('/', 1)[0]}/{path}"
        dtype = _check_tensor_meta(archive, record, meta.get("tensor_meta"), f"{name}: refused: {member}: {fqn!r}")
        if dtypes.setdefault(path, dtype) != dtype:  # torch views the record with its first entry's dtype
            raise ModelLoadError(f"{name}: refused: {member} reads {path} as two dtypes")


def _check_tensor_meta(archive: ZipArchive, record: str, meta: Any, where: str) -> int:
    """The dtype code of a raw tensor after checking that its view fits its record.

    torch.export.load views each record with the entry's sizes, strides and offset, and makes an
    EMPTY record ``torch.zeros(sizes)``: a few bytes of JSON would otherwise allocate any size."""
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{where} has no tensor metadata")
    dtype, device = meta.get("dtype"), meta.get("device")
    if isinstance(dtype, bool) or dtype not in _ELEMENT_BYTES:
        raise ModelLoadError(f"{where} has the unknown dtype code {str(dtype)[:20]!r}")
    if not isinstance(device, dict) or device.get("type") not in _DEVICES:
        raise ModelLoadError(f"{where} lives on the device {str(device)[:40]!r}, not the CPU or CUDA")
    if meta.get("requires_grad") and dtype not in _GRADIENT_TYPES:
        raise ModelLoadError(f"{where} requires gradients with a dtype that cannot have them")

    def ints(values: Any) -> list[int]:
        values = values if isinstance(values, list) else [values]
        out = [v.get("as_int") if isinstance(v, dict) and len(v) == 1 else None for v in values]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in out):
            raise ModelLoadError(f"{where} has sizes, strides or an offset that are not non-negative integers")
        return out

    sizes, strides, (offset,) = ints(meta.get("sizes")), ints(meta.get("strides")), ints(meta.get("storage_offset"))
    if len(sizes) != len(strides):
        raise ModelLoadError(f"{where} has {len(sizes)} sizes but {len(strides)} strides")
    if record not in archive:
        raise ModelLoadError(f"{where} is stored in {record}, which the archive does not hold")
    have, item = archive.size(record), _ELEMENT_BYTES[dtype]
    if have % item:
        raise ModelLoadError(f"{where}: {record} holds {have} bytes, not a whole number of elements")
    need = 0 if 0 in sizes else (offset + sum((size - 1) * stride for size, stride in zip(sizes, strides)) + 1) * item
    if need > have:
        raise ModelLoadError(f"{where} views {need} bytes of {record}, which holds {have}")
    return dtype


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
