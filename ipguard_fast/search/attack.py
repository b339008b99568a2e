"""A torchattacks-style front end, for code written against existing reimplementations."""
from __future__ import annotations

import torch

from .._validate import ArgumentError
from ..fingerprints import FingerprintSet
from .api import extract_fingerprints


class IPGuard:
    """fps = IPGuard(model, k=10, steps=1000, lr=0.01)(images)

    Searches one fingerprint from each image (i = the model's label of it, j a
    random other class, or the least likely with labels="least_likely") and
    returns the FingerprintSet of those accepted, like an attack returns its
    adversarial images. Extra keyword arguments go to extract_fingerprints.
    """

    def __init__(self, model: torch.nn.Module, k: float = 10.0, steps: int = 1000, lr: float = 0.01,
                 labels: str = "predicted", seed: int = 0, **options):
        self.model, self.k, self.steps, self.lr = model, k, steps, lr
        self.labels, self.seed, self.options = labels, seed, options

    def __call__(self, images: torch.Tensor) -> FingerprintSet:
        if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
            raise ArgumentError("images", "expected a non-empty tensor [N, *input_shape]")
        n = images.shape[0]
        options = dict(progress=False)
        options.update(self.options)
        return extract_fingerprints(self.model, n, k=self.k, input_shape=tuple(images.shape[1:]),
                                    init=images, labels=self.labels, lr=self.lr, max_steps=self.steps,
                                    max_candidates=n, seed=self.seed, **options)

    def __repr__(self) -> str:
        return f"IPGuard(model={type(self.model).__name__}, k={self.k}, steps={self.steps}, lr={self.lr})"
