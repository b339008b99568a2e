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
