"""Refinement (selection/refine.py): it climbs its objective, keeps the owner's label, stays
in the box, and leaves every model and input as it was."""
import copy

import pytest
import torch
from cli_refusals import assert_refused_before_any_work
from conftest import requires_cuda
from torch.utils.data import TensorDataset

import ipguard_fast as ig
from ipguard_fast.attacks import prune_model
from ipguard_fast.models import DigitsMLP
from ipguard_fast.nn import seeded
from ipguard_fast.selection.refine import RefineConfig, _margins, duplicate_rows, refine_points, refined_pool
from ipguard_fast.train import train_classifier

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def models(owner, small):
    positives = [prune_model(copy.deepcopy(owner), 0.5),
                 train_classifier(copy.deepcopy(owner), small, epochs=1, seed=3)]
    negatives = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (7, 8)]
    return positives, negatives


@pytest.fixture(scope="module")
def pool(owner, small):
    return ig.extract_fingerprints(owner, 24, k=1.0, input_shape=SHAPE, init=small.tensors[0][:24],
                                   labels="predicted", seed=5, max_steps=300, progress=False)


def _objective(owner, x, j, positives, negatives, config, weight=1.0):
    with torch.no_grad():
        return _objective_with_grad(owner, x, j, positives, negatives, config, weight)


def test_refinement_climbs_its_objective_inside_the_box(owner, models, pool):
    positives, negatives = models
    config = RefineConfig(steps=40, batch_size=10)   # several chunks
    before = pool.images.clone()
    x = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0, config=config)
    assert torch.equal(pool.images, before)   # the input is not touched
    assert x.shape == before.shape and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    start = _objective(owner, before, pool.labels, positives, negatives, config)
    end = _objective(owner, x, pool.labels, positives, negatives, config)
    assert float(end.mean()) > float(start.mean()) + 0.5
    assert not torch.equal(x, before)


def test_refinement_leaves_every_model_as_it_was(owner, models, pool):
    positives, negatives = models
    negatives = [copy.deepcopy(m) for m in negatives]
    negatives[0].train()                                   # a mixed state, restored exactly
    for p in negatives[1].parameters():
        p.requires_grad_(False)
    every = [owner, *positives, *negatives]
    states = [copy.deepcopy(m.state_dict()) for m in every]
    flags = [[(s.training) for s in m.modules()] for m in every]
    grads = [[p.requires_grad for p in m.parameters()] for m in every]
    stored = [[None if p.grad is None else p.grad.clone() for p in m.parameters()] for m in every]
    refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=2.0,
                  config=RefineConfig(steps=3))
    for m, state, flag, grad, kept in zip(every, states, flags, grads, stored):
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), state.values()))
        assert [s.training for s in m.modules()] == flag
        assert [p.requires_grad for p in m.parameters()] == grad
        assert all((g is None and p.grad is None) or (g is not None and p.grad is not None and torch.equal(g, p.grad))
                   for p, g in zip(m.parameters(), kept))   # no gradient reaches a weight


def test_refined_pool_keeps_labels_and_records_the_owners_margin(owner, models, pool):
    positives, negatives = models
    top = torch.tensor([3, 0, 7])
    refined = refined_pool(owner, pool, top, positives, negatives, negative_weight=1.0,
                           config=RefineConfig(steps=5))
    assert torch.equal(refined.labels, pool.labels[top]) and torch.equal(refined.source_labels, pool.source_labels[top])
    with torch.no_grad():
        assert torch.allclose(refined.margins, _margins(owner, refined.images, refined.labels), atol=1e-5)


def test_zero_steps_return_a_copy(owner, models, pool):
    positives, negatives = models
    x = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0,
                      config=RefineConfig(steps=0))
    assert torch.equal(x, pool.images) and x.data_ptr() != pool.images.data_ptr()


