"""Where candidates come from: a start point x0 and labels (i, j) per candidate index.

Each candidate is a pure function of (seed, candidate index): its random draws come
from a generator seeded with a mix of the two, on the CPU. So the candidates, and
hence the fingerprints, do not depend on the batch size, on the device, or on how
many ranks share the work.
"""
from __future__ import annotations

from typing import Sequence

import torch

LABEL_MODES = ("random", "least_likely", "predicted")

# Seed-image starts past the first pass over the images: the image plus Gaussian noise
# with this standard deviation (a share of the pixel range hi - lo), drawn from the
# candidate's own generator. Cycling index % N alone would give two candidates the same
# start and, with the same labels, the same fingerprint (always so with "least_likely").
JITTER = 0.05


def candidate_seed(seed: int, index: int) -> int:
    """Mix (seed, index) into one 63-bit seed (splitmix64 finaliser)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(index) + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


class CandidateSource:
    """Builds candidates (x0, i, j) for given indices.

    init: "uniform" draws x0 uniformly in [lo, hi]; a tensor [N, *input_shape] of
    seed images gives x0 = seeds[index] for the first N candidates and, beyond them,
    seeds[index % N] plus JITTER noise from the candidate's own generator (clamped to
    [lo, hi]), so every candidate starts from its own point. labels: "random" draws i != j
    uniformly; "predicted" takes i = the model's label at x0 and a random j != i;
    "least_likely" takes i = the model's label and j = its least likely class.
    """

    def __init__(self, model, input_shape: Sequence[int], num_classes: int, init, labels: str,
                 seed: int, lo: float, hi: float, device: torch.device):
        self.model = model
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.seeds = init if isinstance(init, torch.Tensor) else None
        self.labels = labels
        self.seed = seed
        self.lo, self.hi = lo, hi
        self.device = device

    def make(self, indices: Sequence[int]):
        """-> (x0 [m, *input_shape] float32 on device, i [m] int64, j [m] int64)."""
        C = self.num_classes
        xs, draws = [], []
        for index in indices:
            gen = torch.Generator().manual_seed(candidate_seed(self.seed, index))
            if self.seeds is None:
                x = torch.rand(self.input_shape, generator=gen) * (self.hi - self.lo) + self.lo
            else:
                x = self.seeds[index % self.seeds.shape[0]]
            xs.append(x)
            i = int(torch.randint(0, C, (1,), generator=gen))
            offset = int(torch.randint(1, C, (1,), generator=gen))
            draws.append((i, offset))
            if self.seeds is not None and index >= self.seeds.shape[0]:
                # Drawn after the labels, so every candidate's labels are what they always were.
                noise = torch.randn(self.input_shape, generator=gen) * (JITTER * (self.hi - self.lo))
                xs[-1] = (x + noise).clamp(self.lo, self.hi)
        x0 = torch.stack(xs).to(self.device, torch.float32)
        i = torch.tensor([d[0] for d in draws], dtype=torch.int64)
        offset = torch.tensor([d[1] for d in draws], dtype=torch.int64)
        if self.labels == "random":
            j = (i + offset) % C
            return x0, i.to(self.device), j.to(self.device)
        with torch.no_grad():
            logits = self.model(x0).float()
        i = logits.argmax(dim=1)
        if self.labels == "least_likely":
            j = logits.argmin(dim=1)
            # A flat row has argmax == argmin: fall back to the random other label.
            j = torch.where(j == i, (i + offset.to(i.device)) % C, j)
        else:
            j = (i + offset.to(i.device)) % C
        return x0, i, j
