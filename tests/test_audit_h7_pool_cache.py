"""protect's pool resumes after an interruption (selection/pool_cache.py): each finished part
is kept in the cache folder beside the references, an interrupted part resumes from its
checkpoint, and the rerun gives the uninterrupted run's fingerprints and threshold to the
bit; without a cache folder nothing is written and nothing changes; a changed setting never
reuses a part; a tampered, swapped or linked part is re-extracted with a warning."""
import dataclasses
import os
import warnings

import pytest
import torch

from ipguard_fast._validate import ArgumentError
from ipguard_fast.attacks import FineTune, Independent, Prune
from ipguard_fast.selection import CacheLocation, ProtectConfig, RefineConfig, pool_cache, run_protect
from ipguard_fast.selection.cache import ReferenceCacheWarning
from ipguard_fast.selection.cache_manifest import MANIFEST
from ipguard_fast.selection.pool_cache import part_name
from ipguard_fast.selection.recipe import ReferenceKind
from ipguard_fast.search.engine import SearchEngine

RECIPE = (ReferenceKind("FTLL", "positive", "fine-tune", FineTune(1e-2, 1, last_only=True)),
          ReferenceKind("prune", "positive", "prune", Prune(0.5)),
          ReferenceKind("indep", "negative", "independent", Independent("owner", 3e-3, (2,))),
          ReferenceKind("indep-generic", "negative", "independent", Independent("generic", 3e-3, (2,))))
CONFIG = ProtectConfig(n=4, pool_factor=2, replicas=1, validation_replicas=1, refine=RefineConfig(steps=3),
                       k=(1.0, 2.0, 3.0), recipe=RECIPE)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bit for bit: CPU results depend on the thread count."""


@pytest.fixture(scope="module")
def plain(owner, small):
    """The uninterrupted run without a cache folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_protect(owner, small, CONFIG, progress=False).fingerprints
    finally:
        torch.set_num_threads(threads)


class Extractions:
    """pool_cache's run_extraction counted (the checkpoint each call resumed from), and
    interrupted (KeyboardInterrupt) at call number `interrupt`, or at that call's `harvest`-th harvest."""

    def __init__(self, monkeypatch, interrupt: int | None = None, harvest: int | None = None):
        self.calls, self.resumed = 0, []
        real, harvest_real = pool_cache.run_extraction, SearchEngine._harvest

        def counted(model, config, **options):
            self.calls += 1
            checkpoint = options.get("checkpoint")
            self.resumed.append(checkpoint is not None and os.path.exists(checkpoint))
            if self.calls == interrupt and harvest is None:
                raise KeyboardInterrupt
            return real(model, config, **options)

        def harvested(engine):
            harvest_real(engine)
            engine.harvests = getattr(engine, "harvests", 0) + 1
            if self.calls == interrupt and engine.harvests == harvest:
                raise KeyboardInterrupt

        monkeypatch.setattr(pool_cache, "run_extraction", counted)
        monkeypatch.setattr(SearchEngine, "_harvest", harvested)


def location(tmp_path, **options) -> CacheLocation:
    return CacheLocation(tmp_path / "cache", tmp_path / "cache.key", **options)


