"""Calls the loss N times on float64/float32 [4096, 1000] at 1 thread: a fixed workload for callgrind."""
import sys, time, torch
torch.set_num_threads(1)
from ipguard_fast import ops
dtype = getattr(torch, sys.argv[1]); reps = int(sys.argv[2])
g = torch.Generator().manual_seed(0)
x = (torch.randn(4096, 1000, generator=g) * 3).to(dtype)
i = torch.randint(0, 1000, (4096,), generator=g); j = (i + 1 + torch.randint(0, 999, (4096,), generator=g)) % 1000
for r in range(reps):
    ops.logit_gap_loss(x, i, j, 1.0, check=False)
