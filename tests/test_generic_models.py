"""The generic architectures protect trains when it knows nothing of the owner's: their
shapes on any input, their argument errors, and the names attacks build them by."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ipguard_fast._validate import ArgumentError
from ipguard_fast.attacks.architectures import factory_for
from ipguard_fast.attacks.registry import AttackContext
from ipguard_fast.models import GenericCNN, GenericMLP


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 224, 160), (1, 3, 3), (2, 1, 5)])
def test_generic_cnn_gives_one_logit_per_class_on_any_image_shape(shape):
    model = GenericCNN(shape, 7).eval()
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_generic_cnn_pools_large_images_to_the_generic_side_so_its_cost_is_bounded():
    small, large = GenericCNN((3, 32, 32), 10), GenericCNN((3, 224, 224), 10)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters())
    assert isinstance(large.body[0], nn.AdaptiveAvgPool2d)


def test_generic_cnn_trains_its_input_gradient_and_weights():
    model = GenericCNN((1, 8, 8), 10)
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kwargs, argument", [(dict(input_shape=(64,), num_classes=10), "input_shape"),
                                              (dict(input_shape=(1, 8, 8), num_classes=0), "num_classes"),
                                              (dict(input_shape=(1, 8, 8), num_classes=10, width=0), "width"),
                                              (dict(input_shape="1x8x8", num_classes=10), "input_shape")])
def test_generic_cnn_names_the_bad_argument(kwargs, argument):
    with pytest.raises(ArgumentError) as info:
        GenericCNN(**kwargs)
    assert info.value.argument == argument


def _context(shape):
    data = TensorDataset(torch.randn(4, *shape), torch.tensor([0, 1, 2, 0]))
    return AttackContext(nn.Identity(), data, seed=0, input_shape=shape, num_classes=3)


def test_generic_cnn_arch_is_a_conv_net_on_images_and_the_mlp_on_anything_else():
    assert isinstance(factory_for("generic-cnn", _context((1, 8, 8)))(), GenericCNN)
    assert isinstance(factory_for("generic-cnn", _context((12,)))(), GenericMLP)
    assert isinstance(factory_for("generic", _context((1, 8, 8)))(), GenericMLP)
    with pytest.raises(ArgumentError, match="generic-cnn"):
        factory_for("generic-conv", _context((1, 8, 8)))
