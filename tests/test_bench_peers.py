"""The benchmark peers (ipguard_fast/bench/peers/) on a tiny trained linear model."""
import sys

import pytest
import torch
from torch import nn

from ipguard_fast.bench import peers
from ipguard_fast.bench.peers import torchattacks_cw
from ipguard_fast.data import load_digits
from ipguard_fast.nn import seeded
from ipguard_fast.search import accept
from ipguard_fast.search.instruments import candidate_batch
from ipguard_fast.train import train_classifier

SHAPE = (1, 8, 8)
OPTS = dict(k=2.0, lr=0.05, max_steps=100, device="cpu")


@pytest.fixture(scope="module")
def model():
    """A linear classifier on 8x8 digits (~94% test accuracy, about a second to train)."""
    net = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 0)
    return train_classifier(net, load_digits("train"), epochs=5, lr=0.05, batch_size=128)


def candidates(model, m, labels="random"):
    return candidate_batch(model, SHAPE, 10, range(m), device=torch.device("cpu"), labels=labels)


@pytest.mark.parametrize("name", ["per_sample", "eager_batched"])
def test_converged_outputs_pass_float32_acceptance(model, name):
    x0, i, j = candidates(model, 16)
    r = peers.get(name)(model, x0, i, j, **OPTS)
    assert r.images.shape == x0.shape and r.converged.shape == r.steps.shape == (16,)
    assert r.converged.sum() >= 8, "too few candidates converged to test anything"
    ok, _ = accept(model, r.images, i, j, OPTS["k"])
    assert ok[r.converged].all()
    assert r.images.min() >= 0 and r.images.max() <= 1
    assert r.seconds > 0 and r.steps_run > 0 and len(r.step_seconds) > 0
    assert (r.steps[~r.converged] == OPTS["max_steps"]).all()


def test_per_sample_and_eager_batched_solve_the_same_problem(model):
    x0, i, j = candidates(model, 16)
    a = peers.get("per_sample")(model, x0, i, j, **OPTS)
    b = peers.get("eager_batched")(model, x0, i, j, **OPTS)
    assert torch.equal(a.converged, b.converged) and torch.equal(a.steps, b.steps)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-5)
    assert a.batch_size == 1 and b.batch_size == 16


def test_eager_batched_never_moves_a_converged_sample(model):
    x0, i, j = candidates(model, 16)
    seen = []  # every input the loop feeds the model
    hook = model.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].detach().clone(),
                                                                          out.detach().clone())))
    try:
        r = peers.get("eager_batched")(model, x0, i, j, **OPTS)
    finally:
        hook.remove()
    froze = 0
    for n in torch.nonzero(r.converged).flatten().tolist():
        losses = [float(peers.ipguard_loss(out[n : n + 1], i[n : n + 1], j[n : n + 1], OPTS["k"])) for _, out in seen]
        first = losses.index(0.0)
        froze += first < len(seen) - 1
        for x, _ in seen[first:]:
            assert torch.equal(x[n], seen[first][0][n])
        assert torch.equal(r.images[n], seen[first][0][n])
        assert r.steps[n] == first
    assert froze >= 4, "too few samples converged before the last step to test freezing"


def test_eager_batched_chunks_and_restores_the_model(model):
    x0, i, j = candidates(model, 12)
    model.train()
    r = peers.get("eager_batched")(model, x0, i, j, batch_size=5, **OPTS)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    whole = peers.get("eager_batched")(model.eval(), x0, i, j, **OPTS)
    assert r.batch_size == 5 and torch.equal(r.steps, whole.steps)


def test_per_sample_keeps_parameter_gradients_on_like_the_public_scripts(model):
    x0, i, j = candidates(model, 2)
    peers.get("per_sample")(model, x0, i, j, **OPTS)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.skipif(not torchattacks_cw.available(), reason="torchattacks not installed")
def test_torchattacks_cw_is_counted_by_acceptance(model):
    x0, i, j = candidates(model, 64)
    k = 0.1
    r = peers.get("torchattacks_cw")(model, x0, i, j, k=k, lr=0.05, max_steps=100, device="cpu")
    assert r.images.shape == x0.shape and r.images.min() >= 0 and r.images.max() <= 1
    ok, _ = accept(model, r.images, i, j, k)
    assert torch.equal(r.converged, ok)
    assert ok.any(), "CW should pass IPGuard's acceptance on some candidates at a small k"
    assert 0 < r.steps_run <= 100 and (r.steps == r.steps_run).all()


def test_torchattacks_missing_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    assert not torchattacks_cw.available()
    x = torch.rand(1, *SHAPE)
    with pytest.raises(ImportError, match="pip install torchattacks"):
        torchattacks_cw.run(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x, torch.tensor([0]),
                            torch.tensor([1]), k=1.0, lr=0.01, max_steps=1, device="cpu")


def test_unknown_peer():
    with pytest.raises(ValueError, match="unknown peer"):
        peers.get("nope")
