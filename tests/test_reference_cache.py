"""The reference cache is authenticated: every attack on a cached file that once changed
protect()'s threshold silently (owner weights over an independent, swapped references,
zeroed, linked, NaN weights, a folder in a file's place, an edited manifest) is rebuilt
with a warning naming the file, or refused with cache_readonly; the key covers the
owner's architecture, not only its weights. A 4-kind recipe keeps each run to seconds."""
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ipguard_fast._validate import ArgumentError
from ipguard_fast.attacks import FineTune, Independent, Prune
from ipguard_fast.selection import ProtectConfig, run_protect
from ipguard_fast.selection.cache import (CacheLocation, ReferenceCache, ReferenceCacheWarning, cache_secret,
                                          check_cache_dir, reference_cache_key)
from ipguard_fast.selection.cache_manifest import MANIFEST, mac_key, write_record
from ipguard_fast.selection.recipe import ReferenceKind

SMALL_RECIPE = (ReferenceKind("FTLL", "positive", "fine-tune", FineTune(1e-2, 1, last_only=True)),
                ReferenceKind("prune", "positive", "prune", Prune(0.5)),
                ReferenceKind("indep", "negative", "independent", Independent("owner", 3e-3, (2,))),
                ReferenceKind("indep-generic", "negative", "independent", Independent("generic", 3e-3, (2,))))
CONFIG = ProtectConfig(n=4, pool_factor=2, replicas=1, validation_replicas=1, refine=False, k=(2.0,),
                       recipe=SMALL_RECIPE)
VALIDATION_NEGATIVE, VALIDATION_POSITIVE = "protect/indep-e2/r1", "protect/FTLL/r1"


class Cached(NamedTuple):
    root: Path          # the cache_dir
    key_file: Path
    folder: Path        # root/<key>
    threshold: float    # the clean run's

    def file(self, name: str) -> Path:
        return self.folder / (name.replace("/", "_") + ".safetensors")


