"""The reference cache's key: a hash of everything a cached reference model depends on.

A reference is reused only where rebuilding it would give the same model, so the key
covers the owner's weights *and* its architecture -- two owners with equal weights but
another activation must never share references -- plus the training data, the recipe,
RECIPE_VERSION, the seed, the precision the references train at, and the library's and
torch's versions.

The architecture is the module tree: every submodule's qualified name and class, its
extra_repr, its plain attributes (an activation function kept as an attribute), its
hooks, every parameter's and buffer's name, shape and dtype, and the code of each class
(the source of every class in its MRO, and the names, constants and closure values of
the functions it defines, so two classes made by one factory with different closures
differ), or for a ScriptModule / fx GraphModule its code.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import types

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .._hashing import tensor_bytes, update_framed
from .._version import __version__
from ..fingerprints import state_dict_sha256
from ..precision import current_precision
from .config import ProtectConfig
from .recipe import RECIPE_VERSION, recipe_meta

__all__ = ["architecture_sha256", "data_digest", "reference_cache_key"]

_DATA_ITEMS_HASHED = 64
_MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"training"}
_SIMPLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def reference_cache_key(owner: nn.Module, data: Dataset, config: ProtectConfig) -> str:
    """The cache folder's name for `owner`'s references built from `data` under `config`,
    trained at the precision in force here (precision.current_precision: protect computes
    the key inside its references' chosen_precision block).

    Not the replica counts: a model depends only on its name's seed, so runs with more
    replicas reuse the fewer's models (which split one lands in is decided per run). The
    precision is: a reference trained at another one is another model (the rounding of
    every step differs), and a cache hit across precisions would mix two runs' draws."""
    precision = current_precision()
    text = json.dumps({"format": "ipguard_fast-reference-cache-key-v2", "architecture": architecture_sha256(owner),
                       "weights": state_dict_sha256(owner), "data": data_digest(data),
                       "recipe": recipe_meta(config.effective_recipe), "recipe_version": RECIPE_VERSION,
                       "seed": config.seed, "version": __version__, "torch": torch.__version__,
                       # only when set, so that the keys of full-data, float32 caches stay as they were
                       **({"reference_images": config.reference_images} if config.reference_images else {}),
                       **({"precision": precision} if precision != "fp32" else {})},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def data_digest(data: Dataset) -> str:
    """SHA-256 of a data set: its length, its first 64 (image, label) items and 64 spread over
    it, and what it is made of where that is at hand -- every tensor of a TensorDataset or of
    the uint8 storage data_files reads (hashing them costs little next to training on them),
    every file of an ImageFolder by path, label, size and modification time. Only the first 64
    items were hashed once: data whose later items changed reused references trained on the
    old ones, without a word."""
    digest = hashlib.sha256(b"ipguard_fast-protect-data-v2")
    length = len(data)
    update_framed(digest, str(length).encode())
    spread = range(0, length, max(1, length // _DATA_ITEMS_HASHED))
    for index in sorted(set(range(min(length, _DATA_ITEMS_HASHED))) | set(spread)):
        image, label = data[index][0], data[index][1]
        update_framed(digest, tensor_bytes(torch.as_tensor(image)))
        update_framed(digest, str(int(label)).encode())
    for part in _stored_parts(data):
        update_framed(digest, part)
    return digest.hexdigest()


def _stored_parts(data: Dataset):
    """The bytes the data set is read from, where it says: tensors, or files by their stat."""
    if isinstance(data, TensorDataset):
        tensors = data.tensors
    elif isinstance(getattr(data, "images", None), torch.Tensor) and isinstance(getattr(data, "labels", None),
                                                                                 torch.Tensor):
        tensors = (data.images, data.labels)   # data_files.UInt8Images
    else:
        tensors = ()
    for tensor in tensors:
        yield f"{tuple(tensor.shape)} {tensor.dtype}".encode()
        yield tensor_bytes(tensor)
    samples = getattr(data, "samples", None)   # torchvision's ImageFolder: (path, class index) pairs
    if isinstance(samples, list):
        for sample in samples:
            if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
                # A data set of the caller's own whose `samples` hold something else: its items
                # (hashed above) are what it is known by.
                yield f"samples item {type(sample).__name__}".encode()
                continue
            path, label = sample
            try:
                stat = os.stat(path)
                yield f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8", "backslashreplace")
            except (OSError, TypeError, ValueError):
                yield f"{path!r} {label!r} unreadable".encode("utf-8", "backslashreplace")


def architecture_sha256(owner: nn.Module) -> str:
    """SHA-256 of `owner`'s module tree and code (not its weights' values)."""
    digest = hashlib.sha256(b"ipguard_fast-architecture-v1")
    for name, module in owner.named_modules(remove_duplicate=False):
        for piece in _module_pieces(name, module):
            update_framed(digest, piece.encode("utf-8", "backslashreplace"))
    named = [("parameter", n, t) for n, t in owner.named_parameters(remove_duplicate=False)]
    named += [("buffer", n, t) for n, t in owner.named_buffers(remove_duplicate=False)]
    for role, name, tensor in named:
        update_framed(digest, f"{role} {name} {tuple(tensor.shape)} {tensor.dtype}".encode())
    return digest.hexdigest()


def _module_pieces(name: str, module: nn.Module):
    cls = type(module)
    yield f"module {name} {_qualified(cls)}"
    yield module.extra_repr()
    yield "|".join(_class_code(c) for c in cls.__mro__ if c is not object)
    for attribute, value in sorted(vars(module).items()):
        if attribute not in _MODULE_INTERNALS:
            yield f"{attribute}={_value_text(value)}"
    for hooks in ("_forward_pre_hooks", "_forward_hooks"):
        yield f"{hooks}: " + ",".join(_value_text(h) for h in getattr(module, hooks, {}).values())
    code = _script_code(module)
    if code is not None:
        yield code


def _script_code(module: nn.Module) -> str | None:
    """A ScriptModule's TorchScript code (or graph), an fx GraphModule's Python code."""
    if isinstance(module, torch.jit.ScriptModule):
        for read in (lambda: module.code, lambda: str(module.graph)):
            try:
                return str(read())
            except (RuntimeError, AttributeError):   # a ScriptModule without forward has neither
                continue
        return ""
    if isinstance(module, torch.fx.GraphModule):
        return str(module.code)
    return None


@functools.cache
def _class_code(cls: type) -> str:
    """The SHA-256 of a class's source and of its functions' code identity, else its name."""
    digest = hashlib.sha256(_qualified(cls).encode())
    try:
        update_framed(digest, inspect.getsource(cls).encode())
    except (OSError, TypeError):   # built in, made at run time, or its file is gone: the name is all there is
        update_framed(digest, b"<no source>")
    for attribute, value in sorted(vars(cls).items()):
        function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(function, types.FunctionType):
            update_framed(digest, f"{attribute}: {_function_text(function, depth=2)}".encode())
    return digest.hexdigest()


def _function_text(function: types.FunctionType, depth: int) -> str:
    """What a function's behaviour depends on beyond its source text: the global names it
    reads, its constants, the values it closes over (and, `depth` levels down, the same
    for the plain Python functions among them)."""
    parts = [_code_text(function.__code__)]
    for cell in function.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:   # an empty cell
            continue
        recurse = isinstance(value, types.FunctionType) and depth > 0
        parts.append(_function_text(value, depth - 1) if recurse else _value_text(value))
    for name in function.__code__.co_names:
        value = function.__globals__.get(name)
        if isinstance(value, types.FunctionType) and depth > 0:
            parts.append(f"{name}: {_function_text(value, depth - 1)}")
    return "; ".join(parts)


def _code_text(code: types.CodeType) -> str:
    consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts
              if isinstance(c, (types.CodeType, *_SIMPLE))]
    return f"{code.co_name}({','.join(code.co_names)})[{','.join(consts)}]{code.co_code.hex()}"


def _value_text(value, depth: int = 2) -> str:
    """A stable text for an attribute's value (never an address)."""
    if isinstance(value, _SIMPLE):
        return repr(value)
    if isinstance(value, (tuple, list)) and depth > 0:
        return "(" + ",".join(_value_text(v, depth - 1) for v in value[:64]) + ")"
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype} {hashlib.sha256(tensor_bytes(value)).hexdigest()}"
    if isinstance(value, functools.partial):
        return f"partial({_value_text(value.func)}, {_value_text(value.args)}, {_value_text(value.keywords)})"
    if isinstance(value, dict) and depth > 0:
        items = sorted(value.items(), key=lambda item: repr(item[0]))
        return "{" + ",".join(f"{k!r}:{_value_text(v, depth - 1)}" for k, v in items) + "}"
    if isinstance(value, types.FunctionType):   # its own code; what it closes over only in _function_text
        return f"{_qualified(value)} {_code_text(value.__code__)}"
    if callable(value) and hasattr(value, "__qualname__"):   # builtins, classes, methods
        return _qualified(value)
    return f"<{_qualified(type(value))}>"


def _qualified(obj) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
