"""Bad input to either op: a ValueError naming the argument, from every implementation."""
import pytest
import torch

from conftest import requires_extension
from ipguard_fast import ops, reference


def compiled_loss(*args, **kw):
    return torch.ops.ipguard.logit_gap_loss(*args)


def compiled_step(*args):
    return torch.ops.ipguard.boundary_adam_step_(*args)


LOSS_IMPLS = [reference.logit_gap_loss, ops.logit_gap_loss,
              pytest.param(compiled_loss, marks=requires_extension)]
STEP_IMPLS = [reference.boundary_adam_step_, ops.boundary_adam_step_,
              pytest.param(compiled_step, marks=requires_extension)]

L = torch.zeros(3, 4)
I = torch.tensor([0, 1, 2])
J = torch.tensor([1, 2, 3])

BAD_LOSS = [
    ("logits", (torch.zeros(3), I, J, 1.0)),
    ("logits", (torch.zeros(3, 1), I, J, 1.0)),
    ("logits", (torch.zeros(3, 4, dtype=torch.int64), I, J, 1.0)),
    ("i", (L, torch.tensor([0, 1]), J, 1.0)),
    ("i", (L, I.int(), J, 1.0)),
    ("j", (L, I, torch.tensor([[1, 2, 3]]), 1.0)),
    ("i", (L, torch.tensor([0, 4, 2]), J, 1.0)),
    ("j", (L, I, torch.tensor([1, 2, -1]), 1.0)),
    ("i, j", (L, I, torch.tensor([1, 1, 3]), 1.0)),
    ("k", (L, I, J, float("nan"))),
    ("k", (L, I, J, float("inf"))),
]


@pytest.mark.parametrize("impl", LOSS_IMPLS)
@pytest.mark.parametrize("name,args", BAD_LOSS, ids=[f"{n}-{idx}" for idx, (n, _) in enumerate(BAD_LOSS)])
def test_bad_loss_inputs(impl, name, args):
    with pytest.raises(ValueError, match=f"^{name}:"):
        impl(*args)


def step_args(**over):
    x = torch.rand(2, 3)
    args = dict(x=x, grad=torch.rand(2, 3), exp_avg=torch.zeros(2, 3), exp_avg_sq=torch.zeros(2, 3),
                step=torch.zeros(2, dtype=torch.long), active=torch.ones(2, dtype=torch.bool),
                lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, lo=0.0, hi=1.0)
    args.update(over)
    return tuple(args.values())


BAD_STEP = [
    ("x", dict(x=torch.rand(2, 3, dtype=torch.float64))),
    ("x", dict(x=torch.rand(3, 2).t(), exp_avg=torch.zeros(3, 2).t(), exp_avg_sq=torch.zeros(3, 2).t())),
    ("grad", dict(grad=torch.rand(2, 4))),
    ("exp_avg", dict(exp_avg=torch.zeros(2, 3, dtype=torch.float16))),
    ("exp_avg_sq", dict(exp_avg_sq=torch.zeros(3, 2).t())),
    ("step", dict(step=torch.zeros(3, dtype=torch.long))),
    ("step", dict(step=torch.zeros(2))),
    ("active", dict(active=torch.ones(2))),
    ("active", dict(active=torch.ones(1, dtype=torch.bool))),
    ("lr", dict(lr=float("nan"))),
    ("lr", dict(lr=-1.0)),
    ("beta1", dict(beta1=1.0)),
    ("beta2", dict(beta2=-0.1)),
    ("eps", dict(eps=0.0)),
    ("lo, hi", dict(lo=1.0, hi=0.0)),
]


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("name,over", BAD_STEP, ids=[f"{n}-{idx}" for idx, (n, _) in enumerate(BAD_STEP)])
def test_bad_step_inputs(impl, name, over):
    with pytest.raises(ValueError, match=f"^{name}:"):
        impl(*step_args(**over))


@requires_extension
def test_cpu_kernel_checks_labels_even_unchecked():
    # check=False only skips the Python-side value checks (a host sync on CUDA);
    # on the CPU the kernel reads the labels anyway and rejects bad ones.
    with pytest.raises(ValueError, match="^i:"):
        ops.logit_gap_loss(torch.randn(3, 4), torch.tensor([0, 9, 2]), J, 1.0, check=False)
