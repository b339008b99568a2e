"""protect()'s inputs checked and put in shape: the training data as a Dataset of
(image, label), the owner's input shape and class count, the caller's own references."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._validate import ArgumentError
from ..data_files import UInt8Images
from ..modules import eval_mode, module_device
from ..search.api import float32_mismatch
from .references import Reference
from .select import named_references

__all__ = ["checked_labels", "checked_owner", "checked_pixels", "given_negatives", "given_references", "held_out_data", "owner_shapes",
           "training_data"]

# Data sets up to this many bytes of float32 images are gathered into one TensorDataset:
# every reference trains for several epochs on them, and sliced tensors are much faster
# than a DataLoader's per-item collate (it also lets distillation precompute the teacher).
_MATERIALISE_BYTES = 1 << 30


def checked_owner(owner) -> nn.Module:
    if not isinstance(owner, nn.Module):
        raise ArgumentError("owner", f"must be an nn.Module, got {type(owner).__name__}")
    other = float32_mismatch(owner)
    if other:   # else reported as the owner failing on train_data's float32 images
        raise ArgumentError("owner", f"has {other} weights; protect trains and searches in float32 (convert it "
                                     "with .float())")
    return owner


def training_data(train_data, argument: str = "train_data") -> Dataset:
    """A Dataset of (image, label) from a Dataset or a DataLoader (its dataset); `argument`
    names it in errors."""
    data = train_data.dataset if isinstance(train_data, DataLoader) else train_data
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise ArgumentError(argument, f"must be a torch Dataset of (image, label) or a DataLoader, got "
                                      f"{type(train_data).__name__}")
    if len(data) == 0:
        raise ArgumentError(argument, "is empty")
    item = _item(data, 0, argument)
    if not isinstance(item, (tuple, list)) or len(item) < 2 or not isinstance(item[0], torch.Tensor):
        raise ArgumentError(argument, "items must be (image tensor, label) pairs")
    if not item[0].is_floating_point():   # uint8 pixels (torchvision's read_image, PILToTensor): 0-255
        raise ArgumentError(argument, f"holds {item[0].dtype} images; protect takes float pixels in [0, 1] "
                                      "(divide uint8 pixels by 255, as torchvision's ToTensor does)")
    if isinstance(data, TensorDataset) or len(data) * item[0].numel() * 4 > _MATERIALISE_BYTES:
        return data
    if isinstance(data, UInt8Images):   # MNIST IDX and CIFAR binary files: one conversion, not 60,000 items
        return data.as_tensor_dataset()
    items = [_item(data, i, argument) for i in range(len(data))]
    images = torch.stack([torch.as_tensor(image).float() for image, _ in items])
    labels = torch.tensor([int(label) for _, label in items], dtype=torch.int64)
    return TensorDataset(images, labels)


def _item(data: Dataset, index: int, argument: str):
    """data[index], an item it cannot read (an ImageFolder's damaged image) reported against `argument`."""
    try:
        return data[index]
    except ValueError as exc:
        raise ArgumentError(argument, str(exc)) from exc


def held_out_data(value, input_shape: tuple, lo: float = 0.0, hi: float = 1.0) -> Dataset:
    """protect's held_out_data, checked before any work: a Dataset (or DataLoader) of
    (image, label) with images of the owner's input shape, pixels in [lo, hi]."""
    data = training_data(value, "held_out_data")
    shape = tuple(torch.as_tensor(data[0][0]).shape)
    if shape != tuple(input_shape):
        raise ArgumentError("held_out_data", f"holds images of shape {shape}; the owner takes {tuple(input_shape)}")
    return checked_pixels(data, "held_out_data", lo, hi)


def checked_pixels(data: Dataset, argument: str, lo: float = 0.0, hi: float = 1.0) -> Dataset:
    """`data` (a training_data result) when its pixels lie in the search's box [lo, hi]: every
    image of a TensorDataset, else the first; refused naming `argument` before any work (the
    pool starts from these images, and the owner's mistakes among them are pool points)."""
    tensors = getattr(data, "tensors", None)
    images = tensors[0] if tensors is not None else torch.as_tensor(data[0][0])
    low, high = float(images.min()), float(images.max())
    if not lo <= low <= high <= hi:
        raise ArgumentError(argument, f"pixels span [{low:g}, {high:g}], outside the pixel box [{lo:g}, {hi:g}] "
                                      "(normalisation belongs inside the model: ipguard_fast.Normalized)")
    return data


def checked_labels(data: Dataset, num_classes: int, argument: str) -> Dataset:
    """`data` when its labels are classes of the owner (0 to num_classes - 1): every label of a
    TensorDataset, of MNIST / CIFAR files or of an ImageFolder (its targets), else the first;
    refused naming `argument` before any work (a label past the owner's classes failed the first
    training minutes in, and no held-out prediction could ever match it)."""
    tensors = getattr(data, "tensors", None)
    labels = (tensors[1] if tensors is not None and len(tensors) > 1 else
              data.labels if isinstance(data, UInt8Images) else getattr(data, "targets", None))
    labels = torch.as_tensor(labels if labels is not None else data[0][1])
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or not labels.numel():
        return data   # soft labels or none: nothing to compare with the owner's classes
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ArgumentError(argument, f"labels span [{low}, {high}]; the owner has {num_classes} classes "
                                      f"(labels 0 to {num_classes - 1})")
    return data


def owner_shapes(owner: nn.Module, data: Dataset) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes), from one forward of the first image."""
    image = torch.as_tensor(data[0][0]).float()
    with torch.no_grad(), eval_mode(owner):
        try:
            out = owner(image[None].to(module_device(owner)))
        except Exception as exc:   # the owner's own error, reported against the data it was given
            raise ArgumentError("train_data", f"the owner fails on an image of shape {list(image.shape)}: "
                                              f"{exc}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArgumentError("owner", f"expected logits [B, C] with C >= 2, got {got}")
    return tuple(image.shape), int(out.shape[1])


def given_references(references) -> list[Reference]:
    """The caller's references, each its own kind (left out alone for the held-out rates)."""
    if isinstance(references, dict):
        unknown = set(references) - {"positives", "negatives"}
        if unknown:
            raise ArgumentError("references", f"unknown keys {sorted(unknown)}; expected 'positives' and "
                                              "'negatives'")
        positives, negatives = references.get("positives"), references.get("negatives")
    elif isinstance(references, (tuple, list)) and len(references) == 2:
        positives, negatives = references
    else:
        raise ArgumentError("references", "expected {'positives': [...], 'negatives': [...]} or "
                                          "(positives, negatives)")
    out = []
    for role, key, entries in (("positive", "positives", positives), ("negative", "negatives", negatives)):
        try:
            named = named_references(f"references['{key}']", entries if entries is not None else [])
        except ValueError as exc:
            if str(exc).startswith("references"):
                raise
            raise ArgumentError("references", str(exc)) from exc
        if len(named) < 2:
            raise ArgumentError("references", f"need at least 2 {key} (each is left out in turn to judge the k "
                                              f"choice and the threshold), got {len(named)}")
        out += [Reference(name, role, f"given/{i}", "select", model) for i, (name, model) in enumerate(named)]
    return out


def given_negatives(negatives) -> list[Reference]:
    """The caller's own independent models, mixed with the recipe's negatives: each its own
    kind (left out alone for the held-out rates), every second one validating (so the
    threshold meets them too), never cached."""
    try:
        named = named_references("negatives", list(negatives))
    except TypeError:
        raise ArgumentError("negatives", f"expected a list of models, got {type(negatives).__name__}") from None
    return [Reference(f"given/{name}", "negative", f"given-negative/{i}", "validate" if i % 2 else "select", model)
            for i, (name, model) in enumerate(named)]
