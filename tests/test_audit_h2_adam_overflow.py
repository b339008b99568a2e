"""The fused Adam step with an lr whose first step's size, lr / (1 - beta1), overflows float32
(the kernels' type): the step was inf, and inf * 0 made every element with a zero gradient
NaN, silently. Every implementation now refuses it naming lr; an lr just inside the range
still works and all three agree."""
import pytest
import torch

from conftest import requires_extension
from ipguard_fast import ops, reference

FLOAT32_MAX = torch.finfo(torch.float32).max
STEP_IMPLS = [reference.boundary_adam_step_, ops.boundary_adam_step_,
              pytest.param(lambda *args: torch.ops.ipguard.boundary_adam_step_(*args), marks=requires_extension)]


def state():
    x = torch.full((2, 4), 0.5)
    grad = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    return [x, grad, torch.zeros_like(x), torch.zeros_like(x), torch.zeros(2, dtype=torch.long),
            torch.ones(2, dtype=torch.bool)]


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("lr, beta1", [(4e37, 0.9), (1e39, 0.0), (FLOAT32_MAX + 2.0 ** 103, 0.0), (1e30, 1 - 1e-9)])
def test_an_lr_whose_step_overflows_float32_is_refused(impl, lr, beta1):
    args = state()
    before = [t.clone() for t in args]
    with pytest.raises(ValueError, match=r"^lr: .* overflow float32"):
        impl(*args, lr, beta1, 0.999, 1e-8, 0.0, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(args, before))   # nothing changed


@pytest.mark.parametrize("lr, beta1", [(3e37, 0.9), (FLOAT32_MAX + 2.0 ** 102, 0.0)])
def test_an_lr_just_inside_float32_steps_and_every_implementation_agrees(lr, beta1):
    results = []
    impls = [reference.boundary_adam_step_, ops.boundary_adam_step_]
    if ops.has_extension():
        impls.append(torch.ops.ipguard.boundary_adam_step_)
    for impl in impls:
        args = state()
        impl(*args, lr, beta1, 0.999, 1e-8, 0.0, 1.0)
        results.append(args[0])
    expected = torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5]])   # a zero gradient moves nothing
    for x in results:
        assert torch.equal(x, expected), x
