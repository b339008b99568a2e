"""Tests for ipguard_fast.data: digits, CIFAR and ImageFolder data sets."""

import numpy as np
import pytest
import torch
from torch import nn

from ipguard_fast.data import digits_input_shape, load_cifar, load_digits, load_imagefolder

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


def test_a_16_bit_grayscale_image_is_scaled_not_clipped(tmp_path):
    # Pillow's convert("RGB") clipped 16-bit grayscale at 255: a dark 16-bit PNG came out white.
    from PIL import Image

    levels = np.array([[0, 257 * 40], [257 * 128, 65535]], dtype=np.uint16)
    for label in ("dark", "light"):
        (tmp_path / label).mkdir()
        Image.fromarray(levels).save(tmp_path / label / "a.png")
        assert Image.open(tmp_path / label / "a.png").mode == "I;16"
    x, _ = load_imagefolder(tmp_path, size=(2, 2))[0]
    expected = torch.tensor([[0, 40], [128, 255]]) / 255
    for channel in x:
        torch.testing.assert_close(channel, expected)


def test_an_image_without_a_pixel_range_is_refused_naming_it(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(tmp_path / label / "x.tif")
    with pytest.raises(ValueError, match=r"x\.tif: a floating-point image \(mode F\)"):
        load_imagefolder(tmp_path, size=4)[0]


def test_an_imagefolder_spec_takes_the_owners_image_size(tmp_path):
    # imagefolder:ROOT was always 224 x 224: an owner trained on 24 x 32 images had no way in.
    from PIL import Image

    from ipguard_fast.data import load_data

    root = tmp_path / "a:b"   # a colon in the folder's own name, without a size after it
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        Image.new("RGB", (40, 30), (255, 0, 0)).save(root / label / "a.png")
    assert load_data(f"imagefolder:{root}:24x32", "train")[0][0].shape == (3, 24, 32)
    assert load_data(f"imagefolder:{root}:16", "train")[0][0].shape == (3, 16, 16)
    assert load_data(f"imagefolder:{root}", "train")[0][0].shape == (3, 224, 224)
    with pytest.raises(ValueError, match="^size: "):
        load_data(f"imagefolder:{root}:0x32", "train")
    with pytest.raises(ValueError, match="^size: "):
        load_imagefolder(root, size=(24, 32), resize=40)


def test_load_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        load_imagefolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="class"):
        load_imagefolder(tmp_path)
    with pytest.raises(ValueError, match="resize"):
        load_imagefolder(tmp_path, size=32, resize=16)
