"""Microbenchmarks of the two fused ops on CPU (and CUDA when present).

    pytest benchmarks/test_bench_ops.py --benchmark-only --benchmark-json=benchmarks/results/ops-cpu.json

Peers: the pure-PyTorch reference (what ipguard_fast falls back to), and for the
step torch.optim.Adam(foreach=True) followed by clamp_, which does less work (no
per-sample mask, one step count) and is what a batched eager loop runs.
"""
import pytest
import torch

from ipguard_fast import has_extension, ops, reference

pytestmark = pytest.mark.skipif(not has_extension(), reason="compiled ops not built")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOSS_SHAPE = {"cpu": (4096, 1000), "cuda": (65536, 1000)}
STEP_SHAPE = {"cpu": (64, 3, 224, 224), "cuda": (256, 3, 224, 224)}


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def loss_inputs(device):
    B, C = LOSS_SHAPE[device]
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(B, C, generator=gen) * 3).to(device)
    i = torch.randint(0, C, (B,), generator=gen)
    j = (i + 1 + torch.randint(0, C - 1, (B,), generator=gen)) % C
    return logits, i.to(device), j.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_logit_gap_loss(benchmark, impl, device):
    logits, i, j = loss_inputs(device)
    fn = ops.logit_gap_loss if impl == "compiled" else reference.logit_gap_loss
    benchmark.group = f"logit_gap_loss {device} {list(logits.shape)}"
    benchmark.extra_info.update(op="logit_gap_loss", impl=impl, device=device, shape=list(logits.shape))

    def run():
        fn(logits, i, j, 1.0, check=False)
        _sync(device)

    benchmark(run)


def step_inputs(device):
    shape = STEP_SHAPE[device]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    return x, grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["compiled", "reference", "torch_adam_foreach_clamp"])
def test_boundary_adam_step(benchmark, impl, device):
    x, grad = step_inputs(device)
    B = x.shape[0]
    benchmark.group = f"boundary_adam_step_ {device} {list(x.shape)}"
    benchmark.extra_info.update(op="boundary_adam_step_", impl=impl, device=device, shape=list(x.shape))
    if impl == "torch_adam_foreach_clamp":
        param = torch.nn.Parameter(x)
        param.grad = grad
        opt = torch.optim.Adam([param], lr=0.01, foreach=True)

        def run():
            opt.step()
            with torch.no_grad():
                param.clamp_(0.0, 1.0)
            _sync(device)
    else:
        fn = ops.boundary_adam_step_ if impl == "compiled" else reference.boundary_adam_step_
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        step = torch.zeros(B, dtype=torch.long, device=device)
        active = torch.ones(B, dtype=torch.bool, device=device)

        def run():
            fn(x, grad, m, v, step, active, 0.01, 0.9, 0.999, 1e-8, 0.0, 1.0)
            _sync(device)

    benchmark(run)
