"""Fingerprint, checkpoint and output files from a party that may be hostile, or from a crash:
refused at the door, quickly, with a short message; never an overwritten input."""
import json
import os
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch
from conftest import half_matching_fingerprints
from safetensors import safe_open
from torch import nn

import ipguard_fast as ig
from ipguard_fast._atomic import atomic_write_bytes
from ipguard_fast.cli import main
from ipguard_fast.fingerprints import FingerprintFileError, FingerprintSet
from ipguard_fast.io import save_torchscript
from ipguard_fast.models import train_digits_model

SHAPE = (1, 8, 8)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def rewrite(path, tensors=None, meta_edit=None):
    """Rewrite a fingerprint file with changed tensors or meta, its content hash recomputed."""
    from ipguard_fast.fingerprints import _content_sha256, _meta_json

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        data = {name: f.get_tensor(name) for name in f.keys()}
    meta = json.loads(metadata["ipguard_meta"])
    data.update(tensors or {})
    if meta_edit:
        meta_edit(meta)
    metadata["ipguard_meta"] = _meta_json(meta)
    metadata["content_sha256"] = _content_sha256(data, meta)
    safetensors.torch.save_file(data, str(path), metadata=metadata)


@pytest.fixture()
def fp_file(tmp_path):
    return half_matching_fingerprints(tiny_model(), 20).save(tmp_path / "fp.safetensors")


def test_a_huge_header_is_refused_at_once(tmp_path):
    """128 MB of zero-size tensors in the header: refused from its first 8 bytes, in well under a second."""
    path = tmp_path / "bomb.safetensors"
    entry = b'"t%d": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}'
    text = b"{" + b", ".join(entry % i for i in range(2_000_000)) + b"}"   # the JSON, 20x faster than json.dumps
    path.write_bytes(len(text).to_bytes(8, "little") + text)
    start = time.perf_counter()
    with pytest.raises(FingerprintFileError, match="refused") as info:
        FingerprintSet.load(path)
    assert time.perf_counter() - start < 1.0
    assert len(str(info.value)) < 400
    # Even a header that merely claims to be huge.
    path.write_bytes((99 << 20).to_bytes(8, "little") + b"{}")
    with pytest.raises(FingerprintFileError, match="refused"):
        FingerprintSet.load(path)


def test_nested_metadata_is_a_file_error(fp_file):
    nested = "[" * 100_000 + "]" * 100_000
    with safe_open(str(fp_file), "pt") as f:
        metadata = f.metadata()
        data = {name: f.get_tensor(name) for name in f.keys()}
    metadata["ipguard_meta"] = nested
    safetensors.torch.save_file(data, str(fp_file), metadata=metadata)
    with pytest.raises(FingerprintFileError):
        FingerprintSet.load(fp_file)


def test_a_file_without_num_classes_is_refused(fp_file):
    """Label 12 and no num_classes: before, it verified at 0.99 against a 10-class model."""
    rewrite(fp_file, tensors={"labels": torch.full((20,), 12, dtype=torch.int64)},
            meta_edit=lambda meta: meta.pop("num_classes"))
    with pytest.raises(FingerprintFileError, match="num_classes"):
        FingerprintSet.load(fp_file)


def test_in_memory_labels_are_checked_against_the_suspects_classes():
    model = tiny_model()
    fps = half_matching_fingerprints(model, 20)
    odd = FingerprintSet(images=fps.images, labels=torch.full((20,), 12, dtype=torch.int64),
                         source_labels=fps.source_labels, margins=fps.margins, steps=fps.steps, meta={})
    with pytest.raises(ValueError, match="^fingerprints: owner label 12"):
        ig.verify(model, odd)


def test_pixels_outside_the_box_and_empty_images_are_refused(fp_file, tmp_path):
    rewrite(fp_file, tensors={"images": torch.full((20, *SHAPE), 50.0)})
    with pytest.raises(FingerprintFileError, match="outside the box"):
        FingerprintSet.load(fp_file)
    with pytest.raises(ValueError, match="non-empty images"):
        FingerprintSet(images=torch.zeros(100, 0), labels=torch.zeros(100, dtype=torch.int64),
                       source_labels=torch.ones(100, dtype=torch.int64), margins=torch.zeros(100),
                       steps=torch.zeros(100, dtype=torch.int64), meta={"num_classes": 10})


def test_images_of_another_shape_than_the_search_recorded_are_refused(fp_file):
    """9x9 images where the search recorded 8x8: a TorchScript CNN with a global pool takes both,
    and the owner's own model verified at 0.50 on such a file, reported as no copy."""
    rewrite(fp_file, meta_edit=lambda meta: meta.update(input_shape=list(SHAPE)))
    assert FingerprintSet.load(fp_file).input_shape == SHAPE   # the recorded shape, kept, loads
    rewrite(fp_file, tensors={"images": torch.rand(20, 1, 9, 9)})
    with pytest.raises(FingerprintFileError, match=r"one image has shape \[1, 9, 9\] but meta\['input_shape'\] "
                                                   r"records \[1, 8, 8\]"):
        FingerprintSet.load(fp_file)
    for odd in ([1, "8", 8], [], [1, 0, 8], "1x8x8", [True, 8, 8]):
        rewrite(fp_file, tensors={"images": torch.rand(20, *SHAPE)}, meta_edit=lambda meta: meta.update(input_shape=odd))
        with pytest.raises(FingerprintFileError, match="input_shape"):
            FingerprintSet.load(fp_file)


