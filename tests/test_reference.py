"""The pure-PyTorch oracle against hand-computed values and torch.optim.Adam."""
import pytest
import torch

from ipguard_fast import reference


def test_loss_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5],    # i=0, j=1: first = 1-3+1 < 0, t*=2: 2-1 = 1
                           [4.0, 1.0, 2.0, 2.0],    # i=0, j=1: first = 4-1+1 = 4, t*=2 (tie 2,3): 2-4 < 0
                           [0.0, 0.0, 0.0, 0.0]])   # i=2, j=3: first = 1, t*=0 (tie): 0
    i = torch.tensor([0, 0, 2])
    j = torch.tensor([1, 1, 3])
    loss, grad = reference.logit_gap_loss(logits, i, j, 1.0)
    torch.testing.assert_close(loss, torch.tensor([1.0, 4.0, 1.0]))
    expected = torch.tensor([[-1.0, 0.0, 1.0, 0.0],
                             [1.0, -1.0, 0.0, 0.0],
                             [0.0, 0.0, 1.0, -1.0]])
    torch.testing.assert_close(grad, expected)


def test_loss_zero_exactly_when_converged():
    # j wins by more than k and i is the runner-up: both terms are 0.
    logits = torch.tensor([[2.0, 5.0, 1.0]])
    loss, grad = reference.logit_gap_loss(logits, torch.tensor([0]), torch.tensor([1]), 3.0)
    assert loss.item() == 0.0 and not grad.any()


def test_two_classes_has_no_second_term():
    logits = torch.tensor([[3.0, 1.0]])
    loss, grad = reference.logit_gap_loss(logits, torch.tensor([0]), torch.tensor([1]), 0.5)
    torch.testing.assert_close(loss, torch.tensor([2.5]))
    torch.testing.assert_close(grad, torch.tensor([[1.0, -1.0]]))


def test_nan_row():
    logits = torch.tensor([[1.0, float("nan"), 0.0], [1.0, 2.0, 0.0]])
    loss, grad = reference.logit_gap_loss(logits, torch.tensor([0, 0]), torch.tensor([2, 2]), 1.0)
    assert torch.isnan(loss[0]) and not grad[0].any()
    assert loss[1].item() == 3.0


def run_against_torch_adam(step_fn, device="cpu", steps=100, shape=(6, 3, 4, 4), lr=0.05):
    """Runs step_fn on a batch and torch.optim.Adam + clamp_ per sample, with random
    active masks so each sample has its own step count; returns both results."""
    gen = torch.Generator().manual_seed(1)
    B = shape[0]
    x = torch.rand(shape, generator=gen)
    params = [torch.nn.Parameter(x[b].clone()) for b in range(B)]
    optims = [torch.optim.Adam([p], lr=lr, foreach=False) for p in params]
    xb = x.clone().to(device)
    m, v = torch.zeros_like(xb), torch.zeros_like(xb)
    step = torch.zeros(B, dtype=torch.long, device=device)
    for t in range(steps):
        grads = torch.randn(shape, generator=gen)
        active = torch.rand(B, generator=gen) < 0.7
        active[0] = False  # sample 0 never moves: must stay bit-identical
        for b in range(B):
            if active[b]:
                params[b].grad = grads[b].clone()
                optims[b].step()
                with torch.no_grad():
                    params[b].clamp_(0.0, 1.0)
        step_fn(xb, grads.to(device), m, v, step, active.to(device), lr, 0.9, 0.999, 1e-8, 0.0, 1.0)
    expected = torch.stack([p.detach() for p in params])
    counts = torch.tensor([len(o.state[p]) and int(o.state[p]["step"]) for o, p in zip(optims, params)])
    return xb.cpu(), expected, step.cpu(), counts, x


def test_step_matches_torch_adam():
    got, expected, step, counts, x0 = run_against_torch_adam(reference.boundary_adam_step_)
    assert torch.equal(step, counts)
    assert torch.equal(got[0], x0[0])  # inactive throughout: bit-identical
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got >= 0).all() and (got <= 1).all()


def test_step_inactive_untouched_bitwise():
    x = torch.rand(3, 5)
    m, v = torch.randn(3, 5), torch.rand(3, 5)
    step = torch.tensor([0, 4, 7])
    before = [t.clone() for t in (x, m, v, step)]
    active = torch.tensor([False, True, False])
    reference.boundary_adam_step_(x, torch.randn(3, 5), m, v, step, active, 0.1)
    for after, old in zip((x, m, v, step), before):
        assert torch.equal(after[0], old[0]) and torch.equal(after[2], old[2])
    assert step[1] == 5 and not torch.equal(m[1], before[1][1])


@pytest.mark.parametrize("B", [0])
def test_empty_batch(B):
    loss, grad = reference.logit_gap_loss(torch.empty(B, 5), torch.empty(B, dtype=torch.long),
                                          torch.empty(B, dtype=torch.long), 1.0)
    assert loss.shape == (0,) and grad.shape == (0, 5)
    x = torch.empty(0, 3)
    reference.boundary_adam_step_(x, x.clone(), x.clone(), x.clone(), torch.empty(0, dtype=torch.long),
                                  torch.empty(0, dtype=torch.bool))
