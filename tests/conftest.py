import pytest
import torch

from ipguard_fast import has_extension

requires_extension = pytest.mark.skipif(not has_extension(), reason="compiled ops not built")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def distinct_labels(B: int, C: int, generator: torch.Generator, device="cpu"):
    """Random (i, j) with i != j on every row."""
    i = torch.randint(0, C, (B,), generator=generator)
    j = (i + 1 + torch.randint(0, C - 1, (B,), generator=generator)) % C
    return i.to(device), j.to(device)
