"""Audit h3: the two ops on arguments the other tests leave out (aliasing, scalars
float32 cannot hold, labels with check=False), on every implementation."""
import pytest
import torch

from conftest import requires_extension
from ipguard_fast import ops, reference


def compiled_step(*args):
    return torch.ops.ipguard.boundary_adam_step_(*args)


STEP_IMPLS = [reference.boundary_adam_step_, ops.boundary_adam_step_,
              pytest.param(compiled_step, marks=requires_extension)]


def step_state(B=3, n=4):
    gen = torch.Generator().manual_seed(0)
    return dict(x=torch.rand(B, n, generator=gen), grad=torch.zeros(B, n), exp_avg=torch.zeros(B, n),
                exp_avg_sq=torch.zeros(B, n), step=torch.zeros(B, dtype=torch.long),
                active=torch.ones(B, dtype=torch.bool))


def call(impl, s, **scalars):
    kw = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, lo=0.0, hi=1.0)
    kw.update(scalars)
    impl(s["x"], s["grad"], s["exp_avg"], s["exp_avg_sq"], s["step"], s["active"], *kw.values())


ALIASES = [("exp_avg", "x", "exp_avg: must not share memory with x"),
           ("exp_avg_sq", "x", "exp_avg_sq: must not share memory with x"),
           ("exp_avg_sq", "exp_avg", "exp_avg_sq: must not share memory with exp_avg")]


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("name,other,message", ALIASES)
def test_step_refuses_aliased_state(impl, name, other, message):
    # The same tensor as two of the written arguments: the compiled kernel read what it had
    # just written (NaN in x where exp_avg aliased exp_avg_sq), the reference did not.
    s = step_state()
    s[name] = s[other]
    before = {k: v.clone() for k, v in s.items()}
    with pytest.raises(ValueError, match=f"^{message}"):
        call(impl, s)
    assert all(torch.equal(s[k], before[k]) for k in s)


@pytest.mark.parametrize("impl", STEP_IMPLS)
def test_step_refuses_partly_overlapping_state(impl):
    base = torch.zeros(5, 4)
    s = step_state()
    s["exp_avg"], s["exp_avg_sq"] = base[:3], base[2:]  # row 2 shared
    with pytest.raises(ValueError, match="^exp_avg_sq: must not share memory with exp_avg"):
        call(impl, s)


@pytest.mark.parametrize("impl", STEP_IMPLS)
def test_step_refuses_expanded_step_before_writing(impl):
    # The CPU kernel updated x, exp_avg and exp_avg_sq, then failed writing the step
    # counts back into the expanded tensor (a RuntimeError naming nothing).
    s = step_state()
    s["grad"] = torch.randn(3, 4)
    s["step"] = torch.zeros(1, dtype=torch.long).expand(3)
    before = {k: v.clone() for k, v in s.items()}
    with pytest.raises(ValueError, match="^step:"):
        call(impl, s)
    assert all(torch.equal(s[k], before[k]) for k in s)


@pytest.mark.parametrize("impl", STEP_IMPLS)
def test_step_accepts_disjoint_views_of_one_buffer(impl):
    # Views of one allocation that share no element are fine (and so is a strided step).
    base = torch.zeros(9, 4)
    s = step_state()
    s["exp_avg"], s["exp_avg_sq"] = base[:3], base[3:6]
    s["step"] = torch.zeros(6, dtype=torch.long)[::2]
    s["grad"] = torch.ones(3, 4)
    call(impl, s)
    assert torch.equal(s["step"], torch.ones(3, dtype=torch.long)) and base[:6].ne(0).all()


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("name,value", [("lo", "low"), ("lo", None), ("hi", torch.ones(2)), ("hi", [1.0])])
def test_step_bounds_not_numbers_name_the_argument(impl, name, value):
    if impl is compiled_step:
        pytest.skip("the schema's float arguments refuse these before any check")
    with pytest.raises(ValueError, match=f"^{name}: expected a number"):
        call(impl, step_state(), **{name: value})


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("lo,hi", [(-1e39, 1e39), (-1e300, 0.5), (0.25, 3.5e38), (float("-inf"), float("inf"))])
def test_step_bounds_beyond_float32_act_as_the_kernels_cast_them(impl, lo, hi):
    # The kernels cast lo and hi to float32 (1e39 -> inf); the reference refused such
    # bounds with torch.clamp's RuntimeError while the compiled op accepted them.
    s = step_state()
    s["grad"] = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    expected = step_state()
    expected["grad"] = s["grad"].clone()
    call(impl, s, lo=lo, hi=hi)
    f32 = torch.tensor([lo, hi], dtype=torch.float64).float().tolist()
    call(reference.boundary_adam_step_, expected, lo=f32[0], hi=f32[1])
    assert all(torch.equal(s[k], expected[k]) for k in s)


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("eps", [1e-50, 2.0 ** -150])
def test_step_refuses_eps_that_is_zero_in_float32(impl, eps):
    # eps passed the "> 0" check, became 0 in float32, and an element with a zero
    # gradient (zero moments) came out NaN: 0 / (0 + 0).
    s = step_state()
    with pytest.raises(ValueError, match="^eps:"):
        call(impl, s, eps=eps)
    assert not s["x"].isnan().any()


