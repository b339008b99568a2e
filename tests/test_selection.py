"""Fingerprint selection and protect(): determinism, bit-identical points, metadata, errors,
the reference cache, and seed/name namespaces disjoint from the evaluation's. Tiny settings."""
import copy
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ipguard_fast as ig
from ipguard_fast.data import load_digits
from ipguard_fast.attacks import prune_model, quantize_int8
from ipguard_fast.evaluation.pipeline import check_disjoint
from ipguard_fast.attacks import evaluation_seed
from ipguard_fast.evaluation.suspects import (EVALUATION_SEED_LIMIT, FAMILIES, Suspect, negative_suspects,
                                              positive_suspects)
from ipguard_fast.fingerprints import FingerprintSet, state_dict_sha256
from ipguard_fast.models import DigitsCNN, DigitsMLP, train_digits_model
from ipguard_fast.nn import seeded
from ipguard_fast.selection import merge_pools, protect_seed, select_fingerprints, top_n
from ipguard_fast.selection.choice import NEGATIVE_WEIGHTS, threshold_between
from ipguard_fast.selection.pool import K_FACTORS, start_images
from ipguard_fast.selection import CacheLocation, ProtectConfig, ProtectReport, run_protect
from ipguard_fast.selection.references import RECIPE
from ipguard_fast.selection.significance import significant_threshold
from ipguard_fast.train import train_classifier

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def pool(owner, small):
    return ig.extract_fingerprints(owner, 30, k=2.0, input_shape=SHAPE, init=small.tensors[0][:30],
                                   labels="predicted", seed=5, max_steps=300, progress=False)


@pytest.fixture(scope="module")
def refs(owner, small):
    positives = [prune_model(copy.deepcopy(owner), 0.5), quantize_int8(copy.deepcopy(owner))]
    negatives = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (7, 8)]
    return positives, negatives


def test_selection_keeps_pool_points_bit_identical_and_is_deterministic(pool, refs):
    positives, negatives = refs
    a = select_fingerprints(pool, 10, positives=positives, negatives=negatives)
    b = select_fingerprints(pool, 10, positives=positives, negatives=negatives)
    index = torch.tensor(a.meta["selection"]["pool_indices"])
    assert len(a) == 10 and index.tolist() == sorted(set(index.tolist()))
    for name in ("images", "labels", "source_labels", "margins", "steps"):
        assert torch.equal(getattr(a, name), getattr(pool, name)[index])
        assert torch.equal(getattr(a, name), getattr(b, name))
    selection = a.meta["selection"]
    assert selection["selected"] is True and selection["pool_size"] == 30 and selection["score"] == "separation"
    assert len(selection["scores"]) == 10
    assert [r["sha256"] for r in selection["references"]["positives"]] == [state_dict_sha256(m) for m in positives]
    assert len(selection["references"]["negatives"]) == 2
    assert a.meta["model_sha256"] == pool.meta["model_sha256"]   # still the owner's fingerprints


def test_kept_points_are_the_top_scores(pool, refs):
    from ipguard_fast.selection import reference_outputs, separation_scores

    positives, negatives = refs
    fps = select_fingerprints(pool, 8, positives=positives, negatives=negatives, score="agreement")
    scores = separation_scores(reference_outputs(positives, pool), reference_outputs(negatives, pool), "agreement")
    kept = fps.meta["selection"]["pool_indices"]
    rest = [i for i in range(len(pool)) if i not in kept]
    assert min(scores[kept]) >= max(scores[rest])


def test_selection_can_spread_its_points_over_labels(pool, refs):
    positives, negatives = refs
    fps = select_fingerprints(pool, 8, positives=positives, negatives=negatives, label_share=1.0)
    present = len(pool.labels.unique())   # label_cap(8, 10, 1.0) == 1: one point per label while labels last
    assert len(fps) == 8 and len(fps.labels.unique()) == min(8, present)
    with pytest.raises(ValueError, match="^label_share: "):
        select_fingerprints(pool, 8, positives=positives, negatives=negatives, label_share=0.5)


