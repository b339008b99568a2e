"""Audit (h5): the owner's data readers: damaged files, folders that loop, unreadable
images and labels the owner has no class for are bad input naming the option (exit 2), never
a crash, a hang or a silent wrong answer."""
import gzip

import numpy as np
import pytest

from ipguard_fast.cli import main
from ipguard_fast.data_files import read_idx


def _idx(path, array, compress=False):
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(head + array.astype(np.uint8).tobytes())


def _mnist(root, images, labels, compress=False):
    suffix = ".gz" if compress else ""
    _idx(root / f"train-images-idx3-ubyte{suffix}", images, compress)
    _idx(root / f"train-labels-idx1-ubyte{suffix}", labels, compress)


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:   # the deflate stream scrambled, the gzip header intact
        data[30:200] = bytes(b ^ 0x5A for b in data[30:200])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "scrambled"])
def test_a_damaged_gzip_idx_file_is_bad_input_naming_it(tmp_path, capsys, how):
    rng = np.random.default_rng(0)
    _mnist(tmp_path, rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20), compress=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _damage(path, how)
    with pytest.raises(ValueError, match="not a whole gzip file"):   # was EOFError / zlib.error
        read_idx(path, 3)
    code = main(["protect", "--model", "ipguard_fast.models:LeNet5", "--data", f"mnist:{tmp_path}",
                 "--out", str(tmp_path / "fp.safetensors"), "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err   # was exit 1, "failed: EOFError: ..."
    assert "--data:" in err and str(path) in err and "Traceback" not in err


def _image(path, size=(20, 20), seed=0):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _folder(root, classes="ab"):
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        _image(root / name / "x.png", seed=i)
    return root


@pytest.mark.parametrize("links", [["self"], ["s1", "s2"]])
def test_an_imagefolder_with_a_symlink_loop_is_refused_not_read_again_and_again(tmp_path, links):
    import os
    import subprocess
    import sys

    from ipguard_fast.data import load_data

    root = _folder(tmp_path / "images")
    for name in links:   # one link to '.': class a read 41 times over; two: 2^40 walks (a hang)
        os.symlink(".", root / "a" / name)
    if len(links) == 1:
        with pytest.raises(ValueError, match="symbolic link loop"):   # was 42 items where 2 are
            load_data(f"imagefolder:{root}:16", "train")
    argv = ["protect", "--model", "ipguard_fast.models:resnet20", "--data", f"imagefolder:{root}:32",
            "--out", str(tmp_path / "fp.safetensors"), "--no-cache", "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "ipguard_fast", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--data:" in done.stderr and "symbolic link loop" in done.stderr, done.stderr


def test_an_imagefolder_whose_class_folder_is_a_link_elsewhere_still_loads(tmp_path):
    import os

    from ipguard_fast.data import load_data

    root = _folder(tmp_path / "images", "a")
    _folder(tmp_path / "elsewhere", "b")
    os.symlink(tmp_path / "elsewhere" / "b", root / "b")
    data = load_data(f"imagefolder:{root}:16", "train")
    assert len(data) == 2 and [int(data[i][1]) for i in range(2)] == [0, 1]


@pytest.mark.parametrize("option", ["--data", "--held-out-data"])
def test_an_unreadable_image_in_an_imagefolder_is_bad_input_naming_the_option(tmp_path, capsys, option):
    from ipguard_fast.data import load_data

    good, bad = _folder(tmp_path / "good"), _folder(tmp_path / "bad")
    (bad / "b" / "y.png").write_bytes(b"not a png")
    data = load_data(f"imagefolder:{bad}:16", "train")
    with pytest.raises(ValueError, match="y.png: not a readable image"):   # was PIL's UnidentifiedImageError
        data[2]
    specs = {"--data": f"imagefolder:{good}:32", "--held-out-data": f"imagefolder:{good}:32"}
    specs[option] = f"imagefolder:{bad}:32"
    code = main(["protect", "--model", "ipguard_fast.models:resnet20", "--data", specs["--data"],
                 "--held-out-data", specs["--held-out-data"], "--out", str(tmp_path / "fp.safetensors"),
                 "--no-cache", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err   # was exit 1, "failed: UnidentifiedImageError: ..."
    assert err.startswith(f"ipguard protect: error: {option}: ") and "y.png: not a readable image" in err, err


def _mnist_split(root, prefix, labels):
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(len(labels))
    _idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (len(labels), 28, 28)))
    _idx(root / f"{prefix}-labels-idx1-ubyte", np.asarray(labels))


@pytest.mark.parametrize("command, option", [("protect", "--data"), ("protect", "--held-out-data"),
                                             ("evaluate", "--data"), ("evaluate", "--test-data")])
def test_labels_past_the_owners_classes_are_bad_input_naming_the_option(tmp_path, capsys, command, option):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for prefix in ("train", "t10k"):
        _mnist_split(good, prefix, [i % 10 for i in range(20)])
        _mnist_split(bad, prefix, [i % 10 for i in range(19)] + [131])   # LeNet5 has 10 classes
    first, second = ("--data", "--held-out-data") if command == "protect" else ("--data", "--test-data")
    roots = {first: good, second: good, option: bad}
    argv = [command, "--model", "ipguard_fast.models:LeNet5", first, f"mnist:{roots[first]}", second,
            f"mnist:{roots[second]}", "--out", str(tmp_path / "out"), "-n", "4"]
    argv += ["--no-cache", "--no-progress"] if command == "protect" else ["--methods", "ipguard"]
    code = main(argv)   # was exit 1, "failed: IndexError: Target 131 is out of bounds." a minute in
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"ipguard {command}: error: {option}: labels span [0, 131]") and "10 classes" in err, err


def test_an_imagefolder_with_more_classes_than_the_owner_is_refused(tmp_path):
    import torch

    from ipguard_fast.data import load_data
    from ipguard_fast.selection.inputs import checked_labels

    data = load_data(f"imagefolder:{_folder(tmp_path / 'images', 'abc')}:16", "train")
    assert checked_labels(data, 3, "train_data") is data
    with pytest.raises(ValueError, match=r"train_data: labels span \[0, 2\]; the owner has 2 classes"):
        checked_labels(data, 2, "train_data")
    soft = torch.utils.data.TensorDataset(torch.zeros(2, 1, 4, 4), torch.rand(2, 5))   # soft labels: not classes
    assert checked_labels(soft, 2, "train_data") is soft


@pytest.mark.parametrize("option", ["--test-data", "--attacker-data"])
def test_evaluate_refuses_data_of_another_image_shape_before_the_suspects_train(tmp_path, capsys, option):
    _mnist_split(tmp_path / "mnist", "train", [i % 10 for i in range(20)])
    _mnist_split(tmp_path / "mnist", "t10k", [i % 10 for i in range(20)])
    images = _folder(tmp_path / "images")   # 3 x 28 x 28 images for a 1 x 28 x 28 owner
    specs = {"--test-data": f"mnist:{tmp_path / 'mnist'}", "--attacker-data": f"mnist:{tmp_path / 'mnist'}"}
    specs[option] = f"imagefolder:{images}:28"
    code = main(["evaluate", "--model", "ipguard_fast.models:LeNet5", "--data", f"mnist:{tmp_path / 'mnist'}",
                 "--test-data", specs["--test-data"], "--attacker-data", specs["--attacker-data"],
                 "--out", str(tmp_path / "out"), "--methods", "ipguard", "-n", "4"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1, captured.err   # was exit 1, "failed: RuntimeError"
    assert captured.err.startswith(f"ipguard evaluate: error: {option}: holds images of shape (3, 28, 28)")
    assert "suspects" not in captured.out   # refused before any suspect was built
