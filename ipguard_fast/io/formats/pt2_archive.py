"""The safety inspection of a torch.export (.pt2) archive, before torch sees it (pt2.py's ``inspect``).

A suspect's model file comes from the party accused of piracy. ``torch.export.load``
trusts its archive, and an archive can make it run code while loading:

- weights or constants marked ``use_pickle`` are read with ``torch.load(weights_only=False)``;
- custom and opaque objects among the constants are unpickled (``pickle.loads``);
- legacy ``<model>.pt`` weight files and the sample inputs go through a loader that falls
  back to ``weights_only=False`` when the safe load fails;
- ``data/aotinductor/`` holds native shared libraries that are loaded;
- the graph's symbolic-shape expressions are parsed with ``sympy.sympify`` (``eval``), its
  ``guards_code`` is compiled into Python, and its call targets are looked up by name on
  the ``torch``, ``operator`` and ``math`` modules (``torch.os.system`` resolves).

``inspect_archive`` checks the archive's bytes (pt2.py reads the file once and hands torch
those same bytes) against what a plain export of an ATen graph contains. What it accepts:
raw tensor weights and constants, sample inputs that load with ``weights_only=True``,
graphs whose call targets are registered operators (``torch.ops.*``) or the
symbolic-integer helpers torch itself serialises, shape expressions made of symbols,
numbers and sympy/torch shape functions, and no guards code. Everything else is refused
with ModelLoadError, saying why.
"""
from __future__ import annotations

import io
import json
import math
import operator
import re
import zipfile
from typing import Any, Iterator

import torch

from ..._files import short_error as _short
from ..weights import ModelLoadError

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
_MAX_JSON_BYTES = 256 * 1024 * 1024
_MAX_JSON_DEPTH = 200