def test_ties_go_to_the_lower_index():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.9, 0.1], dtype=torch.float64)
    assert top_n(scores, 3).tolist() == [0, 1, 4]
    assert top_n(scores, 4).tolist() == [0, 1, 2, 4]


def test_label_only_references_count_as_agreement(pool, refs, owner):
    """A label-only callable has no margin: under "separation" it scores like "agreement"."""
    positives, negatives = refs
    labels_only = [lambda x, m=m: m(x).argmax(1) for m in positives + negatives]
    soft = select_fingerprints(pool, 10, positives=labels_only[:2], negatives=labels_only[2:])
    hard = select_fingerprints(pool, 10, positives=positives, negatives=negatives, score="agreement")
    assert soft.meta["selection"]["pool_indices"] == hard.meta["selection"]["pool_indices"]


def test_selected_set_saves_and_loads_with_its_metadata(pool, refs, tmp_path):
    positives, negatives = refs
    fps = select_fingerprints(pool, 6, positives=positives, negatives=negatives)
    loaded = FingerprintSet.load(fps.save(tmp_path / "selected.safetensors"))
    assert loaded.meta == fps.meta and torch.equal(loaded.images, fps.images)
    assert loaded.meta["selection"]["pool_size"] == 30


def test_model_files_are_references(pool, refs, tmp_path):
    from ipguard_fast.io import save_torchscript

    positives, negatives = refs
    path = save_torchscript(positives[0], pool.images[:2], tmp_path / "copy.pt")
    fps = select_fingerprints(pool, 5, positives=[path], negatives=negatives)
    assert fps.meta["selection"]["references"]["positives"][0]["name"] == str(path)


@pytest.mark.parametrize("change,needle", [
    (dict(n=31), "n: "), (dict(n=0), "n: "), (dict(positives=[]), "positives: "), (dict(negatives=[]), "negatives: "),
    (dict(score="nope"), "score: "), (dict(pool="x"), "pool: "), (dict(negatives="model.pt"), "negatives: "),
])
def test_bad_input_names_the_argument(pool, refs, change, needle):
    positives, negatives = refs
    kwargs = dict(pool=pool, n=5, positives=positives, negatives=negatives)
    kwargs.update(change)
    with pytest.raises(ValueError) as info:
        select_fingerprints(kwargs.pop("pool"), kwargs.pop("n"), **kwargs)
    assert str(info.value).startswith(needle)


def test_reference_with_other_classes_and_pool_of_another_owner(pool, refs, owner):
    positives, negatives = refs
    seven = seeded(lambda: DigitsMLP(num_classes=7), 0)
    with pytest.raises(ValueError, match=r"^negatives\[1\]: returns 7 classes"):
        select_fingerprints(pool, 5, positives=positives, negatives=[negatives[0], seven])
    other = train_digits_model("mlp", seed=3, epochs=1)
    with pytest.raises(ValueError, match="^pool: was extracted from another model"):
        select_fingerprints(pool, 5, positives=positives, negatives=negatives, owner=other)
    assert len(select_fingerprints(pool, 5, positives=positives, negatives=negatives, owner=owner)) == 5


def test_merge_pools_records_each_points_k(owner, small):
    parts = [ig.extract_fingerprints(owner, 4, k=k, input_shape=SHAPE, init=small.tensors[0][:8], seed=s,
                                     labels="predicted", max_steps=300, progress=False)
             for s, k in ((1, 1.0), (2, 2.0))]
    merged = merge_pools(parts)
    assert len(merged) == 8 and merged.meta["k"] == [1.0, 2.0]
    assert merged.meta["pool"]["k"] == [1.0] * 4 + [2.0] * 4
    with pytest.raises(ValueError, match="^parts: "):
        merge_pools([])


# ---------------------------------------------------------------------- protect


