"""The mistakes baseline (QuRD/AKH, AAAI 2025): the owner's own misclassified held-out
inputs, labelled with its wrong answers, as fingerprints. It costs nothing and performs on
par with published methods, so every method is judged beside it; protect also offers the
mistakes to its selection beside the boundary points (stages.make_pool, `held_out`)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._validate import ArgumentError, positive_int
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..modules import eval_mode, module_device
from ..search.acceptance import owner_label_margin

__all__ = ["mistakes_fingerprints"]


def mistakes_fingerprints(owner: nn.Module, held_out: Dataset, n: int, *, batch_size: int = 512,
                          argument: str = "held_out") -> FingerprintSet:
    """Up to n inputs of `held_out` (data the owner never trained on) that the owner
    misclassifies, in data order, with the owner's label as the fingerprint's label and the
    true one as its source label. Fewer when the owner makes fewer mistakes
    (meta["requested"] says how many were asked for). The data is read a batch at a time
    and only the mistakes are kept; `argument` names the data in errors."""
    n = positive_int("n", n)
    if len(held_out) == 0:
        raise ArgumentError(argument, "is empty")
    device = module_device(owner)
    kept: list[tuple[torch.Tensor, ...]] = []
    found, seen, shape, classes = 0, 0, None, None
    with torch.no_grad(), eval_mode(owner):
        # A generator of its own: a DataLoader draws its base seed from the caller's global RNG otherwise.
        for images, truth in DataLoader(held_out, batch_size=batch_size, shuffle=False, generator=torch.Generator()):
            images, truth = torch.as_tensor(images).float(), torch.as_tensor(truth).long()
            shape, seen = shape or list(images.shape[1:]), seen + len(truth)
            logits = owner(images.to(device)).float().cpu()
            classes = int(logits.shape[1])
            labels = logits.argmax(1)
            wrong = torch.nonzero(labels != truth).flatten()[:n - found]
            if len(wrong):
                kept.append((images[wrong].clone(), labels[wrong], truth[wrong], logits[wrong]))
                found += len(wrong)
            if found == n:
                break
    images, labels, truth, logits = ([torch.cat(column) for column in zip(*kept)] if kept else
                                     (torch.empty(0, *shape), torch.empty(0, dtype=torch.int64),
                                      torch.empty(0, dtype=torch.int64), torch.empty(0, classes)))
    meta = {"method": "mistakes", "k": None, "requested": n, "candidates_tried": seen,
            "num_classes": classes, "input_shape": shape,
            "model_sha256": state_dict_sha256(owner), "init": "held_out_data"}
    return FingerprintSet(images=images, labels=labels, source_labels=truth,
                          margins=owner_label_margin(logits, labels),
                          steps=torch.zeros(len(labels), dtype=torch.int64), meta=meta)
