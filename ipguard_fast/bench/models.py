"""The benchmark's models (package registry names with a training recipe), and a cache of
briefly trained weights.

Random weights give nearly flat logits, on which the boundary search rarely
converges, so end-to-end rates need trained models. `trained_model(name)`
trains each model once on scikit-learn's embedded digits, resized to the
model's input size (8x8 single-channel for digits_cnn, 3-channel upsampled
digits for the others), and caches the state dict as safetensors, keyed by the
training recipe. Per-step timings may use `random_model(name)`.

    from ipguard_fast.bench.models import trained_model
    bm = trained_model("resnet20", "cpu")      # bm.model, bm.test_accuracy, bm.input_shape
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
import torch
from torch import nn

from ..data import load_digits
from ..models import build_model
from ..nn import seeded
from ..train import accuracy, train_classifier

NUM_CLASSES = 10
DEFAULT_CACHE = Path(os.environ.get("IPGUARD_BENCH_CACHE", Path.home() / ".cache" / "ipguard_fast" / "bench"))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]
    registry_name: str                   # ipguard_fast.models.build_model's name for the architecture
    # Training recipe on digits at the input size (part of the cache key).
    epochs: int
    lr: float
    batch_size: int = 64
    optimizer: str = "adam"

    def build(self) -> nn.Module:
        return build_model(self.registry_name, NUM_CLASSES, self.input_shape)


SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("digits_cnn", (1, 8, 8), "digits_cnn", epochs=5, lr=3e-3),
        ModelSpec("resnet20", (3, 32, 32), "resnet20", epochs=4, lr=3e-3),
        ModelSpec("resnet50", (3, 224, 224), "tv:resnet50", epochs=3, lr=1e-3, batch_size=32),
        ModelSpec("vit_b_16", (3, 224, 224), "tv:vit_b_16", epochs=5, lr=1e-4, batch_size=32),
    )
}
MODEL_NAMES = tuple(SPECS)


@dataclass
class BenchModel:
    """A benchmark model with where its weights came from and its digits test accuracy."""
    name: str
    model: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    weights: str                         # "random", "trained", "cache" or "file"
    test_accuracy: float | None = None   # on the digits test split at the input size
    train_seconds: float | None = None
    path: str | None = None
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("model")
        d["input_shape"] = list(self.input_shape)
        d["parameters"] = sum(p.numel() for p in self.model.parameters())
        return d


def spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ValueError(f"name: unknown benchmark model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return SPECS[name]


def _digits(s: ModelSpec, split: str):
    c, h, _ = s.input_shape
    return load_digits(split, size=None if h == 8 else h, channels=c)


def random_model(name: str, device="cpu", seed: int = 0) -> BenchModel:
    """The architecture with seeded random weights (for per-step timings only)."""
    s = spec(name)
    model = seeded(s.build, seed).to(device).eval()
    return BenchModel(name, model, s.input_shape, NUM_CLASSES, "random")


def recipe_key(s: ModelSpec, seed: int) -> str:
    recipe = dict(name=s.name, shape=s.input_shape, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
                  optimizer=s.optimizer, seed=seed, data="sklearn-digits", torch=torch.__version__.split("+")[0])
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def trained_model(name: str, device="cpu", cache_dir: str | os.PathLike | None = None, *,
                  weights: str | os.PathLike | None = None, seed: int = 0, epochs: int | None = None,
                  verbose: bool = True) -> BenchModel:
    """`name` trained briefly on digits at its input size (cached), or loaded from `weights`.

    epochs overrides the recipe's epoch count (e.g. 1 for a seconds-long smoke run).

    The state dict is cached as `<cache_dir>/<name>-<recipe hash>.safetensors` with a
    JSON sidecar holding the test accuracy and training time; the hash covers the
    training recipe, so changing it retrains. Training runs on `device`.
    """
    from safetensors.torch import load_file, save_file

    s = spec(name)
    if epochs is not None:
        s = replace(s, epochs=epochs)
    model = seeded(s.build, seed)
    if weights is not None:
        path = Path(weights)
        sd = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                   weights_only=True)
        model.load_state_dict(sd)
        model.to(device).eval()
        return BenchModel(name, model, s.input_shape, NUM_CLASSES, "file",
                          test_accuracy=accuracy(model, _digits(s, "test"), batch_size=128), path=str(path))

    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    path = cache / f"{name}-{recipe_key(s, seed)}.safetensors"
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        model.load_state_dict(load_file(str(path)))
        meta = json.loads(sidecar.read_text())
        return BenchModel(name, model.to(device).eval(), s.input_shape, NUM_CLASSES, "cache",
                          test_accuracy=meta["test_accuracy"], train_seconds=meta["train_seconds"],
                          path=str(path), info=meta)

    if verbose:
        print(f"[models] training {name} on digits {list(s.input_shape)} for {s.epochs} epochs on {device} "
              f"(cached at {path})", flush=True)
    train = _digits(s, "train")
    t0 = time.perf_counter()
    train_classifier(model, train, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, optimizer=s.optimizer,
                     seed=seed, device=device)
    seconds = time.perf_counter() - t0
    test = _digits(s, "test")
    acc = accuracy(model, test, batch_size=128)
    meta = dict(name=name, test_accuracy=acc, train_seconds=seconds, epochs=s.epochs, lr=s.lr,
                batch_size=s.batch_size, optimizer=s.optimizer, seed=seed, trained_on=str(device),
                torch=torch.__version__)
    cache.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    sidecar.write_text(json.dumps(meta, indent=2))
    if verbose:
        print(f"[models] {name}: test accuracy {acc:.3f} after {seconds:.1f} s", flush=True)
    return BenchModel(name, model.eval(), s.input_shape, NUM_CLASSES, "trained", test_accuracy=acc,
                      train_seconds=seconds, path=str(path), info=meta)