@pytest.fixture(scope="module")
def clean(owner, small, tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    result = run_protect(owner, small, CONFIG, cache=CacheLocation(root / "cache", root / "cache.key"),
                         progress=False)
    assert not any(r.cached for r in result.references)
    return root, result.fingerprints.meta["threshold"]


@pytest.fixture
def cache(clean, tmp_path) -> Cached:
    """A private copy of the clean run's cache and key."""
    root, threshold = clean
    shutil.copytree(root / "cache", tmp_path / "cache", symlinks=True)
    shutil.copy2(root / "cache.key", tmp_path / "cache.key")
    (folder,) = (tmp_path / "cache").iterdir()
    return Cached(tmp_path / "cache", tmp_path / "cache.key", folder, threshold)


def rerun(owner, small, cached: Cached, **options):
    """protect() again on `cached`: the result and the cache's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_protect(owner, small, CONFIG, cache=CacheLocation(cached.root, cached.key_file),
                             progress=False, **options)
    return result, [str(w.message) for w in caught if issubclass(w.category, ReferenceCacheWarning)]


def assert_rebuilt(owner, small, cached: Cached, names: list[str], reason: str):
    """One run warns about each of `names` (with `reason`), rebuilds them, keeps the clean
    threshold; the run after it trusts the whole cache again."""
    result, messages = rerun(owner, small, cached)
    for name in names:
        assert any(str(cached.file(name)) in m and reason in m and m.endswith("rebuilt") for m in messages), messages
    assert {r.name for r in result.references if not r.cached} == set(names)
    assert result.fingerprints.meta["threshold"] == cached.threshold
    again, messages = rerun(owner, small, cached)
    assert messages == [] and all(r.cached for r in again.references)
    assert again.fingerprints.meta["threshold"] == cached.threshold


def test_a_clean_cache_is_used_as_it_is(owner, small, cache):
    result, messages = rerun(owner, small, cache)
    assert messages == [] and all(r.cached for r in result.references)
    assert result.fingerprints.meta["threshold"] == cache.threshold
    assert (cache.folder / MANIFEST).is_file()


def test_owner_weights_over_a_cached_independent_are_rebuilt(owner, small, cache):
    save_file(owner.state_dict(), cache.file(VALIDATION_NEGATIVE))   # the threshold once rose to 1.00 silently
    assert_rebuilt(owner, small, cache, [VALIDATION_NEGATIVE], "the manifest records")


def test_a_validation_positive_and_negative_swapped_are_rebuilt(owner, small, cache):
    positive, negative = cache.file(VALIDATION_POSITIVE), cache.file(VALIDATION_NEGATIVE)
    os.replace(positive, cache.folder / "swap")
    os.replace(negative, positive)
    os.replace(cache.folder / "swap", negative)
    assert_rebuilt(owner, small, cache, [VALIDATION_POSITIVE, VALIDATION_NEGATIVE], "manifest")


def test_all_zero_weights_of_the_same_size_are_rebuilt(owner, small, cache):
    path = cache.file(VALIDATION_NEGATIVE)
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")   # the same header, every weight's bytes zeroed
    path.write_bytes(data[:header] + bytes(len(data) - header))
    assert all(not v.any() for v in load_file(path).values())
    assert_rebuilt(owner, small, cache, [VALIDATION_NEGATIVE], "SHA-256 does not match")


def test_a_symlink_is_rebuilt_even_to_the_right_bytes(owner, small, cache, tmp_path):
    """A link is refused for being a link: to foreign weights, and to a copy of the genuine file."""
    foreign, genuine = tmp_path / "foreign.safetensors", tmp_path / "genuine.safetensors"
    save_file(owner.state_dict(), foreign)
    shutil.copy(cache.file(VALIDATION_POSITIVE), genuine)
    cache.file(VALIDATION_NEGATIVE).unlink()
    cache.file(VALIDATION_NEGATIVE).symlink_to(foreign)
    cache.file(VALIDATION_POSITIVE).unlink()
    cache.file(VALIDATION_POSITIVE).symlink_to(genuine)
    foreign_bytes = foreign.read_bytes()
    assert_rebuilt(owner, small, cache, [VALIDATION_NEGATIVE, VALIDATION_POSITIVE], "symbolic link")
    assert not cache.file(VALIDATION_NEGATIVE).is_symlink() and foreign.read_bytes() == foreign_bytes


def test_nan_weights_recorded_with_the_key_are_rebuilt_not_refused_forever(owner, small, cache):
    """NaN weights in a file the manifest vouches for (a diverged or damaged build): the finite check."""
    path = cache.file(VALIDATION_NEGATIVE)
    tensors = load_file(path)
    next(iter(tensors.values())).view(-1)[0] = float("nan")
    save_file(tensors, path)
    write_record(cache.folder, cache.folder.name, mac_key(cache_secret(cache.key_file)), path.name,
                 path.read_bytes())
    assert_rebuilt(owner, small, cache, [VALIDATION_NEGATIVE], "non-finite")


def test_a_directory_in_place_of_a_file_is_left_alone_and_the_reference_rebuilt(owner, small, cache):
    path = cache.file(VALIDATION_NEGATIVE)
    path.unlink()
    path.mkdir()
    (path / "mine.txt").write_text("a user's file")
    result, messages = rerun(owner, small, cache)
    assert any(str(path) in m and "directory" in m and m.endswith("rebuilt") for m in messages), messages
    assert any(str(path) in m and "not cached" in m for m in messages), messages
    assert result.fingerprints.meta["threshold"] == cache.threshold
    assert (path / "mine.txt").read_text() == "a user's file"


def test_a_manifest_edited_without_the_key_vouches_for_nothing(owner, small, cache):
    path = cache.file(VALIDATION_NEGATIVE)
    save_file(owner.state_dict(), path)
    manifest = json.loads((cache.folder / MANIFEST).read_text())
    data = path.read_bytes()
    manifest["files"][path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (cache.folder / MANIFEST).write_text(json.dumps(manifest))
    result, messages = rerun(owner, small, cache)
    assert any(str(cache.folder / MANIFEST) in m and "MAC does not match" in m for m in messages), messages
    assert not any(r.cached for r in result.references)
    assert result.fingerprints.meta["threshold"] == cache.threshold
    assert rerun(owner, small, cache)[1] == []


def test_a_manifest_made_with_another_key_or_for_another_folder_is_refused(tmp_path):
    model = nn.Linear(3, 2)
    first = ReferenceCache(tmp_path / "c", key="a" * 32, key_file=tmp_path / "k1")
    first.save("m", model)
    other_key = ReferenceCache(tmp_path / "c", key="a" * 32, key_file=tmp_path / "k2")
    with pytest.warns(ReferenceCacheWarning, match="MAC does not match"):
        assert other_key.load("m", lambda: nn.Linear(3, 2)) is None
    shutil.copytree(tmp_path / "c" / ("a" * 32), tmp_path / "c" / ("b" * 32))
    moved = ReferenceCache(tmp_path / "c", key="b" * 32, key_file=tmp_path / "k1")
    with pytest.warns(ReferenceCacheWarning, match="another cache folder"):
        assert moved.load("m", lambda: nn.Linear(3, 2)) is None
    loaded = first.load("m", lambda: nn.Linear(3, 2))
    assert torch.equal(loaded.weight, model.weight)


def test_extra_and_missing_files_are_rebuilt(tmp_path):
    cache = ReferenceCache(tmp_path, key="c" * 32, key_file=tmp_path / "k")
    cache.save("kept", nn.Linear(3, 2))
    cache.save("gone", nn.Linear(3, 2))
    shutil.copy(cache.path("kept"), cache.path("extra"))
    cache.path("gone").unlink()
    with pytest.warns(ReferenceCacheWarning, match="extra.safetensors is not recorded in the manifest; rebuilt"):
        assert cache.load("extra", lambda: nn.Linear(3, 2)) is None
    with pytest.warns(ReferenceCacheWarning, match="gone.safetensors is missing"):
        assert cache.load("gone", lambda: nn.Linear(3, 2)) is None
    assert cache.load("kept", lambda: nn.Linear(3, 2)) is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load("never", lambda: nn.Linear(3, 2)) is None   # never cached: built, no warning
    assert caught == []
    with pytest.warns(ReferenceCacheWarning, match="other names"):
        assert cache.load("kept", lambda: nn.Sequential(nn.Linear(3, 2))) is None


def _timed_out(signum, frame):
    raise TimeoutError("the cache blocked on a special file")


def test_special_files_in_the_cache_folder_never_hang_it(tmp_path):
    cache = ReferenceCache(tmp_path, key="e" * 32, key_file=tmp_path / "k")
    cache.save("m", nn.Linear(3, 2))
    for name in (MANIFEST, ".manifest.lock"):
        os.replace(cache.folder / name, tmp_path / "aside")
        os.mkfifo(cache.folder / name)
        previous = signal.signal(signal.SIGALRM, _timed_out)
        signal.alarm(20)   # a FIFO opened for reading without a writer would block forever
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = cache.load("m", lambda: nn.Linear(3, 2))
                cache.save("n", nn.Linear(3, 2))
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert loaded is None, name   # neither the manifest nor the lock can vouch for the file: rebuilt
        assert all(issubclass(w.category, ReferenceCacheWarning) for w in caught) and len(caught) == 2
        os.unlink(cache.folder / name)
        os.replace(tmp_path / "aside", cache.folder / name)


def test_readonly_refuses_instead_of_rebuilding_and_writes_nothing(owner, small, cache):
    path = cache.file(VALIDATION_NEGATIVE)
    save_file(owner.state_dict(), path)
    tampered = path.read_bytes()
    with pytest.raises(ArgumentError, match=f"^cache_dir: {path} is not the size the manifest records .*read-only") as info:
        run_protect(owner, small, CONFIG, cache=CacheLocation(cache.root, cache.key_file, readonly=True),
                    progress=False)
    assert info.value.argument == "cache_dir" and path.read_bytes() == tampered
    empty = cache.root.parent / "empty"
    result = run_protect(owner, small, CONFIG, cache=CacheLocation(empty, cache.key_file, readonly=True),
                         progress=False)
    assert not empty.exists() and result.fingerprints.meta["threshold"] == cache.threshold


def test_the_key_covers_the_architecture_not_only_the_weights(owner, small):
    def factory(activation):
        class Net(nn.Module):   # one source text, one qualified name: only the closure differs
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, 10)

            def forward(self, x):
                return activation(self.fc(x.flatten(1)))
        return Net

    relu, tanh = factory(torch.relu)(), factory(torch.tanh)()
    tanh.load_state_dict(relu.state_dict())
    key = lambda model, config=CONFIG: reference_cache_key(model, small, config)
    twin = factory(torch.relu)()
    twin.load_state_dict(relu.state_dict())
    assert key(relu) != key(tanh) and key(relu) == key(twin)
    seq = [nn.Sequential(nn.Flatten(), nn.Linear(64, 10), act) for act in (nn.ReLU(), nn.Tanh())]
    seq[1].load_state_dict(seq[0].state_dict())
    assert key(seq[0]) != key(seq[1])
    assert key(owner) != key(owner, dataclasses.replace(CONFIG, seed=1))
    assert key(owner) != key(owner, dataclasses.replace(CONFIG, recipe=SMALL_RECIPE[:1] + SMALL_RECIPE[2:]))


def test_the_key_names_the_precision_the_references_train_at(owner, small, monkeypatch):
    from ipguard_fast.precision import chosen_precision

    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)
    plain = reference_cache_key(owner, small, CONFIG)
    with chosen_precision("fp32"):
        assert reference_cache_key(owner, small, CONFIG) == plain   # float32 caches keep their keys
    with chosen_precision("fp32-cl"):
        channels_last = reference_cache_key(owner, small, CONFIG)
    monkeypatch.setenv("IPGUARD_FAST_TRAIN_PRECISION", "fp32-cl")
    assert reference_cache_key(owner, small, CONFIG) == channels_last != plain   # the environment forces one too
    with chosen_precision("fp32"):
        assert reference_cache_key(owner, small, CONFIG) == channels_last


def test_bad_cache_folders_and_keys_are_refused_before_any_work(owner, small, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArgumentError, match="^cache_dir: .*file exists and is not a folder"):
        run_protect(owner, small, CONFIG, cache=CacheLocation(tmp_path / "file", tmp_path / "k"))
    with pytest.raises(ArgumentError, match="^cache_dir: cannot create"):
        check_cache_dir(tmp_path / "file" / "sub")
    with pytest.raises(ArgumentError, match="^cache_key_file: .*not a regular file.*--cache-key"):
        run_protect(owner, small, CONFIG, cache=CacheLocation(tmp_path / "c", tmp_path))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ArgumentError, match="^cache_key_file: "):
        cache_secret(tmp_path / "fifo")


def test_the_data_key_sees_a_change_past_the_first_items(tmp_path):
    """The key hashed a data set's length and first 64 items only: data whose later items were
    relabelled reused references trained on the old ones, without a word. A TensorDataset and
    the uint8 storage are hashed whole, an ImageFolder by every file, anything else by items
    spread over it too."""
    from PIL import Image
    from torch.utils.data import Dataset, TensorDataset
    from torchvision import datasets, transforms

    from ipguard_fast.data_files import UInt8Images
    from ipguard_fast.selection.cache_key import data_digest

    images, labels = torch.rand(640, 1, 8, 8), torch.arange(640) % 10
    relabelled = labels.clone()
    relabelled[300] = (relabelled[300] + 1) % 10

    class Items(Dataset):   # no tensors at hand: only its items say what it holds
        def __init__(self, labels):
            self.labels_list = labels

        def __len__(self):
            return len(self.labels_list)

        def __getitem__(self, index):
            return images[index], self.labels_list[index]

    assert data_digest(TensorDataset(images, labels)) != data_digest(TensorDataset(images, relabelled))
    stored = (images * 255).to(torch.uint8)
    assert data_digest(UInt8Images(stored, labels)) != data_digest(UInt8Images(stored, relabelled))
    assert data_digest(Items(labels)) != data_digest(Items(relabelled))   # index 300 is one of the spread
    assert data_digest(TensorDataset(images, labels)) == data_digest(TensorDataset(images.clone(), labels.clone()))
    # A data set of the caller's own with a `samples` list of other things is known by its items.
    other = Items(labels)
    other.samples = [{"id": index} for index in range(640)]
    assert data_digest(other) != data_digest(Items(relabelled))
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for index in range(70):
            Image.new("RGB", (4, 4), (index, 0, 0)).save(tmp_path / cls / f"{index:03d}.png")
    folder = lambda: datasets.ImageFolder(str(tmp_path), transform=transforms.ToTensor())   # noqa: E731
    before = data_digest(folder())
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "b" / "069.png")   # the last image of the last class
    assert data_digest(folder()) != before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_key_folder_of_another_user_is_not_written(tmp_path):
    """Whoever can write the cache's folder can rename this user's key folder away and put one
    of their own in its place, with links in it: a key folder another user owns is neither
    written nor read (a warning says so; the reference is built as without a cache)."""
    cache = ReferenceCache(tmp_path / "c", key="a" * 32, key_file=tmp_path / "k")
    cache.folder.mkdir(parents=True)
    os.chown(cache.folder, 12345, 12345)
    with pytest.warns(ReferenceCacheWarning, match="another user"):
        cache.save_bytes("ref0", b"bytes")
    assert os.listdir(cache.folder) == []


def test_a_key_folder_swapped_for_a_link_after_the_check_takes_no_write(tmp_path, monkeypatch):
    """Whoever can write the cache's folder can swap the key's folder for a link to another
    folder of the user's between the check and the write (an audit's race put the manifest
    into it within 0.1 s). The folder is opened once and every write goes through it."""
    import ipguard_fast.selection.cache as cache_module

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "manifest.json").write_text("the user's own file")
    cache = ReferenceCache(tmp_path / "c", key="a" * 32, key_file=tmp_path / "k")
    real_write = cache_module.write_record

    def swapped_first(folder, *args):
        os.rename(cache.folder, tmp_path / "moved")   # the real key folder, renamed away ...
        os.symlink(victim, cache.folder)              # ... and a link in its place
        return real_write(folder, *args)

    monkeypatch.setattr(cache_module, "write_record", swapped_first)
    cache.folder.mkdir(parents=True)
    cache.save_bytes("ref0", b"bytes")
    assert sorted(os.listdir(victim)) == ["manifest.json"]
    assert (victim / "manifest.json").read_text() == "the user's own file"
    assert (tmp_path / "moved" / "ref0.safetensors").read_bytes() == b"bytes"   # written where it was opened