def test_protect_with_given_references(owner, small, refs):
    positives, negatives = refs
    more = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (9, 10)]
    fps = ig.protect(owner, small, n=6, k=[1.0, 2.0], pool_factor=2, progress=False,
                     references={"positives": positives + [prune_model(copy.deepcopy(owner), 0.3)],
                                 "negatives": negatives + more}, threshold_significance=None)
    info = fps.meta["protect"]
    assert info["threshold"] == info["threshold_level"] and info["threshold_significance"] is None   # no margin
    assert len(fps) == 6 and info["k_grid"] == [1.0, 2.0] and info["references_built"] is False
    assert [c["name"] for c in info["candidates"]] == [
        "k=1, w=0.5", "k=1", "k=1, w=2", "k=2, w=0.5", "k=2", "k=2, w=2", "k=1+2, w=0.5", "k=1+2", "k=1+2, w=2"]
    assert info["negative_weight"] == fps.meta["selection"]["negative_weight"] in (0.5, 1.0, 2.0)
    assert info["chosen"] in {c["name"] for c in info["candidates"]}
    assert 0.0 < fps.meta["threshold"] <= 1.0 and fps.meta["threshold"] == info["threshold"]
    # Each given reference is left out in turn: one held-out rate per reference.
    held = info["held_out_rates"]
    assert (len(held["positives"]), len(held["negatives"])) == (3, 4) and fps.meta["selection"]["pool_size"] == 24


def test_protect_init_auto_chooses_among_start_kinds_without_mixing(owner, small, refs):
    positives, negatives = refs
    more = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (9, 10)]
    given = {"positives": positives + [prune_model(copy.deepcopy(owner), 0.3)], "negatives": negatives + more}
    auto = ig.protect(owner, small, n=6, k=[1.0, 2.0], pool_factor=2, init="auto", progress=False, references=given)
    data = ig.protect(owner, small, n=6, k=[1.0, 2.0], pool_factor=2, init="data", progress=False, references=given)
    info = auto.meta["protect"]
    names = [c["name"] for c in info["candidates"]]
    assert [name for name in names if ", w=" not in name] == [
        "data k=1", "data k=2", "data k=1+2", "uniform k=1", "uniform k=2", "uniform k=1+2"]
    assert len(names) == 18
    assert info["init"] == "auto" and info["init_chosen"] in ("data", "uniform")
    assert auto.meta["selection"]["pool_size"] == 48
    # The data half of the pool is the data-only pool, point for point (same seeds).
    parts = [p["init"] for p in auto.meta["selection"]["pool_parts"]]
    assert parts[:2] == [p["init"] for p in data.meta["selection"]["pool_parts"]] and parts[2:] == ["uniform"] * 2
    # The kept points all come from the chosen start kind.
    indices = torch.tensor(auto.meta["selection"]["pool_indices"])
    assert bool((indices < 24).all()) if info["init_chosen"] == "data" else bool((indices >= 24).all())
    if info["chosen"] == data.meta["protect"]["chosen"]:
        assert torch.equal(auto.images, data.images)


def test_protect_bad_input_names_the_argument(owner, small, refs):
    positives, negatives = refs
    given = {"positives": positives, "negatives": negatives}
    cases = [(dict(n=0), "n: "), (dict(k="big"), "k: "), (dict(pool_factor=0), "pool_factor: "),
             (dict(init="gauss"), "init: "), (dict(references={"positives": positives, "negatives": negatives[:1]}),
                                              "references: "),
             (dict(references={"positives": [], "negatives": negatives}), "references"),
             (dict(train_data=TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0))), "train_data: ")]
    for change, needle in cases:
        kwargs = dict(owner=owner, train_data=small, n=4, pool_factor=2, references=given, progress=False)
        kwargs.update(change)
        with pytest.raises(ValueError) as info:
            ig.protect(kwargs.pop("owner"), kwargs.pop("train_data"), **kwargs)
        assert str(info.value).startswith(needle), (change, str(info.value))
    with pytest.raises(ValueError, match="^owner: "):
        ig.protect("owner.pt", small)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_protect_refuses_an_owner_not_in_float32_by_name(owner, small, refs, dtype):
    # It was reported against train_data: "the owner fails on an image of shape [1, 8, 8]".
    positives, negatives = refs
    model = copy.deepcopy(owner).to(dtype)
    with pytest.raises(ValueError, match=f"^owner: has {dtype} weights"):
        ig.protect(model, small, n=4, pool_factor=2, references={"positives": positives, "negatives": negatives},
                   progress=False)


