"""The mistakes baseline (QuRD/AKH, AAAI 2025): the owner's own misclassified held-out
inputs, labelled with its wrong answers, as fingerprints. It costs nothing and performs on
par with published methods, so every method is judged beside it."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError, positive_int
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..modules import eval_mode, module_device
from ..search.acceptance import owner_label_margin

__all__ = ["mistakes_fingerprints"]


def mistakes_fingerprints(owner: nn.Module, held_out: Dataset, n: int, *, batch_size: int = 512) -> FingerprintSet:
    """Up to n inputs of `held_out` (data the owner never trained on) that the owner
    misclassifies, in data order, with the owner's label as the fingerprint's label and the
    true one as its source label. Fewer when the owner makes fewer mistakes
    (meta["requested"] says how many were asked for)."""
    n = positive_int("n", n)
    if len(held_out) == 0:
        raise ArgumentError("held_out", "is empty")
    images = torch.stack([torch.as_tensor(held_out[i][0]).float() for i in range(len(held_out))])
    truth = torch.tensor([int(held_out[i][1]) for i in range(len(held_out))], dtype=torch.int64)
    device = module_device(owner)
    with torch.no_grad(), eval_mode(owner):
        logits = torch.cat([owner(images[i:i + batch_size].to(device)).float().cpu()
                            for i in range(0, len(images), batch_size)])
    labels = logits.argmax(1)
    wrong = torch.nonzero(labels != truth).flatten()[:n]
    meta = {"method": "mistakes", "k": None, "requested": n, "candidates_tried": len(held_out),
            "num_classes": int(logits.shape[1]), "input_shape": list(images.shape[1:]),
            "model_sha256": state_dict_sha256(owner), "init": "held_out_data"}
    return FingerprintSet(images=images[wrong].clone(), labels=labels[wrong].clone(),
                          source_labels=truth[wrong].clone(), margins=owner_label_margin(logits[wrong], labels[wrong]),
                          steps=torch.zeros(len(wrong), dtype=torch.int64), meta=meta)