@pytest.mark.parametrize("impl", STEP_IMPLS)
def test_step_takes_the_smallest_float32_eps(impl):
    s = step_state()
    call(impl, s, eps=1.5e-45)
    assert not s["x"].isnan().any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_reference_unchecked_bad_labels_give_nan_rows(dtype):
    # check=False skips the label checks; the kernels then never read out of bounds and a
    # bad row is NaN with a zero gradient (CUDA). The reference raised torch's index
    # error (a device-side assert on CUDA) or, for i == j, returned a finite loss.
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, generator=gen).to(dtype)
    i = torch.tensor([0, -1, 4, 2, 3])
    j = torch.tensor([1, 2, 0, 2, 1])
    loss, grad = reference.logit_gap_loss(logits, i, j, 1.0, check=False)
    assert loss[1:4].isnan().all() and not grad[1:4].any()
    good = [0, 4]
    want_loss, want_grad = reference.logit_gap_loss(logits[good], i[good], j[good], 1.0)
    assert torch.equal(loss[good], want_loss) and torch.equal(grad[good], want_grad)


@pytest.mark.parametrize("impl", [reference.boundary_adam_step_, ops.boundary_adam_step_])
def test_step_is_visible_to_autograd(impl):
    # The compiled kernels wrote x without bumping its version counter, so a backward
    # through a graph that had saved x ran on the new values without a word.
    w = torch.rand(3, 4, requires_grad=True)
    s = step_state()
    s["grad"] = torch.ones(3, 4)
    versions = [s[k]._version for k in ("x", "exp_avg", "exp_avg_sq", "step")]
    y = (w * s["x"]).sum()
    with torch.no_grad():
        call(impl, s)
    assert all(s[k]._version > v for k, v in zip(("x", "exp_avg", "exp_avg_sq", "step"), versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("impl", [reference.boundary_adam_step_, ops.boundary_adam_step_])
@pytest.mark.parametrize("name", ["x", "exp_avg", "exp_avg_sq"])
def test_step_refuses_tensors_that_require_grad(impl, name):
    # The reference failed on a leaf that requires grad (torch's RuntimeError), the compiled
    # op changed it in place; under torch.no_grad() both take it.
    s = step_state()
    s[name] = s[name].clone().requires_grad_()
    with pytest.raises(ValueError, match=f"^{name}: requires grad"):
        call(impl, s)
    with torch.no_grad():
        call(impl, s)
    assert s["step"].eq(1).all()


@pytest.mark.parametrize("mode", ["fake", "symbolic"])
def test_step_traces_with_make_fx(mode):
    # The aliasing check reads data pointers: fake tensors have none to compare (all 0,
    # which read as shared memory), so tracing must skip it, and still call the op.
    from torch.fx.experimental.proxy_tensor import make_fx

    def step(x, grad, m, v, s, a):
        ops.boundary_adam_step_(x, grad, m, v, s, a, 0.1)
        return x

    s = step_state()
    graph = make_fx(step, tracing_mode=mode)(*s.values())
    if ops.cpu_capability() is not None:  # the compiled op (the reference traces as aten ops)
        assert "boundary_adam_step" in graph.code


def test_step_under_fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        s = {k: mode.from_tensor(v) for k, v in step_state().items()}
        call(ops.boundary_adam_step_, s)


@pytest.mark.parametrize("value", ["1", b"1", True])
def test_number_arguments_take_no_text_or_bool(value):
    """float() reads "1" and True as numbers; the ops' schema takes neither, so the Python paths
    refuse them too, naming the argument."""
    logits, labels = torch.randn(2, 4), torch.tensor([0, 1])
    for loss in (reference.logit_gap_loss, ops.logit_gap_loss):
        with pytest.raises(ValueError, match="^k: expected a number"):
            loss(logits, labels, labels + 1, value)
    for impl in (reference.boundary_adam_step_, ops.boundary_adam_step_):
        with pytest.raises(ValueError, match="^lr: expected a number"):
            call(impl, step_state(), lr=value)