@pytest.fixture(scope="module")
def protected(owner, small, tmp_path_factory):
    """protect() building its own references (1 replica selects, 1 more is only measured) on 160 images."""
    cache = tmp_path_factory.mktemp("refs")
    config = ProtectConfig(n=8, pool_factor=2, replicas=1, validation_replicas=1, epoch_cap=2)   # negatives: 2 epochs
    result = run_protect(owner, DataLoader(small, batch_size=32), config, progress=False,
                         cache=CacheLocation(cache))
    return result, cache


def test_protect_builds_references_in_their_own_namespace(protected):
    result, _ = protected
    fps, refs = result.fingerprints, result.references
    per_replica = [k for k in RECIPE if k.per_replica]
    outputs = lambda kinds: sum(len(k.settings.epoch_list()) if k.attack == "independent" else 1  # noqa: E731
                                for k in kinds)
    # the threshold's own negatives are built for the validation replica only
    selecting = [k for k in per_replica if not k.threshold_only]
    assert len(refs) == outputs(selecting) + outputs(per_replica) + len(RECIPE) - len(per_replica)
    assert {r.split for r in refs} == {"select", "validate", "threshold"}
    assert {r.kind for r in refs if r.split == "threshold"} == {k.kind for k in RECIPE if k.threshold_only}
    assert all(r.name.startswith("protect/") for r in refs)
    assert all(r.model.training is False for r in refs)
    info = fps.meta["protect"]
    assert ProtectReport.from_meta(info) == result.report
    grid = len(K_FACTORS)   # the automatic grid: only all k merged, with every negative weight
    assert info["median_margin"] > 0 and len(info["k_grid"]) == grid
    assert len(info["candidates"]) == len(NEGATIVE_WEIGHTS)
    assert all(c["name"].startswith("k=" + "+".join(f"{k:g}" for k in info["k_grid"])) for c in info["candidates"])
    assert info["references_built"] is True and len(fps) == 8
    assert fps.meta["selection"]["pool_size"] == grid * 16
    assert sum(p["seed_images"] for p in fps.meta["selection"]["pool_parts"]) == grid * 16


def test_protect_refines_keeping_the_owners_label_and_thresholds_on_validation(protected, owner):
    result, _ = protected
    fps = result.fingerprints
    refined = fps.meta["selection"]["refined"]
    assert refined["steps"] > 0 and refined["candidates"] == min(3 * 8, fps.meta["selection"]["pool_size"])
    assert refined["threshold_rates"] == "validation references on the refined selection"
    assert fps.meta["selection"]["pool_indices"] == refined["pool_indices"]
    assert len(set(refined["pool_indices"])) == len(fps)
    assert all(0 <= i < fps.meta["selection"]["pool_size"] for i in refined["pool_indices"])
    with torch.no_grad():
        logits = owner(fps.images)
    assert torch.equal(logits.argmax(1), fps.labels)   # the owner's label, kept by its recorded margin
    own = logits.gather(1, fps.labels[:, None]).squeeze(1)
    runner_up = logits.scatter(1, fps.labels[:, None], float("-inf")).max(1).values
    assert torch.allclose(own - runner_up, fps.margins, atol=1e-4) and bool((fps.margins > 0).all())
    validation = [r for r in result.references if r.split in ("validate", "threshold")]
    held = fps.meta["protect"]["held_out_rates"]
    assert len(held["positives"]) + len(held["negatives"]) == len(validation)
    # the threshold's own negatives (trained to convergence) count in the threshold, above them all
    rates = fps.meta["selection"]["reference_rates_on_selection"]
    for r in result.references:
        if r.split == "threshold":
            assert any(abs(rates[r.name] - h) < 1e-3 for h in held["negatives"])
            assert fps.meta["threshold"] > rates[r.name]
    assert len(torch.unique(fps.images.reshape(len(fps), -1), dim=0)) == len(fps)
    # The stored threshold is the level plus the sampling noise of len(fps) points.
    info = fps.meta["protect"]
    # The level is the calibrated one, never below the held-out kinds' highest negative rate.
    chosen = next(c for c in info["candidates"] if c["name"] == info["chosen"])
    assert info["threshold_floor"] == pytest.approx(chosen["max_negative"])
    kinds = {r.kind for r in result.references if r.role == "negative" and r.split == "select"}
    source = info["threshold_floor_source"]
    assert source == "validation replica" or source.removesuffix(" (held out of the selection)") in kinds
    level = max(threshold_between(held["positives"], held["negatives"], len(fps)), info["threshold_floor"])
    assert info["threshold_level"] == pytest.approx(level, abs=1e-3) and info["threshold_significance"] == 0.05
    assert fps.meta["threshold"] == significant_threshold(info["threshold_level"], len(fps))[0] > level
    # whether a verdict at it can show a copy is recorded beside it (verdicts.conclusive_threshold)
    assert fps.meta["threshold_shown"] is significant_threshold(info["threshold_level"], len(fps))[1]


