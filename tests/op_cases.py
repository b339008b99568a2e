"""Input builders shared by the CPU and CUDA parity tests."""
import torch

from conftest import distinct_labels


def logits_case(B, C, dtype, kind, seed=0, device="cpu"):
    """logits [B, C] of a given kind: random, ties, nan rows, non-contiguous."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values: argmax ties on almost every row
        base = torch.randint(0, 3, (B, C), generator=gen).float()
    else:
        base = torch.randn(B, C, generator=gen) * 4
    if kind == "nan_rows" and B > 0:
        rows = torch.arange(0, B, 3)
        cols = torch.randint(0, C, (rows.numel(),), generator=gen)
        base[rows, cols] = torch.tensor([float("nan"), float("inf"), float("-inf")]).repeat(B)[: rows.numel()]
    logits = base.to(dtype)
    if kind == "transposed":  # same values, column-major storage
        logits = logits.t().contiguous().t()
    elif kind == "strided":  # every other column of a wider tensor
        wide = torch.zeros(B, 2 * C, dtype=dtype)
        wide[:, ::2] = logits
        logits = wide[:, ::2]
    i, j = distinct_labels(B, C, gen)
    return logits.to(device), i.to(device), j.to(device)


def adam_case(shape, seed=0, device="cpu", channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(device)
    state = {
        "x": x,
        "exp_avg": torch.zeros_like(x),
        "exp_avg_sq": torch.zeros_like(x),
        "step": torch.randint(0, 5, (shape[0],), generator=gen).to(device),
    }
    return state, gen
