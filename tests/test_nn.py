"""Tests for ipguard_fast.nn: seeded construction, re-initialisation, last_layer, Normalized."""

import pytest
import torch
import torchvision
from torch import nn

from ipguard_fast.models import DigitsCNN, DigitsMLP
from ipguard_fast.nn import Normalized, last_layer, reinitialize, seeded

def test_seeded_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = seeded(DigitsCNN, 1), seeded(DigitsCNN, 1), seeded(DigitsCNN, 2)
    assert torch.equal(torch.rand(1), expected_next)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_reinitialize_changes_weights_reproducibly():
    a, b = seeded(DigitsMLP, 0), seeded(DigitsMLP, 0)
    before = a.fc.weight.clone()
    reinitialize(a.fc, 5)
    reinitialize(b.fc, 5)
    assert not torch.equal(a.fc.weight, before)
    assert torch.equal(a.fc.weight, b.fc.weight)
    assert torch.equal(a.body[1].weight, b.body[1].weight)  # other layers untouched


# ------------------------------------------------------------------ last_layer


def test_last_layer_conventions():
    vgg_like = nn.Sequential()
    vgg_like.features = nn.Conv2d(3, 4, 3)
    vgg_like.classifier = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert last_layer(vgg_like) is vgg_like.classifier[2]

    vit = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8, num_classes=4
    )
    assert last_layer(vit) is vit.heads.head

    class Headed(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(3, 2)
            self.proj = nn.Linear(2, 2)  # comes later but is not the head

    headed = Headed()
    assert last_layer(headed) is headed.head

    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert last_layer(plain) is plain[3]

    cnn = DigitsCNN()
    assert last_layer(Normalized(cnn, [0.5], [0.25])) is cnn.fc


def test_last_layer_without_linear_raises():
    with pytest.raises(ValueError, match="Linear"):
        last_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1)))
    with pytest.raises(ValueError, match="model"):
        last_layer("not a model")


# ------------------------------------------------------------------ Normalized


def test_normalized_applies_mean_and_std():
    inner = nn.Identity()
    model = Normalized(inner, mean=[0.5, 0.0], std=[0.25, 2.0])
    x = torch.rand(2, 2, 3, 3)
    out = model(x)
    assert torch.allclose(out[:, 0], (x[:, 0] - 0.5) / 0.25)
    assert torch.allclose(out[:, 1], x[:, 1] / 2.0)
    assert model.mean.shape == (2, 1, 1)
    assert "mean" in dict(model.named_buffers())
    with pytest.raises(ValueError, match=r"x: must be"):
        model(torch.rand(2, 3, 3, 3))


@pytest.mark.parametrize(
    "mean, std, word", [([0.5, 0.5], [0.2], "same length"), ([], [], "mean"), ([0.5], [0.0], "std")]
)
def test_normalized_rejects_bad_statistics(mean, std, word):
    with pytest.raises(ValueError, match=word):
        Normalized(nn.Identity(), mean, std)
