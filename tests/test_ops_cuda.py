"""CUDA kernels against the reference (computed on the CPU), and CUDA-graph capture.

Skipped without a GPU; benchmarks/gpu_check.sh runs them on the device."""
import pytest
import torch

from conftest import requires_cuda, requires_extension
from op_cases import adam_case, logits_case

from ipguard_fast import ops, reference

pytestmark = [requires_extension, requires_cuda]

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("kind", ["random", "ties", "nan_rows", "transposed", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 3, 10, 100, 1000])
@pytest.mark.parametrize("B", [1, 7, 4096])
def test_loss_parity_cuda(B, C, dtype, kind):
    logits, i, j = logits_case(B, C, dtype, kind, seed=B + C)
    ref_loss, ref_grad = reference.logit_gap_loss(logits, i, j, 1.5)
    loss, grad = ops.logit_gap_loss(logits.cuda(), i.cuda(), j.cuda(), 1.5)
    torch.testing.assert_close(loss.cpu(), ref_loss, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=0, atol=0)


def _cuda_layout(logits, how):
    """The same values on the GPU in a given layout (16-byte loads or not)."""
    B, C = logits.shape
    if how == "contiguous":
        return logits.cuda()
    if how == "offset":  # every row starts one element past a 16-byte boundary (or worse)
        wide = torch.zeros(B, C + 1, dtype=logits.dtype, device="cuda")
        wide[:, 1:] = logits.cuda()
        return wide[:, 1:]
    if how == "row_padded":  # stride(0) = C + 3: each row aligned differently
        wide = torch.zeros(B, C + 3, dtype=logits.dtype, device="cuda")
        wide[:, :C] = logits.cuda()
        return wide[:, :C]
    if how == "transposed":
        return logits.cuda().t().contiguous().t()
    raise ValueError(how)


