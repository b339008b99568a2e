"""The suspects evaluate builds, kept on disk so that an interrupted evaluate loses none.

Each suspect an attack of the registry builds (build_variants) is saved as it is finished,
one safetensors file in the same authenticated cache as protect's references
(selection/cache.py: a manifest of SHA-256s under a MAC made with the local key, a strict
load into the skeleton the attack makes, finite weights; anything else is rebuilt with a
warning naming it, or refused when read-only). Nothing is unpickled. A rerun of the same
evaluate loads the finished suspects and trains only the missing ones: the same models,
so the same report.

``folder/<key>/`` is one owner's (suspect_cache_key: its architecture and code, its
weights, the precision trainings run at, the library's and torch's versions). In it each
suspect's file is named by its variant's name and a digest of everything else it depends
on (suspect_digest): the attack and its settings (a model factory by the architecture and
the initial weights it gives at the suspect's seed), the seed, the data it trains on, the
batch size and the device type. A changed owner, data, seed or setting finds no file and
trains anew. The data are known by selection.cache_key.data_digest, as protect's are (a
TensorDataset such as digits, MNIST or CIFAR by all its tensors, an ImageFolder by its files).

Only models the registry builds on the CPU are cached: a variant whose attack returns
several models, whose settings cannot be described (not a dataclass, or a factory that
fails or gives no module with tensor weights), or that is built on or from another device,
is built as without a cache. The registry's wrappers (Preprocessed, HalfPrecision) are
cached: their skeletons rebuild them around the owner. Suspects the
caller gives (evaluate(suspects=...), ipguard evaluate --negatives) are never cached.
Under torchrun each rank builds or loads its share of the suspects (build_variants'
`share`), as without a cache; ranks that share the folder write it safely
(cache_manifest.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings

import torch
from torch import nn

from .._hashing import tensor_bytes
from .._version import __version__
from ..attacks import AttackContext, get_attack
from ..fingerprints import state_dict_sha256
from ..modules import canonical_layout, module_device
from ..nn import seeded
from ..precision import current_precision
from ..selection.cache import CacheLocation, ReferenceCache, ReferenceCacheWarning
from ..selection.cache_key import architecture_sha256, data_digest

__all__ = ["SuspectCache", "open_suspect_cache", "suspect_cache_key", "suspect_digest"]

ARGUMENT = "suspect_cache"


class SuspectCache:
    """One owner's suspects in `where` (a CacheLocation with a folder). `hits`: how many
    suspects were loaded rather than built."""

    def __init__(self, owner: nn.Module, where: CacheLocation):
        self.where = where
        self.store = ReferenceCache(where.folder, key=suspect_cache_key(owner), key_file=where.key_file,
                                    readonly=where.readonly, argument=ARGUMENT, label="suspect cache")
        self.hits = 0
        self._data: dict[int, tuple[object, str]] = {}   # id -> (the data set, kept alive; its digest)

    def build(self, variant, context: AttackContext) -> nn.Module:
        """`variant`'s model on `context`: loaded when cached and trusted, else built and saved."""
        attack = get_attack(variant.attack)
        name = self.file_name(variant, context)
        if name is not None:
            model = self.store.load(name, lambda: attack.skeleton(context, variant.settings))
            if model is not None:
                self.hits += 1
                return canonical_layout(model).eval()   # as Attack.run leaves a model: the same outputs
        (model,) = attack.run(context, variant.settings)
        if name is not None:
            self.store.save(name, model)
        return model

    def file_name(self, variant, context: AttackContext) -> str | None:
        """The cached file's name (without its suffix), or None when `variant` is not cached."""
        if len(get_attack(variant.attack).outputs(variant.settings)) != 1 or not _on_cpu(context):
            return None
        digest = suspect_digest(variant, context, self._data_digest(context.data))
        if digest is None:
            return None
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', variant.name)[:96]}-{digest[:24]}"

    def _data_digest(self, data) -> str:
        if id(data) not in self._data:
            self._data[id(data)] = (data, _data_digest(data))
        return self._data[id(data)][1]


def _data_digest(data) -> str:
    """protect's digest of `data` (selection.cache_key.data_digest: a TensorDataset's every
    tensor, an ImageFolder's every file), so a change anywhere in it trains anew."""
    return data_digest(data)


def _on_cpu(context: AttackContext) -> bool:
    """Built and owned on the CPU: where a model is built elsewhere depends on the attack
    (trained ones on the context's device, the others on the owner's), so a loaded copy
    could not be put where the built one would be."""
    return torch.device(context.device).type == "cpu" and module_device(context.owner).type == "cpu"


def open_suspect_cache(owner: nn.Module, suspect_cache) -> SuspectCache | None:
    """`suspect_cache` as a SuspectCache for `owner`: None (in memory, nothing cached), a
    folder, a CacheLocation (folder, key file, read-only), or a SuspectCache (as it is when
    it was opened for this owner, else the same place opened for it)."""
    opened = suspect_cache if isinstance(suspect_cache, SuspectCache) else None
    where = opened.where if opened is not None else suspect_cache
    where = where if isinstance(where, CacheLocation) or where is None else CacheLocation(where)
    if where is None or where.folder is None:
        return None
    try:
        if opened is not None and opened.store.key == suspect_cache_key(owner):
            return opened   # another owner's key would find files that are not this owner's suspects
        return SuspectCache(owner, where)
    except ValueError as exc:
        if getattr(exc, "argument", None) != "model":
            raise
        # weights that cannot be hashed (non-tensor extra state): no key, so nothing is cached
        warnings.warn(f"suspect cache: the owner cannot be keyed ({exc}); the suspects are not cached",
                      ReferenceCacheWarning, stacklevel=3)
        return None


def suspect_cache_key(owner: nn.Module) -> str:
    """The folder of `owner`'s suspects: its architecture and code, weights, the precision
    trainings run at here, the versions."""
    text = json.dumps({"format": "ipguard_fast-suspect-cache-key-v1", "architecture": architecture_sha256(owner),
                       "weights": state_dict_sha256(owner), "precision": current_precision(),
                       "version": __version__, "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def suspect_digest(variant, context: AttackContext, data: str) -> str | None:
    """SHA-256 of what `variant`'s model depends on beside the owner (`data`: the digest of
    the data it trains on); None when its settings cannot be described."""
    settings = _settings_text(variant.settings, context.seed)
    if settings is None:
        return None
    text = json.dumps({"format": "ipguard_fast-suspect-v1", "name": variant.name, "family": variant.family,
                       "role": variant.role, "attack": variant.attack, "settings": settings, "seed": context.seed,
                       "data": data, "batch_size": context.batch_size,
                       "device": torch.device(context.device).type}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _settings_text(settings, seed: int) -> dict | None:
    """The settings (an attack's dataclass) as text, field by field, each model factory by the
    model it gives at `seed` (the attack's initial weights: architecture and values); None
    for other settings, whose repr need not show all they hold, or when a factory fails."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        return None
    out = {"type": f"{type(settings).__module__}.{type(settings).__qualname__}"}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if callable(value):
            try:
                model = seeded(value, seed)
                value = f"factory {architecture_sha256(model)} {state_dict_sha256(model)}"
            except Exception:   # noqa: BLE001 -- not a factory we can describe: not cached
                return None
        elif isinstance(value, torch.Tensor):   # its repr elides the middle of a large tensor
            value = f"tensor {tuple(value.shape)} {value.dtype} {hashlib.sha256(tensor_bytes(value)).hexdigest()}"
        out[field.name] = repr(value)
    return out