def test_skipping_the_backward_of_sure_models_changes_no_point(owner, models, pool):
    # A model at its cap on every point of a chunk adds a zero gradient; refinement skips its
    # backward. Oracle: every model backpropagated every step, as the objective is written.
    positives, negatives = models
    config = RefineConfig(steps=15, cap=0.5, min_margin=0.5, batch_size=8)   # caps reached early
    backwards = []
    hooks = [m.register_full_backward_hook(lambda *_: backwards.append(1)) for m in (*positives, *negatives)]
    try:
        fast = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0, config=config)
    finally:
        for h in hooks:
            h.remove()
    assert torch.allclose(fast, _refined_by_hand(owner, pool, positives, negatives, config), atol=1e-6, rtol=0)
    assert 0 < len(backwards) < (len(positives) + len(negatives)) * config.steps * 3   # some were skipped


def _refined_by_hand(owner, pool, positives, negatives, config):
    """The refinement as its objective is written: Adam on each chunk, every model
    backpropagated at every step, pixels clamped to [0, 1] (the oracle of the tests)."""
    expected = pool.images.clone()
    for chunk in range(0, len(expected), config.batch_size):
        x = expected[chunk:chunk + config.batch_size].clone().requires_grad_(True)
        j = pool.labels[chunk:chunk + config.batch_size]
        optimizer = torch.optim.Adam([x], lr=config.lr)
        for _ in range(config.steps):
            optimizer.zero_grad()
            (-_objective_with_grad(owner, x, j, positives, negatives, config)).sum().backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        expected[chunk:chunk + config.batch_size] = x.detach()
    return expected


def _objective_with_grad(owner, x, j, positives, negatives, config, weight=1.0):
    negative_cap = config.cap if config.negative_cap is None else config.negative_cap
    keep = torch.stack([_margins(m, x, j) for m in positives]).clamp(max=config.cap).mean(0)
    share = torch.stack([_margins(m, x, j) for m in negatives]).clamp(min=-negative_cap).mean(0)
    return keep - weight * share - config.penalty * torch.relu(config.min_margin - _margins(owner, x, j))


def test_the_negatives_are_pushed_further_than_the_copies_by_default():
    # 6 logits against the copies' 3: the setting that accused the fewest innocents on the
    # three beds (benchmarks/results/three-beds-seeds-6-8-2026-12-06).
    assert (RefineConfig().cap, RefineConfig().negative_cap) == (3.0, 6.0)


def test_a_negative_cap_of_its_own_follows_its_definition(owner, models, pool):
    # Oracle: the objective written out, the negatives capped at negative_cap, the copies at cap.
    positives, negatives = models
    config = RefineConfig(steps=15, cap=0.1, negative_cap=8.0, min_margin=0.5, batch_size=8)
    got = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0, config=config)
    assert torch.allclose(got, _refined_by_hand(owner, pool, positives, negatives, config), atol=1e-6, rtol=0)
    same = dict(steps=15, cap=0.1, min_margin=0.5, batch_size=8)
    shared = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0,
                           config=RefineConfig(**same, negative_cap=None))   # None: the copies' cap
    assert torch.equal(shared, refine_points(owner, pool.images, pool.labels, positives, negatives,
                                             negative_weight=1.0, config=RefineConfig(**same, negative_cap=0.1)))
    assert not torch.allclose(got, shared, atol=1e-4)   # the negatives pushed further: other points

    def negatives_margin(x):
        with torch.no_grad():
            return float(torch.stack([_margins(m, x, pool.labels) for m in negatives]).clamp(min=-8.0).mean())
    assert negatives_margin(got) < negatives_margin(shared)


