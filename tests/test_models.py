"""Tests for ipguard_fast.models: digits, CIFAR and hub architectures, and the registry."""

import pytest
import torch
import torchvision
from torch import nn

from ipguard_fast.models import (
    DigitsCNN,
    DigitsMLP,
    build_model,
    cifar_resnet,
    resnet20,
    timm_model,
    torchvision_model,
    wide_resnet,
)
from ipguard_fast.nn import last_layer


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------- digits models


def test_digits_models_shapes_and_last_layer():
    x = torch.rand(5, 1, 8, 8)
    cnn, mlp = DigitsCNN(), DigitsMLP(num_classes=7, hidden=16)
    assert cnn(x).shape == (5, 10)
    assert mlp(x).shape == (5, 7)
    assert last_layer(cnn) is cnn.fc and last_layer(mlp) is mlp.fc
    # The adaptive pool lets the CNN take upsampled digits too.
    assert DigitsCNN(in_channels=3)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="width"):
        DigitsCNN(width=0)


# ------------------------------------------------------------- CIFAR models


@pytest.mark.parametrize("side", [8, 32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_digits_cnn_pool_shortcut_is_exact_and_exports_still_pool(side, channels_last):
    # DigitsCNN hands a 4x4 map past its adaptive pool (slow backward in channels_last):
    # the logits and input gradients are those of nn.AdaptiveAvgPool2d(4), bit for bit.
    torch.manual_seed(0)
    fast = DigitsCNN().eval()
    plain = DigitsCNN().eval()
    plain.load_state_dict(fast.state_dict())
    plain.features[5] = nn.AdaptiveAvgPool2d(4)
    x = torch.rand(5, 1, side, side)
    if channels_last:
        fast, plain = fast.to(memory_format=torch.channels_last), plain.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    grads = []
    for model in (fast, plain):
        x_ = x.clone().requires_grad_(True)
        model(x_).logsumexp(1).sum().backward()
        grads.append((model(x).detach(), x_.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    traced = torch.jit.trace(fast, torch.rand(2, 1, 8, 8))   # traced at 8x8, still pools a 32x32 input
    big = torch.rand(2, 1, 32, 32)
    assert torch.allclose(traced(big), plain(big), atol=1e-6)
    assert torch.allclose(torch.jit.script(fast)(big), plain(big), atol=1e-6)
    assert torch.allclose(torch.fx.symbolic_trace(fast)(big), plain(big), atol=1e-6)


def test_resnet20_structure():
    model = resnet20()
    assert _n_params(model) == 269_722  # the published ~0.27M
    blocks = [m for m in model.modules() if type(m).__name__ == "_BasicBlock"]
    assert len(blocks) == 9
    assert last_layer(model) is model.fc and model.fc.in_features == 64
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # Option-B (1x1 conv) shortcuts add parameters.
    assert _n_params(resnet20(shortcut="B")) > _n_params(model)
    assert resnet20(num_classes=5, in_channels=1).eval()(torch.rand(1, 1, 8, 8)).shape == (1, 5)


def test_cifar_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match="shortcut"):
        resnet20(shortcut="C")


def test_wide_resnet_tiny_and_parameter_count_formula():
    tiny = wide_resnet(10, 1, num_classes=3, in_channels=1)
    assert tiny.eval()(torch.rand(2, 1, 16, 16)).shape == (2, 3)
    assert last_layer(tiny) is tiny.fc and tiny.fc.in_features == 64
    assert wide_resnet(10, 2).fc.in_features == 128
    with pytest.raises(ValueError, match="depth"):
        wide_resnet(12, 1)
    with pytest.raises(ValueError, match="widen"):
        wide_resnet(10, 0)


def test_wrn28_10_parameter_count():
    # Built via the registry; WRN-28-10 has the published 36.5M parameters.
    model = build_model("wrn28_10", 10, (3, 32, 32))
    assert _n_params(model) == 36_479_194


# ------------------------------------------------------------ torchvision/timm


def test_torchvision_model_and_local_weights(tmp_path):
    model = torchvision_model("resnet18", num_classes=7)
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    assert last_layer(model) is model.fc

    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = torchvision_model("resnet18", num_classes=7, weights_path=path)
    assert torch.equal(loaded.fc.weight, model.fc.weight)

    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    nested = torchvision_model("resnet18", num_classes=7, weights_path=tmp_path / "ckpt.pt")
    assert torch.equal(nested.conv1.weight, model.conv1.weight)


def test_torchvision_model_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = torchvision_model("mobilenet_v3_small", num_classes=3)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = torchvision_model("mobilenet_v3_small", num_classes=3, weights_path=path)
    assert torch.equal(last_layer(loaded).weight, last_layer(model).weight)


def test_torchvision_model_errors(tmp_path):
    with pytest.raises(ValueError, match="name"):
        torchvision_model("not_a_model")
    with pytest.raises(FileNotFoundError, match="weights_path"):
        torchvision_model("resnet18", weights_path=tmp_path / "missing.pt")


def test_timm_model_without_timm_raises_import_error():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="timm"):
            timm_model("resnet18")
    else:
        pytest.skip("timm is installed; only the missing-timm path is tested here")


# ------------------------------------------------------------------ registry


@pytest.mark.parametrize(
    "name, shape, cls",
    [
        ("digits_cnn", (1, 8, 8), DigitsCNN),
        ("digits_mlp", (3, 8, 8), DigitsMLP),
        ("resnet20", (1, 8, 8), nn.Module),
        ("tv:resnet18", (3, 32, 32), torchvision.models.ResNet),
    ],
)
def test_build_model_registry(name, shape, cls):
    model = build_model(name, 4, shape)
    assert isinstance(model, cls)
    assert model.eval()(torch.rand(2, *shape)).shape == (2, 4)


def test_build_model_seed_and_errors():
    a = build_model("digits_mlp", 10, (1, 8, 8), seed=7, hidden=8)
    b = build_model("digits_mlp", 10, (1, 8, 8), seed=7, hidden=8)
    assert a.fc.in_features == 8 and torch.equal(a.fc.weight, b.fc.weight)
    with pytest.raises(ValueError, match="not a registered model"):
        build_model("alexnet", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        build_model("digits_cnn", 10, (8, 8))
    with pytest.raises(ValueError, match="3 input channels"):
        build_model("tv:resnet18", 10, (1, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        build_model("digits_cnn", 0, (1, 8, 8))


# ------------------------------------------------------------------ LeNet-5


def test_lenet5_is_the_classic_network_at_28x28_and_accepts_other_sides():
    from ipguard_fast.models import LeNet5

    model = LeNet5().eval()
    # conv1 156 + conv2 2,416 + 400x120 48,120 + 120x84 10,164 + 84x10 850: the 61,706 of LeNet-5
    assert _n_params(model) == 61_706
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    wide = build_model("lenet5", 4, (3, 32, 32), width=2).eval()
    assert wide.features[0].out_channels == 12 and wide(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="width"):
        LeNet5(width=0)
