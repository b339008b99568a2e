"""The model-format registry: every format loads what it exports, specs find their format,
and only trainable formats pass require_trainable."""
import importlib

import pytest
import safetensors.torch
import torch
from torch import nn

from ipguard_fast._validate import ArgumentError
from ipguard_fast.io import (EXPORT_FORMATS, FORMATS, ModelLoadError, export_model, format_of, load_suspect,
                             load_trainable_model, require_trainable)
from ipguard_fast.io.formats import ModelFormat, model_help

SHAPE = (1, 8, 8)
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def _installed(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


@pytest.fixture
def images():
    return torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", EXPORT_FORMATS)
def test_every_format_loads_what_it_exports(tmp_path, images, name):
    if name == "onnx" and not (_installed("onnx") and _installed("onnxruntime")):
        pytest.skip("needs the optional ONNX packages: pip install onnx onnxruntime")
    model = make_model()
    path = export_model(model, SHAPE, tmp_path / f"model{SUFFIX[name]}", format=name)
    assert format_of(path).name == name
    loaded = load_suspect(path)
    torch.testing.assert_close(torch.as_tensor(loaded(images)), model(images).detach(), atol=1e-5, rtol=1e-5)


def test_the_factory_format_loads_its_spec_with_weights(tmp_path, images):
    model = make_model()
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(weights))
    spec = f"{__name__}:make_model"
    assert format_of(spec).name == "factory" and format_of(spec).trainable
    loaded = load_trainable_model(spec, weights)
    assert torch.equal(loaded(images), model(images))


@pytest.mark.parametrize("name", ["torchscript", "pt2", "onnx"])
def test_require_trainable_refuses_files_naming_the_argument(tmp_path, name):
    path = tmp_path / f"model{SUFFIX[name]}"
    path.write_bytes(b"not even read")  # refused by its format alone, before anything loads
    for call in (lambda: require_trainable(str(path), "--model"),
                 lambda: load_trainable_model(str(path), None, "--model")):
        with pytest.raises(ArgumentError) as caught:
            call()
        assert caught.value.argument == "--model"
        assert "trainable" in str(caught.value) and "package.module:factory" in str(caught.value)


def test_format_of_and_its_errors(tmp_path):
    assert format_of("pkg.module:build").name == "factory"
    assert format_of(tmp_path / "missing.onnx").name == "onnx"  # the suffix decides; loading says "not found"
    with pytest.raises(FileNotFoundError, match="model file not found"):
        format_of(str(tmp_path / "missing.pt"))
    with pytest.raises(ModelLoadError, match="neither an existing file"):
        format_of("just-a-word")
    with pytest.raises(ModelLoadError, match="model spec must be a path"):
        format_of(3)


def test_the_registry_is_consistent():
    names = [fmt.name for fmt in FORMATS]
    assert len(set(names)) == len(names) and all(isinstance(fmt, ModelFormat) for fmt in FORMATS)
    assert [fmt.name for fmt in FORMATS if fmt.trainable] == ["factory"]
    assert set(EXPORT_FORMATS) == {"onnx", "pt2", "torchscript"}
    assert "onnx" not in model_help() and ".onnx" in model_help(suspects=True)


def test_export_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ArgumentError) as caught:
        export_model(make_model(), SHAPE, tmp_path / "x.bin", format="factory")
    assert caught.value.argument == "format"


@pytest.mark.parametrize("name", ["pt2", "torchscript"])
def test_the_loader_reads_the_bytes_that_were_inspected(tmp_path, images, name):
    """A file swapped between the check and the load cannot matter: ``read`` builds from inspect's bytes."""
    model = make_model()
    path = export_model(model, SHAPE, tmp_path / f"model{SUFFIX[name]}", format=name)
    fmt = format_of(path)
    inspected = fmt.inspect(str(path), None)
    assert isinstance(inspected, bytes)
    path.write_bytes(b"swapped after the check")
    loaded = fmt.read(inspected, str(path), None, "cpu")
    torch.testing.assert_close(loaded(images), model(images).detach())