def test_focus_on_the_least_sure_kind_follows_its_definition(owner, models, pool):
    # Oracle: the objective written out, the positives' weights per point the softmin (at the
    # focus temperature) over the kinds of their capped mean margins at the previous step.
    positives, negatives = models
    positives = [*positives, copy.deepcopy(positives[0])]
    kinds = ["prune", "fine-tune", "prune"]
    config = RefineConfig(steps=12, batch_size=8, positive_focus=0.5)
    got = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=2.0, config=config,
                        positive_kinds=kinds)
    names = list(dict.fromkeys(kinds))
    of = torch.tensor([names.index(k) for k in kinds])
    expected = pool.images.clone()
    for chunk in range(0, len(expected), config.batch_size):
        x = expected[chunk:chunk + config.batch_size].clone().requires_grad_(True)
        j = pool.labels[chunk:chunk + config.batch_size]
        weights = torch.full((len(names), len(x)), 1.0 / len(names))
        optimizer = torch.optim.Adam([x], lr=config.lr)
        for _ in range(config.steps):
            optimizer.zero_grad()
            margins = torch.stack([_margins(m, x, j) for m in positives])
            per_reference = weights[of] / torch.bincount(of).float()[of, None]
            keep = (margins.clamp(max=config.cap) * per_reference).sum(0)
            share = torch.stack([_margins(m, x, j) for m in negatives]).clamp(min=-config.cap).mean(0)
            objective = keep - 2.0 * share - config.penalty * torch.relu(config.min_margin - _margins(owner, x, j))
            (-objective).sum().backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            kind_margins = torch.stack([margins.detach()[of == k].clamp(-config.cap, config.cap).mean(0)
                                        for k in range(len(names))])
            weights = torch.softmax(-kind_margins / config.positive_focus, dim=0)
        expected[chunk:chunk + config.batch_size] = x.detach()
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    plain = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=2.0,
                          config=RefineConfig(steps=12, batch_size=8), positive_kinds=kinds)
    assert not torch.allclose(got, plain, atol=1e-4)   # the focus moves the points elsewhere


def test_a_reference_fraction_follows_its_definition(owner, models, pool):
    # Oracle: each step, a seeded draw (per chunk) of ceil(f * count) positives and as many
    # negatives, each drawn model's term scaled by count / drawn; the owner always takes part.
    import math
    positives, negatives = models
    positives = [*positives, copy.deepcopy(positives[0])]
    negatives = [*negatives, copy.deepcopy(negatives[0])]
    config = RefineConfig(steps=10, batch_size=8, reference_fraction=0.5)
    got = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=2.0, config=config)
    expected = pool.images.clone()
    for chunk, start in enumerate(range(0, len(expected), config.batch_size)):
        x = expected[start:start + config.batch_size].clone().requires_grad_(True)
        j = pool.labels[start:start + config.batch_size]
        draws = torch.Generator().manual_seed(0x5EED + chunk)
        optimizer = torch.optim.Adam([x], lr=config.lr)
        for _ in range(config.steps):
            optimizer.zero_grad()
            picked = []
            for group in (positives, negatives):
                drawn = math.ceil(0.5 * len(group))
                picked.append([group[i] for i in torch.randperm(len(group), generator=draws)[:drawn].tolist()])
            keep = torch.stack([_margins(m, x, j) for m in picked[0]]).clamp(max=config.cap).mean(0)
            share = torch.stack([_margins(m, x, j) for m in picked[1]]).clamp(min=-config.cap).mean(0)
            objective = keep - 2.0 * share - config.penalty * torch.relu(config.min_margin - _margins(owner, x, j))
            (-objective).sum().backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        expected[start:start + config.batch_size] = x.detach()
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    every = dict(steps=10, batch_size=8)
    full = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=2.0,
                         config=RefineConfig(**every))
    assert torch.equal(full, refine_points(owner, pool.images, pool.labels, positives, negatives,
                                           negative_weight=2.0, config=RefineConfig(**every, reference_fraction=1.0)))
    assert not torch.allclose(got, full, atol=1e-4)   # half the models each step: other points


def test_duplicate_rows_marks_later_copies():
    x = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert duplicate_rows(x).tolist() == [False, False, True, True, False]