def protect(owner, small, cache, **options):
    """run_protect and the pool cache's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_protect(owner, small, CONFIG, progress=False, cache=cache, **options)
    return result.fingerprints, [str(w.message) for w in caught if issubclass(w.category, ReferenceCacheWarning)]


def assert_same(fps, plain):
    assert torch.equal(fps.images, plain.images) and torch.equal(fps.labels, plain.labels)
    assert fps.meta["threshold"] == plain.meta["threshold"]
    assert fps.meta["selection"]["pool_indices"] == plain.meta["selection"]["pool_indices"]


def parts(tmp_path) -> list:
    return sorted((tmp_path / "cache").glob("*/pool-*.safetensors"))


def test_the_cache_changes_no_fingerprint_and_no_cache_folder_writes_nothing(owner, small, plain, tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    fps, messages = protect(owner, small, None)
    assert_same(fps, plain)
    assert os.listdir(tmp_path) == []
    extractions = Extractions(monkeypatch)
    first, messages = protect(owner, small, location(tmp_path))
    assert_same(first, plain)
    assert messages == []
    assert extractions.calls == 3 and len(parts(tmp_path)) == 3
    again, messages = protect(owner, small, location(tmp_path))
    assert_same(again, plain)
    assert messages == [] and extractions.calls == 3   # every part from the cache


def test_a_pool_interrupted_between_parts_resumes_with_the_same_fingerprints(owner, small, plain, tmp_path,
                                                                            monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        Extractions(monkeypatch, interrupt=3)
        protect(owner, small, location(tmp_path))
    assert len(parts(tmp_path)) == 2
    extractions = Extractions(monkeypatch)
    fps, messages = protect(owner, small, location(tmp_path))
    assert extractions.calls == 1 and messages == []   # the third part only
    assert_same(fps, plain)


def test_a_part_interrupted_midway_resumes_from_its_checkpoint(owner, small, plain, tmp_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        Extractions(monkeypatch, interrupt=2, harvest=30)
        protect(owner, small, location(tmp_path))
    (checkpoint,) = (tmp_path / "cache").glob("*/pool-k2-*.checkpoint.safetensors")
    extractions = Extractions(monkeypatch)
    fps, messages = protect(owner, small, location(tmp_path))
    assert extractions.resumed == [True, False] and messages == []
    assert_same(fps, plain)
    assert not checkpoint.exists() and len(parts(tmp_path)) == 3   # removed once its part is kept
    assert checkpoint.name not in (checkpoint.parent / MANIFEST).read_text()


def test_a_changed_setting_never_reuses_a_part(owner, small, tmp_path, monkeypatch):
    protect(owner, small, location(tmp_path))
    extractions = Extractions(monkeypatch)
    run_protect(owner, small, dataclasses.replace(CONFIG, k=(1.0, 2.0, 2.5)), progress=False,
                cache=location(tmp_path))
    assert extractions.calls == 1   # k 1 and 2 at the same seeds are the same parts; 2.5 is new
    for changed in ({"pool_factor": 3}, {"labels": "random"}, {"init": "uniform"}, {"search": {"max_steps": 500}}):
        calls = extractions.calls
        run_protect(owner, small, dataclasses.replace(CONFIG, **changed), progress=False, cache=location(tmp_path))
        assert extractions.calls == calls + 3, changed


def test_a_part_is_named_by_its_start_images_and_settings():
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = dict(n=8, k=2.0, input_shape=(1, 8, 8), init=images, labels="predicted", seed=5, progress=False)
    name = part_name(settings, "cpu")
    assert name.startswith("pool-k2-data-") and name == part_name({**settings, "progress": True}, "cpu")
    moved = images.clone()
    moved[7, 0, 7, 7] += 1e-3   # other data past the 64 items the references' key hashes
    for other in ({**settings, "init": moved}, {**settings, "seed": 6}, {**settings, "k": 2.5},
                  {**settings, "n": 9}, {**settings, "lr": 0.02}, {**settings, "init": "uniform"}):
        assert part_name(other, "cpu") != name
    assert part_name(settings, "cuda") != name


def test_a_tampered_swapped_or_linked_part_is_re_extracted_with_a_warning(owner, small, plain, tmp_path,
                                                                         monkeypatch):
    protect(owner, small, location(tmp_path))
    first, second, third = parts(tmp_path)
    first.write_bytes(second.read_bytes())    # a genuine part of another k in its place
    data = third.read_bytes()
    third.unlink()
    (tmp_path / "elsewhere.safetensors").write_bytes(data)
    third.symlink_to(tmp_path / "elsewhere.safetensors")   # the right bytes, through a link
    with pytest.raises(ArgumentError, match="^cache_dir: .*pool-k1-.*read-only"):
        protect(owner, small, location(tmp_path, readonly=True))
    extractions = Extractions(monkeypatch)
    fps, messages = protect(owner, small, location(tmp_path))
    assert extractions.calls == 2 and len(messages) == 2, messages
    assert all(m.startswith("pool cache: ") and m.endswith("re-extracted") for m in messages), messages
    assert any(str(first) in m and "SHA-256" in m for m in messages)
    assert any(str(third) in m and "symbolic link" in m for m in messages)
    assert_same(fps, plain)
    again, messages = protect(owner, small, location(tmp_path))
    assert extractions.calls == 2 and messages == []


def test_a_tampered_checkpoint_is_restarted_with_a_warning(owner, small, plain, tmp_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        Extractions(monkeypatch, interrupt=1, harvest=30)
        protect(owner, small, location(tmp_path))
    (checkpoint,) = (tmp_path / "cache").glob("*/pool-k1-*.checkpoint.safetensors")
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 1
    checkpoint.write_bytes(bytes(data))
    extractions = Extractions(monkeypatch)
    fps, messages = protect(owner, small, location(tmp_path))
    assert extractions.resumed == [False, False, False]
    assert len(messages) == 1 and str(checkpoint) in messages[0] and messages[0].endswith("re-extracted")
    assert_same(fps, plain)


class TwoRanks:
    """Rank 0 of two, the other rank answering `other` (None: as this one) to every exchange."""

    rank, world = 0, 2

    def __init__(self, other=None):
        self.other = other

    def exchange(self, payload) -> list:
        return [payload, payload if self.other is None else self.other]


def test_under_torchrun_a_part_is_used_only_when_every_rank_has_it(owner, small, tmp_path, monkeypatch):
    extractions = Extractions(monkeypatch)
    monkeypatch.setattr(pool_cache, "communicator", lambda: TwoRanks())
    protect(owner, small, location(tmp_path))
    assert extractions.calls == 3 and extractions.resumed == [False] * 3   # no checkpoint under torchrun
    assert len(parts(tmp_path)) == 3 and not list((tmp_path / "cache").glob("*/*.checkpoint.*"))
    monkeypatch.setattr(pool_cache, "communicator", lambda: TwoRanks(other=False))
    protect(owner, small, location(tmp_path))
    assert extractions.calls == 6   # the other rank lacks them: every rank extracts them together
    monkeypatch.setattr(pool_cache, "communicator", lambda: TwoRanks())
    protect(owner, small, location(tmp_path))
    assert extractions.calls == 6
