"""FingerprintSet validation, the safetensors file format and its tamper checks."""

import json
import struct

import pytest
import safetensors.torch
import torch
from torch import nn

from ipguard_fast import fingerprints as fp_module
from ipguard_fast.fingerprints import FingerprintFileError, FingerprintSet, state_dict_sha256


def make_set(n=6, num_classes=10, **meta):
    generator = torch.Generator().manual_seed(0)
    return FingerprintSet(
        images=torch.rand(n, 1, 8, 8, generator=generator),
        labels=torch.arange(n, dtype=torch.int64) % num_classes,
        source_labels=(torch.arange(n, dtype=torch.int64) + 1) % num_classes,
        margins=torch.linspace(0.1, 0.6, n),
        steps=torch.arange(n, dtype=torch.int64) * 3,
        meta={"num_classes": num_classes, "k": 0.5, "seed": 1, "input_shape": [1, 8, 8], **meta},
    )


def assert_same(a, b):
    for name in ("images", "labels", "source_labels", "margins", "steps"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype
    assert a.meta == b.meta


def header_length(path):
    with open(path, "rb") as handle:
        return struct.unpack("<Q", handle.read(8))[0]


def rewrite(path, tensors=None, metadata=None):
    """Rewrite a saved file with some tensors or metadata changed but the stored hash kept."""
    with safetensors.safe_open(str(path), framework="pt") as reader:
        old_meta = reader.metadata()
        old_tensors = {k: reader.get_tensor(k) for k in reader.keys()}
    safetensors.torch.save_file(tensors if tensors is not None else old_tensors, str(path),
                                metadata=metadata if metadata is not None else old_meta)
    return old_tensors, old_meta


# ---------------------------------------------------------------- in memory


def test_properties():
    fps = make_set(n=6, requested=8)
    assert len(fps) == 6
    assert fps.input_shape == (1, 8, 8)
    assert fps.num_classes == 10
    assert fps.requested == 8
    assert not fps.complete
    assert make_set(n=6).complete  # requested defaults to len


def test_meta_is_normalised_to_json():
    fps = make_set(input_shape=(1, 8, 8))
    assert fps.meta["input_shape"] == [1, 8, 8]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("labels", torch.zeros(6, dtype=torch.int32), "labels: must have dtype torch.int64"),
        ("images", torch.zeros(6, 1, 8, 8, dtype=torch.float64), "images: must have dtype torch.float32"),
        ("images", torch.zeros(6), "images: must have shape"),
        ("margins", torch.zeros(6, 1), "margins: must have shape"),
        ("steps", torch.zeros(5, dtype=torch.int64), "steps: has 5 entries"),
        ("source_labels", [0] * 6, "source_labels: must be a torch.Tensor"),
        ("labels", torch.full((6,), 10, dtype=torch.int64), "labels: has label 10"),
        ("labels", torch.full((6,), -1, dtype=torch.int64), "labels: has negative label"),
        ("images", torch.full((6, 1, 8, 8), float("nan")), "images: contains NaN"),
    ],
)
def test_validation_names_the_field(field, value, message):
    fields = {name: getattr(make_set(), name) for name in ("images", "labels", "source_labels", "margins", "steps")}
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        FingerprintSet(**fields, meta={"num_classes": 10})


def test_meta_must_be_json():
    base = make_set()
    with pytest.raises(ValueError, match="meta: must be JSON-serialisable"):
        FingerprintSet(base.images, base.labels, base.source_labels, base.margins, base.steps, meta={"x": object()})
    with pytest.raises(ValueError, match="meta: must be JSON-serialisable"):
        FingerprintSet(base.images, base.labels, base.source_labels, base.margins, base.steps,
                       meta={"x": float("nan")})


def test_empty_set_is_allowed_and_incomplete():
    fps = FingerprintSet(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                         torch.zeros(0), torch.zeros(0, dtype=torch.int64), meta={"requested": 3})
    assert len(fps) == 0 and not fps.complete and fps.num_classes is None


# ---------------------------------------------------------------- file format


def test_save_load_round_trip(tmp_path):
    fps = make_set(requested=6, created="2024-01-01T00:00:00Z")
    path = fps.save(tmp_path / "fp.safetensors")
    loaded = FingerprintSet.load(path)
    assert_same(fps, loaded)
    with safetensors.safe_open(str(path), framework="pt") as reader:
        metadata = reader.metadata()
    assert metadata["format"] == "ipguard_fast.fingerprints"
    assert metadata["format_version"] == "1"
    assert json.loads(metadata["ipguard_meta"]) == fps.meta
    assert len(metadata["content_sha256"]) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["fp.safetensors"]  # no temp files left


def test_flipped_tensor_byte_is_detected(tmp_path):
    path = make_set().save(tmp_path / "fp.safetensors")
    data = bytearray(path.read_bytes())
    data[8 + header_length(path) + 5] ^= 0x01  # one bit inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(FingerprintFileError, match=r"corrupted or tampered.*content SHA-256") as info:
        FingerprintSet.load(path)
    assert str(path) in str(info.value)


