"""Nothing a caller hands in is left changed: modes, gradient flags, batch-norm statistics,
device -- after extract, verify and calibrate_threshold, when they fail too, and when two
threads share one model."""
import copy
import threading

import pytest
import torch
from torch import nn

import ipguard_fast as ig
from ipguard_fast.io import load_model, save_exported
from ipguard_fast.models import train_digits_model

SHAPE = (1, 8, 8)


def bn_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 10))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model


def snapshot(model):
    return ({name: sub.training for name, sub in model.named_modules()},
            {name: p.requires_grad for name, p in model.named_parameters()},
            {name: t.clone() for name, t in model.state_dict().items()},
            {t.device for t in model.state_dict().values()})


def assert_unchanged(model, before):
    modes, grads, state, devices = snapshot(model)
    assert modes == before[0], "a submodule's train/eval flag changed"
    assert grads == before[1], "a parameter's requires_grad changed"
    assert devices == before[3], "the model moved"
    for name, value in state.items():
        assert torch.equal(value, before[2][name]), f"{name} changed"


@pytest.fixture(scope="module")
def owner():
    return train_digits_model("cnn", seed=0, epochs=2)


@pytest.fixture()
def mixed():
    """In training, one batch-norm layer in eval, one weight frozen: what a fine-tuning loop leaves."""
    model = bn_model()
    model.train()
    model[1].eval()
    model[0].bias.requires_grad_(False)
    return model


def fingerprints_of(model, n=8):
    images = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = copy.deepcopy(model).eval()(images).argmax(1)
    return ig.FingerprintSet(images=images, labels=labels, source_labels=(labels + 1) % 10,
                             margins=torch.ones(n), steps=torch.zeros(n, dtype=torch.int64),
                             meta={"num_classes": 10})


def test_mixed_modes_restored_by_extract_verify_and_calibrate(mixed):
    before = snapshot(mixed)
    fps = ig.extract_fingerprints(mixed, 3, k=0.5, input_shape=SHAPE, progress=False, max_steps=200)
    assert_unchanged(mixed, before)
    ig.verify(mixed, fps)
    assert_unchanged(mixed, before)
    ig.calibrate_threshold([mixed], fps)
    assert_unchanged(mixed, before)


def test_failed_calls_leave_the_model_unchanged(mixed):
    before = snapshot(mixed)
    with pytest.raises(ValueError, match="^input_shape:"):
        ig.extract_fingerprints(mixed, 3, k=1.0, input_shape=(3, 32, 32), progress=False)
    assert_unchanged(mixed, before)
    with pytest.raises(ValueError, match="^device:"):
        ig.extract_fingerprints(mixed, 3, k=1.0, input_shape=SHAPE, device="meta", progress=False)
    with pytest.raises(ValueError, match="^device:"):
        ig.extract_fingerprints(mixed, 3, k=1.0, input_shape=SHAPE, device="no-such-device", progress=False)
    assert_unchanged(mixed, before)

    class Boom(Exception):
        pass

    def fail_after_a_while(module, inputs, calls=[0]):  # noqa: B006 - a counter shared by calls
        calls[0] += 1
        if calls[0] > 5:
            raise Boom("the model fails mid-search")

    hook = mixed.register_forward_pre_hook(fail_after_a_while)
    try:
        with pytest.raises(Boom):
            ig.extract_fingerprints(mixed, 50, k=3.0, input_shape=SHAPE, progress=False, batch_size=4)
    finally:
        hook.remove()
    assert_unchanged(mixed, before)


def test_verify_from_two_threads_on_one_training_model():
    model = bn_model().train()
    fps = fingerprints_of(model, n=40)
    expected = ig.verify(copy.deepcopy(model), fps)
    before = snapshot(model)
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append(ig.verify(model, fps, batch_size=3))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == expected for r in results)
    assert_unchanged(model, before)


def test_extract_from_two_threads_on_one_model(owner):
    model = copy.deepcopy(owner).train()
    model.fc.weight.requires_grad_(False)
    before = snapshot(model)
    reference = ig.extract_fingerprints(copy.deepcopy(owner), 6, k=2.0, input_shape=SHAPE, progress=False,
                                        max_steps=300, seed=4)
    results, errors = [], []

    def worker():
        try:
            results.append(ig.extract_fingerprints(model, 6, k=2.0, input_shape=SHAPE, progress=False,
                                                   max_steps=300, seed=4))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    for fps in results:
        assert torch.equal(fps.labels, reference.labels) and torch.equal(fps.steps, reference.steps)
        assert ig.matching_rate(owner, fps) == 1.0
    assert_unchanged(model, before)


def test_extract_on_an_exported_model(owner, tmp_path):
    """The README lists .pt2 as a model format: extraction works on it, as verification does."""
    path = save_exported(owner, torch.rand(2, *SHAPE), tmp_path / "owner.pt2")
    exported = load_model(path)
    fps = ig.extract_fingerprints(exported, 4, k=1.0, input_shape=SHAPE, progress=False, max_steps=300)
    assert len(fps) == 4
    assert ig.matching_rate(exported, fps) == 1.0 and ig.matching_rate(owner, fps) == 1.0


def test_serving_leaves_the_model_unchanged(mixed, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    from ipguard_fast.remote import serve, verify_remote

    before = snapshot(mixed)
    fps = fingerprints_of(mixed, n=12)
    with serve(mixed, input_shape=SHAPE) as running:
        verdict = verify_remote(running.url, fps, batch_size=5, timeout=10)
    assert verdict == ig.verify(copy.deepcopy(mixed), fps)
    assert_unchanged(mixed, before)


def test_the_lock_registry_neither_changes_nor_keeps_a_model():
    """module_lock's registry (the package's one deliberate process-wide structure) adds nothing
    to the caller's module and holds only a weak reference to it."""
    import gc
    import weakref

    from ipguard_fast.modules import eval_mode, module_lock

    model = bn_model().train()
    attributes = set(vars(model))
    with eval_mode(model):
        assert module_lock(model) is module_lock(model)
    assert set(vars(model)) == attributes
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


class NormalisesInPlace(nn.Module):
    """An honest-looking suspect whose forward normalises its input in place."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.sub_(0.5).mul_(10))


def test_a_suspect_that_writes_into_its_input_leaves_the_fingerprints_unchanged():
    owner = bn_model(0).eval()
    fps = ig.FingerprintSet(images=torch.rand(12, *SHAPE), labels=torch.zeros(12, dtype=torch.int64),
                            source_labels=torch.ones(12, dtype=torch.int64), margins=torch.ones(12),
                            steps=torch.ones(12, dtype=torch.int64), meta={"num_classes": 10})
    with torch.no_grad():
        fps.labels.copy_(owner(fps.images).argmax(1))
    images = fps.images.clone()
    writers = [NormalisesInPlace(bn_model(1).eval()), lambda x: owner(x.mul_(0))]
    ig.verify(writers[0], fps, batch_size=5)
    ig.calibrate_threshold(writers, fps, batch_size=5)
    ig.matching_rate(writers[1], fps)
    assert torch.equal(fps.images, images)
    assert ig.verify(owner, fps).matching_rate == 1.0
