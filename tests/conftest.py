import pytest
import torch

from ipguard_fast import has_extension

requires_extension = pytest.mark.skipif(not has_extension(), reason="compiled ops not built")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def distinct_labels(B: int, C: int, generator: torch.Generator, device="cpu"):
    """Random (i, j) with i != j on every row."""
    i = torch.randint(0, C, (B,), generator=generator)
    j = (i + 1 + torch.randint(0, C - 1, (B,), generator=generator)) % C
    return i.to(device), j.to(device)


def half_matching_fingerprints(model, n: int = 40, seed: int = 1, shape=(1, 8, 8), num_classes: int = 10):
    """Random images as fingerprints: the owner labels are the model's own for the first
    half and wrong for the rest, so the model's matching rate is exactly 0.5. The images are
    drawn from 16 n random ones in turn over the labels the model gives them, so the labels
    spread as real fingerprints' do: a random model gives one label to most random images,
    and on a set crowded onto one label verify calls nothing a copy (label_bias.py)."""
    from ipguard_fast.fingerprints import FingerprintSet

    generator = torch.Generator().manual_seed(seed)
    drawn = torch.rand(16 * n, *shape, generator=generator)
    with torch.no_grad():
        given = model(drawn).argmax(1)
    by_label = torch.argsort(given, stable=True)
    rank = torch.empty_like(by_label)
    rank[by_label] = torch.arange(len(given)) - torch.searchsorted(given[by_label], given[by_label])
    turns = torch.argsort(rank * (int(given.max()) + 1) + given, stable=True)[:n]   # one of each label, in turn
    images = drawn[turns]
    with torch.no_grad():
        own = model(images).argmax(1)
    labels = own.clone()
    labels[n // 2:] = (own[n // 2:] + 1) % num_classes
    return FingerprintSet(images=images, labels=labels, source_labels=(labels + 2) % num_classes,
                          margins=torch.ones(n), steps=torch.zeros(n, dtype=torch.int64),
                          meta={"num_classes": num_classes})


# The digits owner and data slice that the selection and refinement tests share.
@pytest.fixture(scope="module")
def small():
    """160 training digits."""
    from torch.utils.data import TensorDataset

    from ipguard_fast.data import load_digits

    data = load_digits("train")
    return TensorDataset(data.tensors[0][:160].clone(), data.tensors[1][:160].clone())


@pytest.fixture(scope="module")
def owner():
    """A digits CNN trained for 2 epochs (seed 0)."""
    from ipguard_fast.models import train_digits_model

    return train_digits_model("cnn", seed=0, epochs=2)


@pytest.fixture
def one_thread():
    """torch at one thread for the test, as an isolated worker runs: CPU results depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BuildInterrupted(Exception):
    """What the `builds` fixture's builder raises in place of Ctrl-C."""


@pytest.fixture
def builds(monkeypatch):
    """Counts Attack.run calls (suspects trained); `stop_after` makes the next one past it raise
    BuildInterrupted (an evaluate interrupted part way, tests of the suspect cache)."""
    from ipguard_fast.attacks.registry import Attack

    real = Attack.run
    state = {"count": 0, "stop_after": None}

    def counted(self, context, settings):
        if state["stop_after"] is not None and state["count"] >= state["stop_after"]:
            raise BuildInterrupted("interrupted after the suspects before")
        state["count"] += 1
        return real(self, context, settings)

    monkeypatch.setattr(Attack, "run", counted)
    return state