def test_changed_label_is_detected(tmp_path):
    path = make_set().save(tmp_path / "fp.safetensors")
    tensors, _ = rewrite(path)
    tensors["labels"][0] = 9
    rewrite(path, tensors=tensors)
    with pytest.raises(FingerprintFileError, match="tampered"):
        FingerprintSet.load(path)


def test_changed_meta_is_detected(tmp_path):
    path = make_set().save(tmp_path / "fp.safetensors")
    _, metadata = rewrite(path)
    meta = json.loads(metadata["ipguard_meta"])
    meta["threshold"] = 0.01
    rewrite(path, metadata={**metadata, "ipguard_meta": json.dumps(meta)})
    with pytest.raises(FingerprintFileError, match="tampered"):
        FingerprintSet.load(path)


def test_a_meta_key_given_twice_is_refused(tmp_path):
    """json keeps the last of two equal keys and other readers the first: a file that shows a
    threshold of 0.99 to one tool and holds 0.5 for this one passed the hash, which covers the
    parsed meta. It is refused."""
    path = make_set(threshold=0.5).save(tmp_path / "fp.safetensors")
    _, metadata = rewrite(path)
    text = metadata["ipguard_meta"]
    assert text.startswith("{") and json.loads(text)["threshold"] == 0.5
    rewrite(path, metadata={**metadata, "ipguard_meta": '{"threshold": 0.99, ' + text[1:]})
    with pytest.raises(FingerprintFileError, match="'threshold' is given more than once"):
        FingerprintSet.load(path)


def test_missing_tensor_is_detected(tmp_path):
    path = make_set().save(tmp_path / "fp.safetensors")
    tensors, _ = rewrite(path)
    del tensors["steps"]
    rewrite(path, tensors=tensors)
    with pytest.raises(FingerprintFileError, match=r"missing tensors \['steps'\]"):
        FingerprintSet.load(path)


def test_truncated_file_is_detected(tmp_path):
    path = make_set().save(tmp_path / "fp.safetensors")
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(FingerprintFileError, match="truncated") as info:
        FingerprintSet.load(path)
    assert str(path) in str(info.value)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "fp.safetensors"
    path.write_bytes(b"this is not a fingerprint file at all")
    with pytest.raises(FingerprintFileError, match="not a readable fingerprint file"):
        FingerprintSet.load(path)


def test_other_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(FingerprintFileError, match="not an ipguard_fast fingerprint file"):
        FingerprintSet.load(path)


def test_unknown_format_version_is_rejected(tmp_path):
    path = make_set().save(tmp_path / "fp.safetensors")
    _, metadata = rewrite(path)
    rewrite(path, metadata={**metadata, "format_version": "2"})
    with pytest.raises(FingerprintFileError, match="version '2'"):
        FingerprintSet.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        FingerprintSet.load(tmp_path / "nope.safetensors")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = make_set(n=4).save(tmp_path / "fp.safetensors")
    before = path.read_bytes()

    def crash_half_way(tensors, metadata=None):   # the temp file holds a part of it when the save is cut
        (temp,) = [p for p in tmp_path.iterdir() if p.name != "fp.safetensors"]
        assert temp.name.startswith(".fp.")
        raise KeyboardInterrupt

    monkeypatch.setattr(fp_module.safetensors.torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        make_set(n=6).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fp.safetensors"]


@pytest.mark.parametrize("pid", ["99999999999999999999", "\u00b2", "4294967296"])
def test_a_stray_file_that_looks_like_a_temp_file_never_fails_the_save(tmp_path, pid):
    """A name the orphan sweep parses but no writer of ours made (a pid too large for the kernel,
    a digit that is not ASCII; a shared folder such as the reference cache may hold anything):
    left alone, and the save goes on."""
    stray = tmp_path / f".fp.{pid}-abc123.tmp.safetensors"
    stray.write_bytes(b"someone else's")
    path = make_set(n=4).save(tmp_path / "fp.safetensors")
    assert len(FingerprintSet.load(path)) == 4 and stray.read_bytes() == b"someone else's"


def test_load_never_unpickles(tmp_path, monkeypatch):
    path = make_set().save(tmp_path / "fp.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", forbidden)
    assert len(FingerprintSet.load(path)) == 6


# ---------------------------------------------------------------- model hash


def test_state_dict_sha256():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    twin = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    twin.load_state_dict(model.state_dict())
    digest = state_dict_sha256(model)
    assert len(digest) == 64
    assert state_dict_sha256(twin) == digest
    with torch.no_grad():
        twin[1].bias[3] += 1e-6
    assert state_dict_sha256(twin) != digest
    assert state_dict_sha256(model.to(torch.bfloat16)) != digest  # dtype is part of the hash


def test_state_dict_sha256_rejects_non_modules():
    with pytest.raises(ValueError, match="model: must be a torch.nn.Module"):
        state_dict_sha256({"w": torch.zeros(1)})
