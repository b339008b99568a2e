"""evaluate keeps the suspects it builds in an authenticated cache (evaluation/suspect_cache.py):
an interrupted run, rerun, trains only the missing suspects and reports what an uninterrupted
run reports; a changed owner, data, seed or setting trains anew; a tampered, linked or swapped
file is rebuilt with a warning (refused read-only), never loaded; the caller's RNG is left alone."""
import copy
import os
import shutil
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import BuildInterrupted
import ipguard_fast as ig
from ipguard_fast._validate import ArgumentError
from ipguard_fast.attacks import FineTune, Independent, Preprocess
from ipguard_fast.evaluation import Variant, build_variants, make_bed
from ipguard_fast.models import DigitsMLP
from ipguard_fast.selection.cache import CacheLocation, ReferenceCacheWarning

EVALUATE = dict(input_shape=(1, 8, 8), negative_factories={"mlp": DigitsMLP}, negative_seeds=(1, 2),
                negative_epochs=1, ks=(2.0,), n=8, seed=0, log=lambda *a: None)


def numbers(result) -> list:
    """What a report says, timings left out."""
    return [(r.method, r.k, r.aruc, r.roc_auc, r.verdicts,
             [(s["name"], s["role"], s["matching_rate"], s["accuracy"]) for s in r.suspects]) for r in result.runs]


@pytest.fixture(scope="module")
def uninterrupted(owner, small):
    return ig.evaluate(owner, small, **EVALUATE)


@pytest.fixture(scope="module")
def cached(owner, small, tmp_path_factory):
    """A cache the full evaluate filled: (its folder, its key file)."""
    root = tmp_path_factory.mktemp("suspects")
    ig.evaluate(owner, small, suspect_cache=CacheLocation(root / "cache", root / "key"), **EVALUATE)
    return root / "cache", root / "key"


def test_an_interrupted_evaluate_resumes_to_the_uninterrupted_report(owner, small, uninterrupted, builds, tmp_path):
    where = CacheLocation(tmp_path / "cache", tmp_path / "key")
    builds["stop_after"] = 2
    with pytest.raises(BuildInterrupted):
        ig.evaluate(owner, small, suspect_cache=where, **EVALUATE)
    builds.update(count=0, stop_after=None)
    resumed = ig.evaluate(owner, small, suspect_cache=where, **EVALUATE)
    total = len(uninterrupted.runs[0].suspects)
    assert builds["count"] == total - 2   # the two finished before the interruption were loaded
    assert numbers(resumed) == numbers(uninterrupted)
    builds["count"] = 0
    assert numbers(ig.evaluate(owner, small, suspect_cache=where, **EVALUATE)) == numbers(uninterrupted)
    assert builds["count"] == 0