def test_an_output_name_that_cannot_be_read_back_is_refused(tmp_path):
    fps = half_matching_fingerprints(tiny_model(), 4)
    bad = os.path.join(str(tmp_path), "fp-\udcff.safetensors")  # a byte that is not UTF-8
    with pytest.raises(ValueError, match="UTF-8"):
        fps.save(bad)
    assert os.listdir(tmp_path) == []


def test_extract_refuses_to_overwrite_its_model(tmp_path, capsys):
    model_path = save_torchscript(tiny_model(), torch.rand(2, *SHAPE), tmp_path / "model.pt")
    before = model_path.read_bytes()
    code = main(["extract", "--model", str(model_path), "--input-shape", "1,8,8", "-n", "2", "--k", "1",
                 "--no-progress", "--out", str(model_path)])
    assert code == 2 and "--out" in capsys.readouterr().err
    assert model_path.read_bytes() == before
    assert main(["export", "--model", str(model_path), "--input-shape", "1,8,8", "--format", "torchscript",
                 "--out", str(tmp_path / "." / "model.pt")]) == 2
    assert model_path.read_bytes() == before


def test_a_forged_checkpoint_cannot_slip_points_into_the_result(tmp_path):
    owner = train_digits_model("cnn", seed=0, epochs=2)
    ckpt = tmp_path / "run.checkpoint"

    class Stop(nn.Module):
        def __init__(self, model, calls):
            super().__init__()
            self.model, self.calls = model, calls

        def forward(self, x):
            self.calls -= 1
            if self.calls == 0:
                raise KeyboardInterrupt
            return self.model(x)

    args = dict(k=2.0, input_shape=SHAPE, progress=False, batch_size=8, max_steps=300)
    with pytest.raises(KeyboardInterrupt):
        ig.extract_fingerprints(Stop(owner, 60), 12, checkpoint=ckpt, **args)
    with safe_open(str(ckpt), "pt") as f:
        metadata = f.metadata()
        data = {name: f.get_tensor(name) for name in f.keys()}
    assert data["index"].numel() > 0, "the interrupted run saved no fingerprint to forge"
    data["images"] = torch.rand_like(data["images"])  # points the owner does not accept
    safetensors.torch.save_file(data, str(ckpt), metadata=metadata)
    with pytest.raises(ValueError, match="^checkpoint:.*does not accept"):
        ig.extract_fingerprints(Stop(owner, -1), 12, checkpoint=ckpt, **args)
    metadata["finished"] = json.dumps([["x", True]])
    safetensors.torch.save_file(data, str(ckpt), metadata=metadata)
    with pytest.raises(ValueError, match="^checkpoint:.*damaged"):
        ig.extract_fingerprints(Stop(owner, -1), 12, checkpoint=ckpt, **args)


def test_a_forged_checkpoint_cannot_relabel_natural_images_or_claim_margins(tmp_path):
    """Natural digits the owner labels j by k or more, with i its runner-up, pass the acceptance
    rule: a forged checkpoint holding them, their margins set high, was resumed into the set.
    Each point's labels must be its candidate's own draw, and its margin must be the one measured again."""
    from ipguard_fast.data import load_digits

    owner = train_digits_model("cnn", seed=0, epochs=2)
    ckpt = tmp_path / "run.checkpoint"
    args = dict(k=2.0, input_shape=SHAPE, progress=False, batch_size=8, max_steps=300)

    class Stop(nn.Module):   # the owner, interrupted at its calls-th call (never at -1)
        def __init__(self, calls):
            super().__init__()
            self.model, self.calls = owner, calls

        def forward(self, x):
            self.calls -= 1
            if self.calls == 0:
                raise KeyboardInterrupt
            return self.model(x)

    with pytest.raises(KeyboardInterrupt):
        ig.extract_fingerprints(Stop(60), 12, checkpoint=ckpt, **args)
    with safe_open(str(ckpt), "pt") as f:
        metadata, honest = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    m = honest["index"].numel()
    assert m > 0, "the interrupted run saved no fingerprint to forge"
    digits = torch.stack([load_digits("train")[n][0] for n in range(200)])
    with torch.no_grad():
        top = owner(digits).topk(2, dim=1)
    sure = (top.values[:, 0] - top.values[:, 1] >= 2.5).nonzero().flatten()[:m]
    assert len(sure) == m
    forged = dict(honest, images=digits[sure].contiguous(), j=top.indices[sure, 0].contiguous(),
                  i=top.indices[sure, 1].contiguous(), margins=torch.full((m,), 50.0))
    safetensors.torch.save_file(forged, str(ckpt), metadata=metadata)
    with pytest.raises(ValueError, match="^checkpoint:.*not its candidates' own draws"):
        ig.extract_fingerprints(Stop(-1), 12, checkpoint=ckpt, **args)
    safetensors.torch.save_file(dict(honest, margins=torch.full((m,), 50.0)), str(ckpt), metadata=metadata)
    with pytest.raises(ValueError, match="^checkpoint:.*margins this model does not give"):
        ig.extract_fingerprints(Stop(-1), 12, checkpoint=ckpt, **args)
    safetensors.torch.save_file(honest, str(ckpt), metadata=metadata)
    assert len(ig.extract_fingerprints(Stop(-1), 12, checkpoint=ckpt, **args)) == 12   # the honest one resumes


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "run.checkpoint"
    # A writer killed outright leaves its temp file; the pid in its name is of a dead process.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = tmp_path / f".run.{dead}-abc123.tmp.checkpoint"
    orphan.write_bytes(b"half a file")
    alive = tmp_path / f".run.{os.getpid()}-def456.tmp.checkpoint"  # a live writer's: kept
    alive.write_bytes(b"being written")
    atomic_write_bytes(target, b"done")
    assert target.read_bytes() == b"done"
    assert not orphan.exists() and alive.exists()