@pytest.mark.parametrize("how", ["contiguous", "offset", "row_padded", "transposed"])
@pytest.mark.parametrize("kind", ["random", "ties", "nan_rows"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 3, 7, 8, 9, 15, 16, 17, 33, 1000])
def test_loss_vector_loads_cuda(C, dtype, kind, how):
    # 16-byte packs hold 4 float32, 2 float64, 8 float16/bfloat16; the sizes and
    # offsets put columns in the head, the packs and the tail of a row.
    logits, i, j = logits_case(300, C, dtype, kind, seed=C)
    ref_loss, ref_grad = reference.logit_gap_loss(logits, i, j, 0.75)
    x = _cuda_layout(logits, how)
    loss, grad = ops.logit_gap_loss(x, i.cuda(), j.cuda(), 0.75)
    assert grad.is_contiguous()
    torch.testing.assert_close(loss.cpu(), ref_loss, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_every_label_pair_cuda(dtype):
    C = 17
    pairs = torch.tensor([(a, b) for a in range(C) for b in range(C) if a != b])
    i, j = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
    gen = torch.Generator().manual_seed(0)
    for values in (torch.randn(len(pairs), C, generator=gen),
                   torch.randint(0, 2, (len(pairs), C), generator=gen).float()):
        logits = values.to(dtype)
        ref_loss, ref_grad = reference.logit_gap_loss(logits, i, j, 0.5)
        for how in ("contiguous", "offset"):
            loss, grad = ops.logit_gap_loss(_cuda_layout(logits, how), i.cuda(), j.cuda(), 0.5)
            torch.testing.assert_close(loss.cpu(), ref_loss, rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(grad.cpu(), ref_grad, rtol=0, atol=0)


def test_loss_empty_batch_cuda():
    loss, grad = ops.logit_gap_loss(torch.empty(0, 5, device="cuda"), torch.empty(0, dtype=torch.long, device="cuda"),
                                    torch.empty(0, dtype=torch.long, device="cuda"), 1.0)
    assert loss.shape == (0,) and grad.shape == (0, 5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("step_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (16, 3, 224, 224), (3, 1, 8, 8), (2, 5)])
def test_step_parity_cuda(shape, channels_last, step_dtype):
    if channels_last and len(shape) != 4:
        pytest.skip("channels_last needs 4-D")
    state, gen = adam_case(shape, seed=7, channels_last=channels_last)
    state["step"] = state["step"].to(step_dtype)
    gpu = {k: v.cuda() for k, v in state.items()}
    for t in range(4):
        grad = torch.randn(shape, generator=gen)
        active = torch.rand(shape[0], generator=gen) < 0.6
        before = {k: v.clone() for k, v in gpu.items()}
        kw = dict(lr=0.02, beta1=0.85, beta2=0.99, eps=1e-7, lo=0.05, hi=0.95)
        reference.boundary_adam_step_(state["x"], grad, state["exp_avg"], state["exp_avg_sq"], state["step"], active, **kw)
        g = grad.cuda()
        if t % 2 and len(shape) == 4:
            g = g.contiguous(memory_format=torch.channels_last if not channels_last else torch.contiguous_format)
        ops.boundary_adam_step_(gpu["x"], g, gpu["exp_avg"], gpu["exp_avg_sq"], gpu["step"], active.cuda(), **kw)
        for k in state:
            torch.testing.assert_close(gpu[k].cpu(), state[k], rtol=2e-6, atol=1e-7)
            inactive = ~active.cuda()
            assert torch.equal(gpu[k][inactive], before[k][inactive]), k


def test_checked_negative_count_is_refused_on_cuda_and_unchecked_gives_the_references_nan():
    B = 3
    gen = torch.Generator().manual_seed(2)
    cpu = dict(x=torch.rand(B, 4, generator=gen), m=torch.zeros(B, 4), v=torch.zeros(B, 4),
               step=torch.tensor([4, -2, 0]))
    grad, active = torch.randn(B, 4, generator=gen), torch.ones(B, dtype=torch.bool)
    gpu = {k: t.cuda() for k, t in cpu.items()}
    with pytest.raises(ValueError, match="^step: count -2 at row 1 is negative"):
        ops.boundary_adam_step_(gpu["x"], grad.cuda(), gpu["m"], gpu["v"], gpu["step"], active.cuda(), 0.1)
    assert torch.equal(gpu["x"].cpu(), cpu["x"]) and torch.equal(gpu["step"].cpu(), cpu["step"])
    ops.boundary_adam_step_(gpu["x"], grad.cuda(), gpu["m"], gpu["v"], gpu["step"], active.cuda(), 0.1, check=False)
    reference.boundary_adam_step_(cpu["x"], grad, cpu["m"], cpu["v"], cpu["step"], active, 0.1, check=False)
    assert torch.isnan(gpu["x"][1]).all()
    torch.testing.assert_close(gpu["x"].cpu(), cpu["x"], rtol=2e-6, atol=1e-7, equal_nan=True)
    assert torch.equal(gpu["step"].cpu(), cpu["step"])


def test_unaligned_step_uses_scalar_path():
    # An offset view breaks 16-byte alignment: the kernel must fall back, not fault.
    base = torch.rand(1, 3 * 10 * 10 + 1, device="cuda")
    x = base[:, 1:].view(1, 3, 10, 10)
    cpu = x.cpu().clone()
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    mc, vc = m.cpu().clone(), v.cpu().clone()
    step, active = torch.zeros(1, dtype=torch.long, device="cuda"), torch.ones(1, dtype=torch.bool, device="cuda")
    grad = torch.randn_like(x)
    ops.boundary_adam_step_(x, grad, m, v, step, active, 0.1)
    reference.boundary_adam_step_(cpu, grad.cpu(), mc, vc, step.cpu() * 0, active.cpu(), 0.1)
    torch.testing.assert_close(x.cpu(), cpu, rtol=2e-6, atol=1e-7)


def test_cuda_graph_capture_equals_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)).cuda().eval().requires_grad_(False)
    B = 32
    x0 = torch.rand(B, 3, 8, 8, device="cuda")
    i = torch.randint(0, 10, (B,), device="cuda")
    j = (i + 1) % 10
    active0 = torch.rand(B, device="cuda") < 0.8

    def make_state():
        return dict(x=x0.clone(), m=torch.zeros_like(x0), v=torch.zeros_like(x0),
                    step=torch.zeros(B, dtype=torch.long, device="cuda"), active=active0.clone())

    def search_step(s):
        x = s["x"].detach().requires_grad_()
        logits = model(x)
        loss, g_logits = ops.logit_gap_loss(logits, i, j, 1.0, check=False)
        (g_x,) = torch.autograd.grad(logits, x, g_logits)
        ops.boundary_adam_step_(s["x"], g_x, s["m"], s["v"], s["step"], s["active"], 0.01, check=False)
        s["active"] &= loss > 0

    eager, graphed = make_state(), make_state()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm = make_state()
        for _ in range(3):
            search_step(warm)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        search_step(graphed)
    for _ in range(20):
        search_step(eager)
        graph.replay()
    torch.cuda.synchronize()
    for k in ("x", "m", "v", "step", "active"):
        torch.testing.assert_close(graphed[k], eager[k], rtol=0, atol=0)


def test_unchecked_bad_labels_give_nan_rows_not_faults():
    # check=False skips the host-syncing label check; the kernel must still
    # never read out of bounds: a bad row comes back NaN with a zero gradient.
    logits = torch.randn(3, 4, device="cuda")
    i = torch.tensor([0, 9, 2], device="cuda")
    j = torch.tensor([1, 2, 2], device="cuda")
    loss, grad = ops.logit_gap_loss(logits, i, j, 1.0, check=False)
    torch.cuda.synchronize()
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1:]).all() and not grad[1:].any()
    # The same on the scalar (non-unit-stride) path.
    loss, grad = ops.logit_gap_loss(logits.t().contiguous().t(), i, j, 1.0, check=False)
    torch.cuda.synchronize()
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1:]).all() and not grad[1:].any()


def test_strided_step_counts_as_on_cpu():
    # A step that is a view (every other element) was refused on CUDA only ("step: must
    # be contiguous on CUDA"); the CPU kernel and the reference take it (audit h3).
    state, gen = adam_case((4, 3, 5, 5), seed=3)
    grad = torch.randn(4, 3, 5, 5, generator=gen)
    active = torch.tensor([True, False, True, True])
    wide = torch.zeros(8, dtype=torch.long)
    wide[::2] = state["step"]
    gpu = {k: v.cuda() for k, v in state.items()}
    gpu_wide = wide.cuda()
    reference.boundary_adam_step_(state["x"], grad, state["exp_avg"], state["exp_avg_sq"], state["step"], active, 0.1)
    ops.boundary_adam_step_(gpu["x"], grad.cuda(), gpu["exp_avg"], gpu["exp_avg_sq"], gpu_wide[::2], active.cuda(), 0.1)
    assert torch.equal(gpu_wide[::2].cpu(), state["step"]) and not gpu_wide[1::2].any()
    torch.testing.assert_close(gpu["x"].cpu(), state["x"], rtol=2e-6, atol=1e-7)