def test_bad_settings_name_the_argument(owner, models, pool):
    positives, negatives = models
    for change, needle in [(dict(steps=-1), "refine steps: "), (dict(steps=1.5), "refine steps: "),
                           (dict(lr=0.0), "refine lr: "), (dict(cap=float("nan")), "refine cap: "),
                           (dict(factor=0), "refine factor: "), (dict(batch_size=0), "refine batch_size: "),
                           (dict(min_margin=-1.0), "refine min_margin: "),
                           (dict(positive_focus=0.0), "refine positive_focus: "),
                           (dict(negative_cap=float("inf")), "refine negative_cap: "),
                           (dict(negative_cap=-1.0), "refine negative_cap: "),
                           (dict(reference_fraction=0.0), "refine reference_fraction: "),
                           (dict(reference_fraction=1.5), "refine reference_fraction: "),
                           (dict(reference_fraction=0.5, positive_focus=1.0), "refine reference_fraction: ")]:
        with pytest.raises(ValueError, match=f"^{needle}"):
            RefineConfig(**change)
    with pytest.raises(ValueError, match="^refine: needs at least one positive"):
        refine_points(owner, pool.images, pool.labels, [], negatives, negative_weight=1.0)
    with pytest.raises(ValueError, match="^refine: positive_kinds has 1 entries for 2 positives"):
        refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0,
                      positive_kinds=["FTAL"])
    with pytest.raises(ValueError, match="^refine: "):
        ig.protect(owner, TensorDataset(pool.images, pool.labels), n=4, refine="yes", progress=False,
                   references={"positives": positives, "negatives": negatives})


@requires_cuda
def test_refinement_on_cuda_matches_cpu(owner, models, pool):
    positives, negatives = models
    config = RefineConfig(steps=10)
    cpu = refine_points(owner, pool.images, pool.labels, positives, negatives, negative_weight=1.0, config=config)
    moved = [copy.deepcopy(m).cuda() for m in (owner, *positives, *negatives)]
    gpu = refine_points(moved[0], pool.images, pool.labels, moved[1:3], moved[3:], negative_weight=1.0, config=config)
    assert gpu.device == pool.images.device and torch.allclose(gpu, cpu, atol=1e-3)


@pytest.mark.parametrize("command", ["protect", "evaluate", "demo"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
@pytest.mark.parametrize("option", ["--positive-focus", "--negative-cap"])
def test_a_bad_refinement_setting_on_the_command_line_is_refused_before_any_work(command, value, option, tmp_path,
                                                                                 capsys, monkeypatch):
    assert_refused_before_any_work(command, [option, value], f"{option}: must be a positive number of logits",
                                   tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("command", ["protect", "evaluate", "demo"])
@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "nan"])
def test_a_bad_reference_fraction_on_the_command_line_is_refused_before_any_work(command, value, tmp_path, capsys,
                                                                                 monkeypatch):
    assert_refused_before_any_work(command, ["--reference-fraction", value],
                                   "--reference-fraction: must be a share in (0, 1]", tmp_path, capsys, monkeypatch)


def test_the_refinement_arguments_become_protects_refine():
    from types import SimpleNamespace

    from ipguard_fast.cli.refine_args import refine_arg

    assert refine_arg(SimpleNamespace(no_refine=False, positive_focus=None)) is True
    assert refine_arg(SimpleNamespace(no_refine=True, positive_focus=None)) is False
    assert refine_arg(SimpleNamespace(no_refine=False, positive_focus=2.0)) == RefineConfig(positive_focus=2.0)
    assert refine_arg(SimpleNamespace(no_refine=False, positive_focus=None, negative_cap=6.0)) == \
        RefineConfig(negative_cap=6.0)
    assert refine_arg(SimpleNamespace(no_refine=False, positive_focus=1.0, negative_cap=6.0)) == \
        RefineConfig(positive_focus=1.0, negative_cap=6.0)
    # A setting of the refinement beside --no-refine is refused, never silently ignored.
    for focus, cap, fraction, option in ((2.0, None, None, "--positive-focus"), (None, 6.0, None, "--negative-cap"),
                                         (None, None, 0.5, "--reference-fraction")):
        with pytest.raises(ValueError, match=f"^{option}: sets the refinement, which --no-refine turns off"):
            refine_arg(SimpleNamespace(no_refine=True, positive_focus=focus, negative_cap=cap,
                                       reference_fraction=fraction))
    assert refine_arg(SimpleNamespace(no_refine=False, positive_focus=None, negative_cap=None,
                                      reference_fraction=0.5)) == RefineConfig(reference_fraction=0.5)
    with pytest.raises(ValueError, match="^--reference-fraction: takes no --positive-focus"):
        refine_arg(SimpleNamespace(no_refine=False, positive_focus=1.0, negative_cap=None, reference_fraction=0.5))
