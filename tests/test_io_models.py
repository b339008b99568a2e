"""load_model for .pt2, TorchScript and factory specs, and its error messages."""

import pickle
import textwrap
import uuid

import pytest
import safetensors.torch
import torch
from torch import nn

from ipguard_fast.io import ModelLoadError, load_model, save_exported, save_torchscript


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.fixture
def images():
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A fresh importable module with factories; returns its (unique) name."""
    name = f"ipg_test_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from torch import nn

        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def make_other():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))

        def not_a_model():
            return "hello"

        class Builder:
            @staticmethod
            def build():
                return make()

        CONSTANT = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_torchscript_round_trip(tmp_path, images):
    model = tiny_model()
    model.train()
    path = save_torchscript(model, images[:2], tmp_path / "model.pt")
    assert model.training  # the caller's mode is restored
    loaded = load_model(str(path))
    assert not loaded.training
    assert torch.allclose(loaded(images), model(images))


def test_exported_round_trip_with_any_batch(tmp_path, images):
    model = tiny_model()
    path = save_exported(model, images[:2], tmp_path / "model.pt2")
    loaded = load_model(path)
    assert torch.allclose(loaded(images), model(images))  # batch 5 != example batch 2


def test_factory_with_safetensors_weights(tmp_path, factory_module, images):
    source = tiny_model(seed=3)
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(weights))
    loaded = load_model(f"{factory_module}:make", weights=str(weights))
    assert not loaded.training
    assert torch.allclose(loaded(images), source(images))


@pytest.mark.parametrize("wrap", [False, True])
def test_factory_with_torch_save_weights(tmp_path, factory_module, images, wrap):
    source = tiny_model(seed=4)
    weights = tmp_path / "w.pt"
    state = source.state_dict()
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, weights)
    loaded = load_model(f"{factory_module}:make", weights=weights)
    assert torch.allclose(loaded(images), source(images))


def test_factory_dotted_attribute(factory_module):
    assert isinstance(load_model(f"{factory_module}:Builder.build"), nn.Sequential)


UNPICKLED = []


def record_unpickling():
    UNPICKLED.append("ran")
    return torch.zeros(1)


class Exploit:
    """Unpickling this calls record_unpickling: a stand-in for code a malicious file would run."""

    def __reduce__(self):
        return (record_unpickling, ())


def test_pickled_object_weights_are_refused(tmp_path, factory_module):
    weights = tmp_path / "evil.pt"
    with open(weights, "wb") as handle:
        pickle.dump({"1.weight": Exploit()}, handle, protocol=2)
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        load_model(f"{factory_module}:make", weights=weights)
    assert UNPICKLED == []


def test_state_dict_key_mismatch_lists_keys(tmp_path, factory_module):
    weights = tmp_path / "w.safetensors"
    state = tiny_model().state_dict()
    state["extra.bias"] = torch.zeros(1)
    del state["1.bias"]
    safetensors.torch.save_file(state, str(weights))
    with pytest.raises(ModelLoadError, match=r"missing keys \[1.bias\], unexpected keys \[extra.bias\]"):
        load_model(f"{factory_module}:make", weights=weights)


def test_state_dict_shape_mismatch(tmp_path, factory_module):
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(tiny_model().state_dict(), str(weights))
    with pytest.raises(ModelLoadError, match="size mismatch"):
        load_model(f"{factory_module}:make_other", weights=weights)


@pytest.mark.parametrize(
    "attr, message",
    [
        ("missing", "has no attribute 'missing'"),
        ("not_a_model", "factory returned str, not a torch.nn.Module"),
        ("CONSTANT", "'CONSTANT' is not callable"),
    ],
)
def test_factory_errors(factory_module, attr, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(f"{factory_module}:{attr}")


def test_module_not_importable():
    with pytest.raises(ModelLoadError, match="cannot import module 'no_such_pkg_xyz.models'"):
        load_model("no_such_pkg_xyz.models:make")


def test_bad_spec_format():
    with pytest.raises(ModelLoadError, match="neither an existing file nor of the form"):
        load_model("just-a-word")


@pytest.mark.parametrize("spec", ["missing.pt2", "missing.pt", "some/dir/model"])
def test_missing_files(tmp_path, spec):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(str(tmp_path / spec) if "/" not in spec else spec)


def test_missing_weights_file(factory_module, tmp_path):
    with pytest.raises(FileNotFoundError, match="weights: file not found"):
        load_model(f"{factory_module}:make", weights=tmp_path / "nope.safetensors")


def test_weights_with_a_model_file_is_an_error(tmp_path, images):
    path = save_torchscript(tiny_model(), images[:2], tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="already contains its weights"):
        load_model(path, weights=tmp_path / "w.safetensors")


def test_not_torchscript_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="is not a TorchScript archive"):
        load_model(path)


def test_not_an_exported_archive(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not a loadable torch.export"):
        load_model(path)


def test_spec_type_is_checked():
    with pytest.raises(ModelLoadError, match="model spec must be a path"):
        load_model(3)