def test_protect_without_refinement_keeps_pool_points(owner, small, refs):
    positives, negatives = refs
    more = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (9, 10)]
    given = {"positives": positives + [prune_model(copy.deepcopy(owner), 0.3)], "negatives": negatives + more}
    plain = ig.protect(owner, small, n=6, k=2.0, pool_factor=2, progress=False, references=given, refine=False)
    assert plain.meta["selection"]["refined"] is None
    layout = plain.meta["protect"]["plan"]["unit_costs"]["channels_last"]   # the layout the plan timed faster
    pool = ig.extract_fingerprints(owner, 12, k=2.0, input_shape=SHAPE, init=start_images(
        small, 12, plain.meta["selection"]["pool_parts"][0]["seed"]), labels="predicted",
        seed=plain.meta["selection"]["pool_parts"][0]["seed"], progress=False, channels_last=layout)
    index = torch.tensor(plain.meta["selection"]["pool_indices"])
    assert torch.equal(plain.images, pool.images[index]) and torch.equal(plain.labels, pool.labels[index])
    refined = ig.protect(owner, small, n=6, k=2.0, pool_factor=2, progress=False, references=given)
    assert refined.meta["selection"]["refined"]["candidates"] == 12
    assert not torch.equal(refined.images, plain.images)


class _LabelsOnly(torch.nn.Module):
    """A module that answers with labels, not logits (no gradient to refine against)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).argmax(1)


def test_protect_refines_only_against_references_with_logits(owner, small, refs):
    positives, negatives = refs
    more = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (9, 10)]
    labels_only = _LabelsOnly(prune_model(copy.deepcopy(owner), 0.3))
    given = {"positives": positives + [labels_only], "negatives": negatives + more}
    fps = ig.protect(owner, small, n=6, k=2.0, pool_factor=2, progress=False, references=given)
    assert fps.meta["selection"]["refined"]["candidates"] == 12   # refined, the labels-only one left out
    only_labels = {"positives": [_LabelsOnly(p) for p in positives], "negatives": negatives + more}
    fps = ig.protect(owner, small, n=6, k=2.0, pool_factor=2, progress=False, references=only_labels)
    assert "module references of both roles" in fps.meta["selection"]["refined"]["skipped"]


def test_protect_seeds_and_names_never_meet_the_evaluations():
    names = [f"{kind.seed_name or kind.kind}/r{r}" for r in range(8) for kind in RECIPE] + ["pool", "margin"]
    seeds = {protect_seed(s, name) for s in (0, 1, 2**40) for name in names}
    assert min(seeds) >= EVALUATION_SEED_LIMIT and max(seeds) < 2**63
    evaluation = {evaluation_seed(s, name) for s in (0, 1, 7, 2**40, 2**70)
                  for name in list(FAMILIES) + [f"FTAL-lr{lr:g}-e3" for lr in (1e-4, 1e-3)]}
    assert max(evaluation) < EVALUATION_SEED_LIMIT
    with pytest.raises(ValueError, match="^seeds: "):
        negative_suspects(load_digits("test"), {"mlp": DigitsMLP}, seeds=[EVALUATION_SEED_LIMIT], epochs=1)


def test_no_evaluated_suspect_is_or_shares_weights_with_a_reference(protected, owner, small):
    result, _ = protected
    fps, references = result.fingerprints, result.references
    suspects = positive_suspects(owner, small, quick=True, small_factory=DigitsMLP)
    suspects += negative_suspects(small, {"cnn": DigitsCNN, "mlp": DigitsMLP}, epochs=1)
    reference_hashes = {state_dict_sha256(r.model) for r in references}
    assert not reference_hashes & {state_dict_sha256(s.model) for s in suspects}
    storage = lambda m: {t.untyped_storage().data_ptr() for t in list(m.parameters()) + list(m.buffers())}  # noqa
    shared = set().union(*(storage(r.model) for r in references))
    assert not any(storage(s.model) & shared for s in suspects)
    assert not any(s.name.startswith("protect/") for s in suspects)
    check_disjoint(suspects, fps, references)   # the evaluation's own guard agrees
    leaked = suspects + [Suspect("leak", "FTAL", "positive", references[0].model)]
    with pytest.raises(ValueError, match="^suspects: leak is one of the selection's reference models"):
        check_disjoint(leaked, fps, references)
    copied = suspects + [Suspect("copy", "FTAL", "positive", copy.deepcopy(references[3].model))]
    with pytest.raises(ValueError, match="^suspects: copy"):
        check_disjoint(copied, fps)


def test_protect_reuses_cached_references(protected, owner, small):
    result, cache = protected
    fps = result.fingerprints
    files = [p for p in cache.rglob("*.safetensors") if not p.name.startswith("pool-")]
    assert len(files) == len(result.references)
    assert len(list(cache.rglob("pool-*.safetensors"))) == len(fps.meta["protect"]["k_grid"])   # one per k
    again = run_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1, validation_replicas=1, epoch_cap=2),
                        progress=False, cache=CacheLocation(cache))
    assert all(r.cached for r in again.references)
    assert torch.equal(again.fingerprints.images, fps.images)
    assert again.fingerprints.meta["threshold"] == fps.meta["threshold"]


def test_evaluate_side_by_side(protected, owner, small):
    fps = protected[0].fingerprints
    suspects = positive_suspects(owner, small, quick=True, families=("FTLL", "prune"))
    suspects += negative_suspects(small, {"mlp": DigitsMLP}, seeds=(1, 2), epochs=1)
    result = ig.evaluate(owner, small, input_shape=SHAPE, suspects=suspects, ks=(2.0,), n=8, log=lambda *a: None,
                         methods=("ipguard", "selected"), selected=fps)
    assert [r.method for r in result.runs] == ["ipguard", "selected"]
    assert result.runs[1].label.startswith("selected (")
    assert result.runs[1].threshold == fps.meta["threshold"]
    from ipguard_fast.evaluation import summary_table

    assert "| selected (" in summary_table(result)
    json.dumps(result.to_dict())
    with pytest.raises(ValueError, match="^methods: "):
        ig.evaluate(owner, small, input_shape=SHAPE, suspects=suspects, methods=("nope",))


def test_a_protect_file_written_before_the_stages_refactor_still_loads():
    """The file format is pinned: a set that protect() wrote before ProtectReport existed
    (tests/data, 12 fingerprints of the 2-epoch digits owner, seed 3) loads, verifies, and
    its meta["protect"] reads as a ProtectReport."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "protect-0.x-digits-12.safetensors"
    fps = ig.FingerprintSet.load(path)
    report = ProtectReport.from_meta(fps.meta["protect"])
    assert len(fps) == 12 and report.threshold == fps.meta["threshold"] and report.seed == 3
    assert report.to_meta() == fps.meta["protect"]
    assert fps.meta["selection"]["selected"] is True and len(fps.meta["selection"]["pool_indices"]) == 12
    assert 0.0 <= ig.matching_rate(DigitsMLP(), fps) <= 1.0
