"""boundary_adam_step_'s step counts: an active sample whose count cannot advance to a
usable one (negative, or at the dtype's maximum) is refused, naming `step`, before any
tensor is touched; check=False (the search engine, which owns its counts and must not
sync) computes Adam's formula as given, and then every implementation gives that
sample NaN and the others the same update."""
import pytest
import torch

from conftest import requires_extension
from ipguard_fast import _checks, ops, reference
from ipguard_fast.search import extract_fingerprints

CHECKED = [reference.boundary_adam_step_, pytest.param(ops.boundary_adam_step_, marks=requires_extension)]


def compiled_op(*args, check=False):
    assert check is False   # the registered op never reads values: what check=False means
    torch.ops.ipguard.boundary_adam_step_(*args)


UNCHECKED = [reference.boundary_adam_step_, pytest.param(ops.boundary_adam_step_, marks=requires_extension),
             pytest.param(compiled_op, marks=requires_extension)]


def state(steps, dtype=torch.long, active=None):
    B = len(steps)
    gen = torch.Generator().manual_seed(1)
    return dict(x=torch.rand(B, 2, 3, generator=gen), grad=torch.randn(B, 2, 3, generator=gen),
                exp_avg=torch.randn(B, 2, 3, generator=gen) * 0.1, exp_avg_sq=torch.rand(B, 2, 3, generator=gen),
                step=torch.tensor(steps, dtype=dtype),
                active=torch.ones(B, dtype=torch.bool) if active is None else torch.tensor(active))


def run(impl, s, **kw):
    impl(s["x"], s["grad"], s["exp_avg"], s["exp_avg_sq"], s["step"], s["active"], 0.01, 0.9, 0.999, 1e-8,
         0.0, 1.0, **kw)


@pytest.mark.parametrize("impl", CHECKED)
@pytest.mark.parametrize("count", [-1, -7])
def test_a_negative_active_count_is_refused_and_nothing_changes(impl, count):
    s = state([3, count, 0])
    before = {k: v.clone() for k, v in s.items()}
    with pytest.raises(ValueError, match=rf"^step: count {count} at row 1 is negative"):
        run(impl, s)
    for name, value in s.items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("impl", CHECKED)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_a_count_at_the_dtype_maximum_is_refused(impl, dtype):
    top = torch.iinfo(dtype).max
    s = state([0, top], dtype=dtype)
    before = s["x"].clone()
    with pytest.raises(ValueError, match=rf"^step: count {top} at row 1 cannot advance: the next count overflows"):
        run(impl, s)
    assert torch.equal(s["x"], before) and int(s["step"][1]) == top


@pytest.mark.parametrize("impl", CHECKED)
def test_an_inactive_sample_keeps_its_count_whatever_it_is(impl):
    s = state([-4, 2], active=[False, True])
    x0 = s["x"].clone()
    run(impl, s)
    assert s["step"].tolist() == [-4, 3]
    assert torch.equal(s["x"][0], x0[0]) and not torch.equal(s["x"][1], x0[1])


@pytest.mark.parametrize("impl", UNCHECKED)
@pytest.mark.parametrize("count", [-1, -3])
def test_unchecked_a_negative_count_gives_nan_in_every_implementation(impl, count):
    s, expected = state([5, count, 0]), state([5, count, 0])
    run(impl, s, check=False)
    reference.boundary_adam_step_(expected["x"], expected["grad"], expected["exp_avg"], expected["exp_avg_sq"],
                                  expected["step"], expected["active"], 0.01, 0.9, 0.999, 1e-8, 0.0, 1.0,
                                  check=False)
    assert torch.isnan(s["x"][1]).all()
    assert s["step"].tolist() == [6, count + 1, 1]
    keep = [0, 2]
    torch.testing.assert_close(s["x"][keep], expected["x"][keep], rtol=1e-6, atol=1e-7)
    assert torch.isfinite(s["x"][keep]).all()


def test_the_search_engine_never_checks_counts(monkeypatch):
    # It owns its counts (from 0, capped by max_steps) and must not sync on CUDA or inside a graph.
    calls = []
    monkeypatch.setattr(_checks, "adam_step_values", lambda *a: calls.append(a))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    fingerprints = extract_fingerprints(model, n=4, k=0.5, input_shape=(1, 2, 2), seed=0, progress=False)
    assert len(fingerprints) > 0
    assert calls == []
    s = state([0])
    ops.boundary_adam_step_(s["x"], s["grad"], s["exp_avg"], s["exp_avg_sq"], s["step"], s["active"])
    assert len(calls) == 1   # the patch is seen: a checked call goes through it
