"""Tests for ipguard_fast.zoo: datasets, model builders, last_layer, registry."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from ipguard_fast.zoo import (
    DigitsCNN,
    DigitsMLP,
    Normalized,
    build_model,
    cifar_resnet,
    digits_input_shape,
    last_layer,
    load_cifar,
    load_digits,
    load_imagefolder,
    reinitialize,
    resnet20,
    seeded,
    timm_model,
    torchvision_model,
    wide_resnet,
)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------- digits


def test_load_digits_types_shapes_and_range():
    train, test = load_digits("train"), load_digits("test")
    x, y = train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1:] == (1, 8, 8)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert len(train) + len(test) == 1797
    assert len(test) == pytest.approx(0.2 * 1797, abs=1)


def test_load_digits_split_is_a_stratified_partition():
    x_all, y_all = load_digits("all").tensors
    x_tr, y_tr = load_digits("train").tensors
    x_te, y_te = load_digits("test").tensors
    # Together the splits are exactly the full set (as a multiset of rows).
    rows = lambda x, y: sorted(map(tuple, torch.cat([x.flatten(1), y[:, None].float()], 1).tolist()))
    assert rows(torch.cat([x_tr, x_te]), torch.cat([y_tr, y_te])) == rows(x_all, y_all)
    # Stratified: each class is ~20% test.
    counts_all = np.bincount(y_all.numpy(), minlength=10)
    counts_te = np.bincount(y_te.numpy(), minlength=10)
    assert np.all(np.abs(counts_te - 0.2 * counts_all) <= 1)


def test_load_digits_split_depends_only_on_seed():
    a, b = load_digits("test", seed=3), load_digits("test", seed=3)
    assert torch.equal(a.tensors[0], b.tensors[0])
    c = load_digits("test", seed=4)
    assert not torch.equal(a.tensors[0], c.tensors[0])


def test_load_digits_upsampled_rgb():
    ds = load_digits("test", size=32, channels=3)
    x = ds.tensors[0]
    assert x.shape[1:] == (3, 32, 32) == digits_input_shape(32, 3)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x[:, 0], x[:, 2])
    # Upsampling keeps the image: average-pooling back correlates with the original.
    small = load_digits("test").tensors[0].flatten()
    back = nn.functional.adaptive_avg_pool2d(x[:, :1], 8).flatten()
    assert torch.corrcoef(torch.stack([small, back]))[0, 1] > 0.9


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(split="val"), "split"),
        (dict(size=0), "size"),
        (dict(size=7.5), "size"),
        (dict(channels=2), "channels"),
        (dict(test_fraction=1.0), "test_fraction"),
    ],
)
def test_load_digits_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        load_digits(**kwargs)


def test_digits_input_shape_default():
    assert digits_input_shape() == (1, 8, 8)


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
    with pytest.raises(ValueError, match=r"x must be"):
        model(torch.rand(2, 3, 3, 3))


@pytest.mark.parametrize(
    "mean, std, word", [([0.5, 0.5], [0.2], "same length"), ([], [], "mean"), ([0.5], [0.0], "std")]
)
def test_normalized_rejects_bad_statistics(mean, std, word):
    with pytest.raises(ValueError, match=word):
        Normalized(nn.Identity(), mean, std)


# ------------------------------------------------------------- CIFAR models


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


# ---------------------------------------------------------------- datasets


def test_load_cifar_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar(tmp_path, "test", which="cifar100")
    with pytest.raises(ValueError, match="which"):
        load_cifar(tmp_path, which="svhn")
    with pytest.raises(ValueError, match="split"):
        load_cifar(tmp_path, split="val")


def test_load_imagefolder(tmp_path):
    from PIL import Image

    for label, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / label).mkdir()
        Image.new("RGB", (40, 30), colour).save(tmp_path / label / "a.png")
    ds = load_imagefolder(tmp_path, size=16)
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert y == 1 and float(x[2].mean()) == pytest.approx(1.0) and float(x[0].max()) == 0.0


def test_load_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        load_imagefolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="class"):
        load_imagefolder(tmp_path)
    with pytest.raises(ValueError, match="resize"):
        load_imagefolder(tmp_path, size=32, resize=16)


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
