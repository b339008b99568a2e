"""Microbenchmarks of the two fused ops on CPU (and CUDA when present).

    mkdir -p benchmarks/results/ops-cpu-DATE
    pytest benchmarks/test_bench_ops.py --benchmark-only --benchmark-json=benchmarks/results/ops-cpu-DATE/ops-bench.json

Peers: the pure-PyTorch reference (what ipguard_fast falls back to); for the
loss also `careful_eager_loss`, the shortest eager version a PyTorch user writes
(it does less work than the op: no NaN/inf handling, no label checks); and for the
step torch.optim.Adam(foreach=True) followed by clamp_, which does less work (no
per-sample mask, one step count) and is what a batched eager loop runs.

benchmarks/bench_loss_cpu.py times the loss's three implementations interleaved in
one process at 1 and 2 threads (less noise than pytest-benchmark's one-after-another).
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


def careful_eager_loss(logits, i, j, k, check=False):
    """The loss and its gradient as a careful PyTorch user writes them, in the logits' dtype.

    gather g_i and g_j; scatter -inf on i and j and take the row max (first index on
    ties, as the op); relu terms; a zeroed gradient with its 2-3 coefficients put in.
    It does less work than the op and the reference: no non-finite-row handling (a
    row with NaN/inf is not NaN-ed and zeroed), no label checks (`check` is accepted
    and ignored), and no float32 upcast for float16/bfloat16. On finite float32/float64
    logits it returns the op's values (tests/test_ops_fast_path.py checks this).
    """
    B, C = logits.shape
    i_col, j_col = i[:, None], j[:, None]
    g_i = logits.gather(1, i_col).squeeze(1)
    g_j = logits.gather(1, j_col).squeeze(1)
    first = g_i - g_j + k
    rows = torch.arange(B, device=logits.device)
    grad = torch.zeros_like(logits, memory_format=torch.contiguous_format)
    a1 = (first > 0).to(logits.dtype)
    if C > 2:
        others = logits.scatter(1, i_col, float("-inf")).scatter_(1, j_col, float("-inf"))
        g_t, t_star = others.max(dim=1)
        second = g_t - g_i
        a2 = (second > 0).to(logits.dtype)
        loss = first.relu() + second.relu()
        grad.index_put_((rows, t_star), a2)
    else:
        a2 = torch.zeros_like(a1)
        loss = first.relu()
    grad.index_put_((rows, i), a1 - a2)
    grad.index_put_((rows, j), -a1)
    return loss, grad


LOSS_IMPLS = {"compiled": ops.logit_gap_loss, "careful_eager": careful_eager_loss,
              "reference": reference.logit_gap_loss}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", list(LOSS_IMPLS))
def test_logit_gap_loss(benchmark, impl, device):
    logits, i, j = loss_inputs(device)
    fn = LOSS_IMPLS[impl]
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

        def run():   # as the search engine calls it: its step counts need no check (a sync on CUDA)
            fn(x, grad, m, v, step, active, 0.01, 0.9, 0.999, 1e-8, 0.0, 1.0, check=False)
            _sync(device)

    benchmark(run)
