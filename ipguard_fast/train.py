"""A small, deterministic supervised training loop (cross-entropy or distillation) and accuracy.

It takes a model and a data set, nothing else (the demo's models: ipguard_fast.models.digits).
Everything that trains takes a ``seed``: batch order comes from a local ``torch.Generator``
and any stochastic layers (dropout) run under a forked, seeded global RNG, so the same call
gives the same weights on CPU and the caller's RNG state is left untouched.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ._validate import ArgumentError, finite_number, non_negative_int, positive_int
from .augment import random_shift
from .modules import eval_mode, module_device
from .precision import training_precision

__all__ = ["Perturb", "TrainRecipe", "accuracy", "distillation_loss", "mean_loss", "predict", "train_classifier",
           "train_model"]

_OPTIMIZERS = ("adam", "sgd")
_LOSSES = ("ce", "kd", "soft")


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained: every setting checked once, here.

    loss: "ce" (labels), "kd" (a teacher's logits at `temperature`, labels ignored) or
    "soft" (logits the data set carries in place of labels). augment: each batch's images
    shifted by a few random pixels (augment.random_shift)."""

    epochs: int
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    loss: str = "ce"
    temperature: float = 4.0
    augment: bool = False

    def __post_init__(self):
        non_negative_int("epochs", self.epochs)
        finite_number("lr", self.lr, positive=True)
        positive_int("batch_size", self.batch_size)
        if self.optimizer not in _OPTIMIZERS:
            raise ArgumentError("optimizer", f"must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        finite_number("weight_decay", self.weight_decay, minimum=0.0)
        if self.loss not in _LOSSES:
            raise ArgumentError("loss", f"must be one of {_LOSSES}, got {self.loss!r}")
        finite_number("temperature", self.temperature, positive=True)
        if not isinstance(self.augment, bool):
            raise ArgumentError("augment", f"must be True or False, got {self.augment!r}")


# perturb(model, x, y) -> x': the batch a step trains on (adversarial training's inner attack).
Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def train_classifier(model: nn.Module, dataset: Dataset, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                     optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.9, seed: int = 0,
                     params: Iterable[nn.Parameter] | None = None, device: str | torch.device = "cpu",
                     loss: str = "ce", teacher: nn.Module | None = None, temperature: float = 4.0,
                     on_epoch: Callable[[int, nn.Module], bool | None] | None = None,
                     augment: bool = False) -> nn.Module:
    """train_model with the recipe's settings as keywords."""
    recipe = TrainRecipe(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay,
                         momentum=momentum, loss=loss, temperature=temperature, augment=augment)
    return train_model(model, dataset, recipe, seed=seed, params=params, device=device, teacher=teacher,
                       on_epoch=on_epoch)


def train_model(model: nn.Module, dataset: Dataset, recipe: TrainRecipe, *, seed: int = 0,
                params: Iterable[nn.Parameter] | None = None, device: str | torch.device = "cpu",
                teacher: nn.Module | None = None, on_epoch: Callable[[int, nn.Module], bool | None] | None = None,
                perturb: Perturb | None = None) -> nn.Module:
    """Train ``model`` in place on ``dataset`` of (image, label); return it in eval mode.

    ``params`` restricts training to those parameters (e.g. the last layer for
    FTLL/RTLL): the others are frozen for the duration (``requires_grad``
    restored afterwards), and BatchNorm layers whose own parameters are all
    frozen stay in eval mode so their running statistics do not drift either
    -- "frozen" then really means the layer is unchanged.

    ``recipe.loss="kd"`` distils from ``teacher``'s logits: KL(teacher || student) at
    the recipe's temperature, scaled by T^2 as in Hinton et al. so gradient magnitudes
    do not shrink with T. The teacher runs in eval mode without gradients on its own device
    (it is not moved) and its mode is restored afterwards. ``perturb`` replaces each batch's
    images before the step (adversarial training). ``on_epoch(epoch, model)`` runs after each epoch; when it
    returns True, training stops there.
    """
    _check_args(model, dataset, recipe, teacher)
    device = torch.device(device)
    model.to(device)
    teacher_device = module_device(teacher) if teacher is not None else None   # the caller's: never moved
    all_params = list(model.parameters())
    trainable = _select_params(all_params, params)
    opt = _optimizer(recipe.optimizer, trainable, recipe.lr, recipe.weight_decay, recipe.momentum)
    generator = torch.Generator().manual_seed(seed)
    # Shifts from a generator of their own: the batch order is the same with or without them.
    shifts = torch.Generator().manual_seed(seed + 1)
    only = {id(p) for p in trainable} if params is not None else None

    def batch_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if recipe.augment:
            x = random_shift(x, shifts)
        if perturb is not None:
            x = perturb(model, x, y.to(device))
        logits = model(x)
        if recipe.loss == "ce":
            return F.cross_entropy(logits, y.to(device))
        if recipe.loss == "soft":
            return distillation_loss(logits, y.to(device).float(), recipe.temperature)
        with torch.no_grad():
            target = teacher(x.to(teacher_device)).float().to(device)
        return distillation_loss(logits, target, recipe.temperature)

    teacher_mode = eval_mode(teacher) if teacher is not None else contextlib.nullcontext()
    # fork_rng: dropout & co. are reproducible and the caller's RNG is untouched.
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    precision = training_precision(model, device)
    with _only_trainable(all_params, trainable), teacher_mode, torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for epoch in range(1, recipe.epochs + 1):
            _set_train_mode(model, only)
            for x, y in _batches(dataset, recipe.batch_size, shuffle=True, generator=generator, device=device):
                with precision.autocast():
                    value = batch_loss(precision.images(x.to(device, non_blocking=True)), y)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
            if on_epoch is not None and on_epoch(epoch, model):
                break   # the caller's stopping rule (e.g. an accuracy reached)
    precision.restore(model)
    return model.eval()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Hinton et al. soft-target loss: T^2 * KL(softmax(t/T) || softmax(s/T))."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (int64) of ``model`` on a [N, C, H, W] tensor, in eval mode."""
    positive_int("batch_size", batch_size)
    device = module_device(model)
    with eval_mode(model):
        out = [model(images[i : i + batch_size].to(device)).argmax(1).cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Fraction of ``dataset`` (image, label) pairs that ``model`` classifies correctly."""
    return _mean_over(model, dataset, batch_size, lambda logits, y: float((logits.argmax(1) == y).sum()))


def mean_loss(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Mean cross-entropy of ``model`` on ``dataset``'s (image, label) pairs, in eval mode:
    how closely a model fits the data it trained on, past its accuracy."""
    return _mean_over(model, dataset, batch_size,
                      lambda logits, y: float(F.cross_entropy(logits.float(), y, reduction="sum")))


@torch.no_grad()
def _mean_over(model: nn.Module, dataset: Dataset, batch_size: int, per_batch) -> float:
    """The sum of per_batch(logits on CPU, labels) over ``dataset``, in eval mode, per item."""
    positive_int("batch_size", batch_size)
    if len(dataset) == 0:
        raise ValueError("dataset: must not be empty")
    device = module_device(model)
    total = 0.0
    with eval_mode(model):
        for x, y in _batches(dataset, batch_size, shuffle=False):
            total += per_batch(model(x.to(device)).cpu(), y)
    return total / len(dataset)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float,
               momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@contextlib.contextmanager
def _only_trainable(all_params: list[nn.Parameter], trainable: list[nn.Parameter]) -> Iterator[None]:
    """requires_grad only on `trainable` for the duration; every flag restored afterwards."""
    saved = [p.requires_grad for p in all_params]
    chosen = {id(p) for p in trainable}
    try:
        for p in all_params:
            p.requires_grad_(id(p) in chosen)
        yield
    finally:
        for p, flag in zip(all_params, saved):
            p.requires_grad_(flag)


def _batches(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
             device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) mini-batches. TensorDatasets are sliced directly (much faster
    than a DataLoader's per-sample collate); anything else goes through one, read by
    worker processes into pinned memory when training on CUDA (the CPU's cores then
    only feed the GPU). The batch order comes from `generator` either way."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        x_all, y_all = dataset.tensors[0], dataset.tensors[1]
        n = len(x_all)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield x_all[idx], y_all[idx]
        return
    cuda = device is not None and torch.device(device).type == "cuda"
    workers = min(8, (os.cpu_count() or 1) // 2) if cuda else 0
    # Never without a generator: a DataLoader then draws its base seed from the caller's global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, pin_memory=cuda,
                        generator=generator if generator is not None else torch.Generator())
    for x, y in loader:
        yield x, torch.as_tensor(y)


def _set_train_mode(model: nn.Module, trainable_ids: set[int] | None) -> None:
    model.train()
    if trainable_ids is None:
        return
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            own = list(module.parameters(recurse=False))
            if not any(id(p) in trainable_ids for p in own):
                module.eval()


def _select_params(all_params: list[nn.Parameter], params: Iterable[nn.Parameter] | None) -> list[nn.Parameter]:
    if params is None:
        return all_params
    chosen = list(params)
    if not chosen:
        raise ValueError("params: must contain at least one parameter of model (or be None for all)")
    known = {id(p) for p in all_params}
    if any(id(p) not in known for p in chosen):
        raise ValueError("params: must be parameters of model")
    # Deduplicate, keeping order (optimizers reject repeated parameters).
    unique: dict[int, nn.Parameter] = {}
    for p in chosen:
        unique.setdefault(id(p), p)
    return list(unique.values())


def _check_args(model, dataset, recipe: TrainRecipe, teacher) -> None:
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", f"must be an nn.Module, got {type(model).__name__}")
    if not isinstance(recipe, TrainRecipe):
        raise ArgumentError("recipe", f"expected a TrainRecipe, got {type(recipe).__name__}")
    if len(dataset) == 0:
        raise ArgumentError("dataset", "must not be empty")
    if recipe.loss == "kd" and teacher is None:
        raise ArgumentError("teacher", "is required when loss='kd'")
    if recipe.loss != "kd" and teacher is not None:
        raise ArgumentError("teacher", "is only used with loss='kd'; pass loss='kd' or drop teacher")
