"""The precision a training runs at (precision.py): float32 unless chosen, bf16 +
channels_last only where native (CUDA, a CPU with AMX: test_bf16_cpu.py), the model left in
the memory format it came in; and pruning of a channels_last model."""
import copy

import pytest
import torch

from ipguard_fast.attacks import prune_model
from ipguard_fast.models import DigitsCNN
from ipguard_fast.nn import seeded
from ipguard_fast.precision import chosen_precision, training_precision
from ipguard_fast.train import train_classifier

CUDA = torch.cuda.is_available()


def test_float32_unless_chosen_and_bf16_only_where_native(monkeypatch):
    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)   # a CPU without AMX
    model = seeded(DigitsCNN, 0)
    assert not training_precision(model, torch.device("cpu")).enabled
    with chosen_precision("bf16"):
        cpu = training_precision(model, torch.device("cpu"))
        assert not cpu.enabled and not cpu.converted        # such a CPU trains at float32 whatever is chosen
    assert all(p.is_contiguous() for p in model.parameters())
    with pytest.raises(ValueError, match="^precision: "):
        training_precision(model, torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="^precision: "):
        with chosen_precision("half"):
            pass
    monkeypatch.setenv("IPGUARD_FAST_TRAIN_PRECISION", "int8")
    with pytest.raises(ValueError, match="^precision: "):
        training_precision(model, torch.device("cpu"))


def test_a_channels_last_model_prunes():
    model = seeded(DigitsCNN, 0).to(memory_format=torch.channels_last)
    pruned = prune_model(model, 0.5)
    weights = [m.weight for m in pruned.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.01)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_at_either_precision_leaves_the_model_contiguous(precision, monkeypatch):
    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)
    x = torch.rand(256, 1, 8, 8)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (256,)))
    model = seeded(DigitsCNN, 0)
    before = copy.deepcopy(model)
    with chosen_precision(precision):
        trained = train_classifier(model, data, epochs=2, device="cuda")
    assert all(p.is_contiguous() for p in trained.parameters())
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    assert not all(torch.equal(a.cpu(), b) for a, b in zip(trained.parameters(), before.parameters()))
    assert torch.isfinite(trained(x[:8].cuda())).all()
    prune_model(copy.deepcopy(trained), 0.3)


def test_fp32_channels_last_trains_on_cpu_like_fp32_and_leaves_the_model_as_it_came(monkeypatch):
    """fp32-cl: the same float32 arithmetic in oneDNN's layout (equal up to rounding), and
    the trained model contiguous again."""
    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)
    x = torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1)))
    trained = {}
    for name in ("fp32", "fp32-cl"):
        with chosen_precision(name):
            precision = training_precision(seeded(DigitsCNN, 0), torch.device("cpu"))
            assert precision.channels_last == (name == "fp32-cl") and not precision.enabled
            trained[name] = train_classifier(seeded(DigitsCNN, 0), data, epochs=2, seed=0)
        assert all(p.is_contiguous() for p in trained[name].parameters())
    for a, b in zip(trained["fp32"].parameters(), trained["fp32-cl"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