def test_a_meta_that_is_no_strict_json_is_a_file_error(fp_file):
    """NaN in the meta: a FingerprintFileError naming the file, not json's bare ValueError."""
    with safe_open(str(fp_file), "pt") as f:
        metadata = f.metadata()
        data = {name: f.get_tensor(name) for name in f.keys()}
    metadata["ipguard_meta"] = metadata["ipguard_meta"][:-1] + ',"k2":NaN}'
    safetensors.torch.save_file(data, str(fp_file), metadata=metadata)
    with pytest.raises(FingerprintFileError, match="NaN") as info:
        FingerprintSet.load(fp_file)
    assert str(fp_file) in str(info.value)


@pytest.mark.parametrize("requested", [[20], "20", {"n": 20}, -1, True])
def test_a_requested_count_that_is_no_count_is_refused_at_load(fp_file, requested):
    rewrite(fp_file, meta_edit=lambda meta: meta.update(requested=requested))
    with pytest.raises(FingerprintFileError, match=r"meta\['requested'\]"):
        FingerprintSet.load(fp_file)


def test_a_stored_threshold_of_zero_accuses_no_one(fp_file):
    """At 0 a model that matches no fingerprint at all was called pirated."""
    rewrite(fp_file, meta_edit=lambda meta: meta.update(threshold=0))
    fps = FingerprintSet.load(fp_file)
    never = lambda images: (fps.labels[:len(images)] + 1) % 10  # noqa: E731 - matches nothing
    with pytest.raises(ValueError, match=r"^fingerprints.meta\['threshold'\]: must be above 0"):
        ig.verify(never, fps)
    assert ig.verify(never, fps, threshold=0.5).matching_rate == 0.0


@pytest.mark.parametrize("zero", [0, 0.0, -0.0])
def test_a_threshold_of_zero_given_by_the_caller_accuses_no_one_either(fp_file, zero, capsys):
    fps = FingerprintSet.load(fp_file)
    never = lambda images: (fps.labels[:len(images)] + 1) % 10  # noqa: E731 - matches nothing
    with pytest.raises(ValueError, match=r"^threshold: must be above 0"):
        ig.verify(never, fps, threshold=zero)
    model = tiny_model()
    path = fp_file.parent / "suspect.pt"
    save_torchscript(model, torch.rand(2, *SHAPE), path)
    code = main(["verify", "--fingerprints", str(fp_file), "--model", str(path), "--no-isolate",
                     "--threshold", str(zero)])
    err = capsys.readouterr().err
    assert code == 2 and "--threshold: must be above 0" in err and "PIRATED" not in err


def test_a_temp_name_swapped_for_a_link_writes_no_other_file(tmp_path):
    """In a folder others can write (a shared cache), the temp file's name can be swapped for a
    link to another file while it is written. The bytes went through a reopen by name and so
    over the linked file (an audit's race reached it in 4 cache saves); they now go through the
    descriptor that created the temp file, and the other file keeps its bytes."""
    from ipguard_fast._atomic import atomic_save

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file")
    target = tmp_path / "cache" / "ref.safetensors"
    target.parent.mkdir()

    def swapped_while_written(handle):
        (name,) = [n for n in os.listdir(target.parent) if n.startswith(".ref.")]
        os.remove(target.parent / name)
        os.symlink(victim, target.parent / name)
        handle.write(b"the cache's bytes")

    atomic_save(target, swapped_while_written)
    assert victim.read_text() == "the user's own file"
    fps = FingerprintSet(torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), torch.ones(3),
                         torch.zeros(3, dtype=torch.int64), {"num_classes": 10})
    assert_same = FingerprintSet.load(fps.save(tmp_path / "fp.safetensors"))   # every writer writes so
    assert torch.equal(assert_same.images, fps.images) and assert_same.meta["num_classes"] == 10