def test_without_a_suspect_cache_nothing_is_written(owner, small, uninterrupted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert numbers(ig.evaluate(owner, small, **EVALUATE)) == numbers(uninterrupted)
    assert list(tmp_path.iterdir()) == []


def _variants(lr=1e-2, hidden=32):
    return [Variant("FTLL", "FTLL", "fine-tune", FineTune(lr, 1, last_only=True)),
            Variant("indep", "independent-mlp", "independent", Independent(lambda: DigitsMLP(hidden=hidden), 1e-3, 1),
                    role="negative"),
            Variant("noise", "preprocess", "preprocess", Preprocess("noise", 0.05))]


def test_a_changed_owner_data_seed_or_setting_trains_anew(owner, small, builds, tmp_path):
    where = CacheLocation(tmp_path / "cache", tmp_path / "key")

    def trained(owner=owner, data=small, seed=0, **settings):
        builds["count"] = 0
        models = [s.model for s in build_variants(owner, data, _variants(**settings), seed=seed,
                                                  suspect_cache=where)]
        return builds["count"], models

    count, first = trained()
    assert count == 3
    count, again = trained()
    assert count == 0
    for a, b in zip(first, again):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    changed = copy.deepcopy(owner)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    assert trained(owner=changed)[0] == 3
    images = small.tensors[0].clone()
    images[0] = 1 - images[0]
    assert trained(data=TensorDataset(images, small.tensors[1]))[0] == 3
    labels = small.tensors[1].clone()
    labels[-1] = (labels[-1] + 1) % 10   # past the 64 items protect's data digest reads
    assert trained(data=TensorDataset(small.tensors[0], labels))[0] == 3
    assert trained(seed=1)[0] == 3
    assert trained(lr=2e-2)[0] == 1            # only the fine-tuned copy's setting changed
    assert trained(hidden=64)[0] == 1          # the same name and settings, another factory
    assert trained()[0] == 0                   # the first run's files are all still there


def test_the_cache_leaves_the_callers_rng_alone(owner, small, tmp_path):
    where = CacheLocation(tmp_path / "cache", tmp_path / "key")
    for _ in range(2):   # built, then loaded
        state = torch.get_rng_state()
        build_variants(owner, small, _variants(), suspect_cache=where)
        assert torch.equal(torch.get_rng_state(), state)


def test_every_suspect_of_a_bed_loads_to_the_model_built(owner, small, tmp_path):
    """Every attack of the demo bed (wrappers included: noise restarts its draws, half
    precision stays half) gives the same outputs loaded as built."""
    bed = make_bed("demo", digits=True, input_shape=(1, 8, 8), num_classes=10, small_factory=DigitsMLP)
    where = CacheLocation(tmp_path / "cache", tmp_path / "key")
    lines = []
    built = bed.suspects(owner, small, suspect_cache=where, log=lines.append)
    loaded = bed.suspects(owner, small, suspect_cache=where, log=lines.append)
    plain = bed.suspects(owner, small, log=lines.append)
    assert lines[1].endswith(f"({len(built)} of them from the cache)") and "cache" not in lines[2]
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    for a, b, c in zip(built, loaded, plain):
        assert type(a.model) is type(b.model), a.name
        with torch.no_grad():   # each called once: a noisy suspect's draws go on between calls
            first, second, third = a.model(x), b.model(x), c.model(x)
        assert torch.equal(first, second) and torch.equal(first, third), a.name


def _copy(cached, tmp_path) -> tuple:
    root, key = cached
    shutil.copytree(root, tmp_path / "cache", symlinks=True)
    shutil.copy2(key, tmp_path / "key")
    return tmp_path / "cache", tmp_path / "key"


def _file(root, stem):
    (path,) = [p for p in root.rglob("*.safetensors") if p.name.startswith(stem + "-")]
    return path


def _rerun(owner, small, where, builds):
    builds.update(count=0, stop_after=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ig.evaluate(owner, small, suspect_cache=where, **EVALUATE)
    return result, [str(w.message) for w in caught if issubclass(w.category, ReferenceCacheWarning)]


def test_a_swapped_suspect_is_rebuilt_with_a_warning(owner, small, cached, uninterrupted, builds, tmp_path):
    root, key = _copy(cached, tmp_path)
    victim = _file(root, "FTAL-lr0.001-e3")
    # a valid file of the same architecture, recorded under its own name: here its hash is not the record's
    victim.write_bytes(_file(root, "prune-80").read_bytes())
    result, messages = _rerun(owner, small, CacheLocation(root, key), builds)
    assert builds["count"] == 1
    assert [m for m in messages if m.startswith(f"suspect cache: {victim} ") and "manifest" in m], messages
    assert numbers(result) == numbers(uninterrupted)
    assert _rerun(owner, small, CacheLocation(root, key), builds)[1] == [] and builds["count"] == 0


def test_a_linked_or_non_finite_suspect_is_rebuilt(owner, small, cached, uninterrupted, builds, tmp_path):
    root, key = _copy(cached, tmp_path)
    linked = _file(root, "RTAL-lr0.001-e5")
    target = _file(root, "RTLL-lr0.01-e5")
    linked.unlink()
    os.symlink(target, linked)
    result, messages = _rerun(owner, small, CacheLocation(root, key), builds)
    assert builds["count"] == 1 and any(str(linked) in m and "symbolic link" in m for m in messages)
    assert not linked.is_symlink()
    assert numbers(result) == numbers(uninterrupted)


def test_a_read_only_cache_refuses_a_tampered_suspect(owner, small, cached, tmp_path):
    root, key = _copy(cached, tmp_path)
    victim = _file(root, "distill")
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1   # a weight's last byte: still a readable file, no longer the recorded one
    victim.write_bytes(bytes(data))
    with pytest.raises(ArgumentError, match="^suspect_cache: .*refused: the cache is read-only") as caught:
        ig.evaluate(owner, small, suspect_cache=CacheLocation(root, key, readonly=True), **EVALUATE)
    assert caught.value.argument == "suspect_cache" and str(victim) in str(caught.value)


def test_suspects_given_and_a_suspect_cache_are_refused(owner, small, tmp_path):
    from ipguard_fast.evaluation import Suspect

    suspects = [Suspect("a", "FTLL", "positive", owner), Suspect("b", "independent-x", "negative", DigitsMLP())]
    with pytest.raises(ValueError, match="^suspect_cache: caches the suspects evaluate builds"):
        ig.evaluate(owner, small, input_shape=(1, 8, 8), suspects=suspects, suspect_cache=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_settings_are_described_by_their_whole_content(owner, small):
    """A tensor field by its bytes (its repr elides the middle), a factory by the model it
    gives; settings that are no dataclass are not described, so never cached."""
    import dataclasses

    from ipguard_fast.attacks import AttackContext
    from ipguard_fast.evaluation.suspect_cache import suspect_digest

    @dataclasses.dataclass(frozen=True)
    class Settings:
        weights: torch.Tensor

    class Opaque:
        def __repr__(self):
            return "Opaque()"

    context = AttackContext(owner, small, 3)
    a, b = torch.zeros(5000), torch.zeros(5000)
    b[2500] = 1
    assert repr(a) == repr(b)
    digest = lambda settings: suspect_digest(Variant("v", "f", "fine-tune", settings), context, "data")  # noqa: E731
    assert digest(Settings(a)) != digest(Settings(b)) and digest(Settings(a)) == digest(Settings(a.clone()))
    assert digest(Opaque()) is None
    small_mlp, wide_mlp = (Independent(lambda: DigitsMLP(hidden=32), 1e-3, 1),
                           Independent(lambda: DigitsMLP(hidden=64), 1e-3, 1))
    assert digest(small_mlp) != digest(wide_mlp)
