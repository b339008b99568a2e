"""Compiled CPU ops against the pure-PyTorch reference, plus the torch.library contracts."""
import pytest
import torch

from conftest import distinct_labels, requires_extension
from op_cases import adam_case, logits_case
from test_reference import run_against_torch_adam

from ipguard_fast import ops, reference

pytestmark = requires_extension

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def assert_same_loss(got, expected):
    loss, grad = got
    ref_loss, ref_grad = expected
    assert loss.dtype == ref_loss.dtype and grad.dtype == ref_grad.dtype
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 3, 10, 100, 1000])
@pytest.mark.parametrize("B", [1, 7, 4096])
def test_loss_parity_random(B, C, dtype):
    logits, i, j = logits_case(B, C, dtype, "random", seed=B * C)
    assert_same_loss(ops.logit_gap_loss(logits, i, j, 2.5), reference.logit_gap_loss(logits, i, j, 2.5))


@pytest.mark.parametrize("kind", ["ties", "nan_rows", "transposed", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 3, 10, 1000])
def test_loss_parity_special(kind, dtype, C):
    logits, i, j = logits_case(257, C, dtype, kind, seed=C)
    assert_same_loss(ops.logit_gap_loss(logits, i, j, 1.0), reference.logit_gap_loss(logits, i, j, 1.0))


def test_loss_ties_take_lowest_index():
    logits = torch.full((1, 6), 5.0)
    loss, grad = ops.logit_gap_loss(logits, torch.tensor([0]), torch.tensor([5]), 1.0)
    # first term = 1 (+1 at i, -1 at j); second term 0 (not active at exactly 0)
    assert loss.item() == 1.0
    assert grad[0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    logits[0, 0] = 4.0  # first term 4 - 5 + 1 = 0 (off); second 5 - 4 = 1 with t* = 1, lowest of 1..4
    loss, grad = ops.logit_gap_loss(logits, torch.tensor([0]), torch.tensor([5]), 1.0)
    assert loss.item() == 1.0
    assert grad[0].tolist() == [-1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_loss_float64_and_empty():
    logits, i, j = logits_case(33, 10, torch.float64, "random")
    assert_same_loss(ops.logit_gap_loss(logits, i, j, 0.3), reference.logit_gap_loss(logits, i, j, 0.3))
    loss, grad = ops.logit_gap_loss(torch.empty(0, 4), torch.empty(0, dtype=torch.long),
                                    torch.empty(0, dtype=torch.long), 1.0)
    assert loss.shape == (0,) and grad.shape == (0, 4)


def test_step_matches_torch_adam():
    got, expected, step, counts, x0 = run_against_torch_adam(ops.boundary_adam_step_)
    assert torch.equal(step, counts)
    assert torch.equal(got[0], x0[0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("step_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (4, 3, 64, 64), (1, 2)])
def test_step_parity_with_reference(shape, channels_last, step_dtype):
    if channels_last and len(shape) != 4:
        pytest.skip("channels_last needs 4-D")
    state, gen = adam_case(shape, seed=len(shape), channels_last=channels_last)
    state["step"] = state["step"].to(step_dtype)
    ref_state = {k: v.clone() for k, v in state.items()}
    for t in range(5):
        grad = torch.randn(shape, generator=gen)
        if t % 2:  # a grad whose strides differ from x's
            grad = grad.contiguous(memory_format=torch.channels_last) if len(shape) == 4 else grad.t().contiguous().t()
        active = torch.rand(shape[0], generator=gen) < 0.6
        kw = dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, lo=0.1, hi=0.9)
        before = {k: v.clone() for k, v in state.items()}
        ops.boundary_adam_step_(state["x"], grad, state["exp_avg"], state["exp_avg_sq"], state["step"], active, **kw)
        reference.boundary_adam_step_(ref_state["x"], grad, ref_state["exp_avg"], ref_state["exp_avg_sq"],
                                      ref_state["step"], active, **kw)
        for k in state:
            torch.testing.assert_close(state[k], ref_state[k], rtol=1e-6, atol=1e-7)
            assert torch.equal(state[k][~active], before[k][~active]), k  # inactive: bit for bit
        assert state["x"].stride() == ref_state["x"].stride()


def test_opcheck_loss():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(9, 6, generator=gen, dtype=dtype, requires_grad=True)
        i, j = distinct_labels(9, 6, gen)
        torch.library.opcheck(torch.ops.ipguard.logit_gap_loss.default, (logits, i, j, 1.5))


def test_opcheck_step():
    state, gen = adam_case((4, 3, 5, 5))
    active = torch.tensor([True, False, True, True])
    args = (state["x"], torch.randn(4, 3, 5, 5, generator=gen), state["exp_avg"], state["exp_avg_sq"],
            state["step"], active, 0.01, 0.9, 0.999, 1e-8, 0.0, 1.0)
    torch.library.opcheck(torch.ops.ipguard.boundary_adam_step_.default, args)


def test_gradcheck_loss_float64():
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(6, 8, generator=gen, dtype=torch.float64) * 5).requires_grad_()
    i, j = distinct_labels(6, 8, gen)
    assert torch.autograd.gradcheck(lambda lg: ops.logit_gap_loss(lg, i, j, 1.0)[0], (logits,))


def test_autograd_equals_returned_grad():
    logits, i, j = logits_case(16, 10, torch.float32, "random")
    logits.requires_grad_()
    loss, grad = ops.logit_gap_loss(logits, i, j, 1.0)
    weights = torch.rand(16)
    (loss * weights).sum().backward()
    torch.testing.assert_close(logits.grad, weights[:, None] * grad)


def test_torch_compile_fullgraph_calls_both_ops():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    x = torch.rand(4, 3, 2, 2, generator=gen)
    i, j = distinct_labels(4, 5, gen)

    def search_step(x, m, v, step, active):
        logits = model(x)
        loss, g_logits = ops.logit_gap_loss(logits, i, j, 1.0, check=False)
        # The model is linear, so d loss / d x = g_logits @ W reshaped.
        g_x = (g_logits @ model[1].weight).view_as(x)
        ops.boundary_adam_step_(x, g_x, m, v, step, active, 0.05)
        return loss

    eager = [t.clone() for t in (x, torch.zeros_like(x), torch.zeros_like(x))]
    eager_step = torch.zeros(4, dtype=torch.long)
    compiled_state = [t.clone() for t in eager]
    compiled_step = eager_step.clone()
    active = torch.tensor([True, True, False, True])
    compiled = torch.compile(search_step, fullgraph=True)
    with torch.no_grad():
        for _ in range(3):
            expected = search_step(*eager, eager_step, active)
            got = compiled(*compiled_state, compiled_step, active)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(compiled_state[0], eager[0])
    assert torch.equal(compiled_step, eager_step)