# Call targets besides registered operators: the symbolic-integer helpers torch serialises
# by module path (torch._export.serde.serialize._SYM_OPS), named here as they are written.
_SYM_TARGETS = {
    f"{op.__module__}.{op.__name__}"
    for op in (operator.eq, operator.ne, operator.le, operator.ge, operator.lt, operator.gt, operator.neg,
               operator.pos, math.trunc, operator.mul, operator.add, operator.sub, operator.floordiv, operator.mod,
               operator.pow, operator.truediv, operator.and_, operator.or_, operator.lshift, operator.rshift)
} | {f"torch.{name}" for name in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")}
_OPERATOR_TARGET = re.compile(r"torch\.ops\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_REFUSED_OPERATORS = ("triton", "aoti", "torchbind", "call_torchbind", "executorch")

# Shape expressions: sympy's printed forms of symbols, numbers and shape functions.
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And",
    "Or", "Not", "Piecewise", "ITE", "floor", "ceiling", "sqrt", "oo", "zoo", "nan", "true", "false", "True", "False",
    "None", "S", "Half", "One", "Zero", "NegativeOne", "Infinity", "NegativeInfinity",
    # keyword arguments of Symbol(...)
    "positive", "negative", "integer", "real", "nonnegative", "nonpositive", "finite", "infinite", "commutative",
    "zero", "nonzero", "even", "odd", "rational", "prime",
    # torch.utils._sympy.functions, as ExportedProgramDeserializer registers them
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "OpaqueUnaryFn_sqrt", "Identity",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor", "Max", "Min",
}
_SYMBOL_NAME = re.compile(r"[a-z]{1,8}\d+")
_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<string>'[A-Za-z_][A-Za-z0-9_]*')|(?P<op>\*\*|//|[<>!=]=|[-+*/%(),=<>~&|]))")


def inspect_archive(data: bytes, name: str = "archive") -> None:
    """Raise ModelLoadError unless the archive holds only data and ATen graphs (see the module doc)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelLoadError(f"{name} is not a loadable torch.export (.pt2) archive: {_short(exc)}") from exc
    root = _root_folder(members, name)
    models, seen = set(), set()
    for info in members:
        member = info.filename[len(root):]
        seen.add(member)
        if member in _FIXED or info.is_dir():
            continue
        match = next((m for p in _MEMBER_PATTERNS if (m := p.fullmatch(member))), None)
        if match is None:
            raise ModelLoadError(f"{name}: refused: the archive holds {member!r}, which is not plain tensor data or "
                                 f"an ATen graph ({_why(member)}); only .pt2 files of plain exported programs load")
        if match.groupdict().get("model"):
            models.add(match["model"])
    for model in sorted(models):
        _check_payload_config(archive, root, f"data/weights/{model}_weights_config.json", "weight_", name)
        _check_payload_config(archive, root, f"data/constants/{model}_constants_config.json", "tensor_", name)
        _check_sample_inputs(archive, root, f"data/sample_inputs/{model}.pt", name)
        _check_graph(_read_json(archive, root + f"models/{model}.json", name), f"{name}: models/{model}.json")


def _root_folder(members, name: str) -> str:
    roots = {info.filename.split("/", 1)[0] for info in members}
    if len(roots) != 1 or not all("/" in info.filename for info in members):
        raise ModelLoadError(f"{name} is not a torch.export (.pt2) archive (expected one root folder)")
    return roots.pop() + "/"


def _why(member: str) -> str:
    if member.startswith("data/aotinductor/"):
        return "AOTInductor native code would be loaded"
    if member.endswith(".pt") or "custom_obj_" in member or "opaque_obj_" in member:
        return "it would be unpickled"
    return "unknown member"


def _read_json(archive: zipfile.ZipFile, member: str, name: str) -> Any:
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ModelLoadError(f"{name}: refused: {member.split('/', 1)[1]} is missing") from None
    if info.file_size > _MAX_JSON_BYTES:
        raise ModelLoadError(f"{name}: refused: {member.split('/', 1)[1]} is {info.file_size} bytes")
    try:
        return json.loads(archive.read(info))
    except (ValueError, RecursionError, zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{name}: refused: {member.split('/', 1)[1]} is not readable JSON: {_short(exc)}") from None


def _check_payload_config(archive, root: str, member: str, prefix: str, name: str) -> None:
    """Every weight and constant must be raw tensor bytes (use_pickle false, a tensor file)."""
    if root + member not in archive.namelist():
        return  # a program without weights (or constants) has no config
    config = _read_json(archive, root + member, name)
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


def _check_sample_inputs(archive, root: str, member: str, name: str) -> None:
    """torch falls back to weights_only=False when the safe load fails: make sure it cannot fail."""
    if root + member not in archive.namelist():
        raise ModelLoadError(f"{name}: refused: {member} is missing")
    try:
        torch.load(io.BytesIO(archive.read(root + member)), weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{name}: refused: {member} holds more than tensors (torch would unpickle it "
                             f"without restrictions): {_short(exc)}") from None


def _check_graph(program: Any, where: str) -> None:
    if not isinstance(program, dict):
        raise ModelLoadError(f"{where}: refused: not an exported program")
    if program.get("guards_code"):
        raise ModelLoadError(f"{where}: refused: it carries guards code, which torch compiles into Python")
    for key in (program.get("range_constraints") or {}):
        if not _SYMBOL_NAME.fullmatch(str(key)):
            raise ModelLoadError(f"{where}: refused: symbol name {str(key)[:40]!r}")
    for kind, value in _strings_to_check(program, 0, where):
        if kind == "target":
            _check_target(value, where)
        else:
            _check_expression(value, where)


def _strings_to_check(node: Any, depth: int, where: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of every call target and every symbolic expression in the program."""
    if depth > _MAX_JSON_DEPTH:
        raise ModelLoadError(f"{where}: refused: nested more than {_MAX_JSON_DEPTH} levels deep")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("target", "as_operator") and isinstance(value, str):
                yield "target", value
            elif key == "expr_str" and isinstance(value, str):
                yield "expr", value
            else:
                yield from _strings_to_check(value, depth + 1, where)
    elif isinstance(node, list):
        for value in node:
            yield from _strings_to_check(value, depth + 1, where)


def _check_target(target: str, where: str) -> None:
    if target in _SYM_TARGETS:
        return
    if _OPERATOR_TARGET.fullmatch(target) and not any(word in target for word in _REFUSED_OPERATORS):
        return
    raise ModelLoadError(f"{where}: refused: the graph calls {target[:80]!r}, which is not a registered operator")


def _check_expression(text: str, where: str) -> None:
    """sympy.sympify evaluates the text as Python: allow only symbols, numbers and shape functions."""
    position = 0
    while position < len(text):
        match = _EXPR_TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                return
            raise ModelLoadError(f"{where}: refused: shape expression {text[:60]!r} is not a plain sympy expression")
        token = match["name"]
        if token is not None and token not in _SYMPY_NAMES and not _SYMBOL_NAME.fullmatch(token):
            raise ModelLoadError(f"{where}: refused: shape expression {text[:60]!r} uses {token!r}")
        position = match.end()
