"""random_shift's two ways (one gather, a slice per distinct offset) timed side by side on
batches of 64 images of several sizes, and the same pixels checked; writes JSON to stdout.

    python benchmarks/results/random-shift-2026-12-05/shift_timing.py > shift-timing.json
"""
import json
import os
import platform
import statistics
import time

import torch

from ipguard_fast import augment


def timed(x, gather: bool, repeats: int) -> float:
    saved = augment._GATHER_MAX
    augment._GATHER_MAX = 10**12 if gather else -1
    try:
        augment.random_shift(x, torch.Generator().manual_seed(0))   # warm-up
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            augment.random_shift(x, torch.Generator().manual_seed(r))
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        augment._GATHER_MAX = saved


def same(x) -> bool:
    saved = augment._GATHER_MAX
    try:
        augment._GATHER_MAX = 10**12
        a = augment.random_shift(x, torch.Generator().manual_seed(7))
        augment._GATHER_MAX = -1
        b = augment.random_shift(x, torch.Generator().manual_seed(7))
    finally:
        augment._GATHER_MAX = saved
    return torch.equal(a, b) and a.stride() == b.stride()


rows = []
for c, side in ((1, 8), (1, 28), (1, 32), (3, 32), (1, 48), (3, 48), (1, 64), (3, 64), (1, 96), (3, 96),
                (3, 128), (3, 224)):
    x = torch.randn(64, c, side, side)
    slices, gather = timed(x, False, 30), timed(x, True, 30)
    rows.append({"shape": [64, c, side, side], "values_per_image": c * side * side, "slices_ms": slices * 1e3,
                 "gather_ms": gather * 1e3, "gather_speedup": slices / gather, "same_pixels": same(x),
                 "path_taken": "gather" if c * side * side <= augment._GATHER_MAX else "slices"})
print(json.dumps({"command": "python benchmarks/results/random-shift-2026-12-05/shift_timing.py",
                  "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                              "threads": torch.get_num_threads(), "torch": torch.__version__},
                  "gather_max": augment._GATHER_MAX, "rows": rows}, indent=1))
