"""The search's settings and results as declared objects: ExtractConfig's switches (spares),
the Extraction that run_extraction returns, the one step factory, and the shared helpers."""
import pytest
import torch

from ipguard_fast import FingerprintSet
from ipguard_fast._validate import ArgumentError
from ipguard_fast.models import train_digits_model
from ipguard_fast.search import (ExtractConfig, Extraction, SearchStats, extract_fingerprints, owner_label_margin,
                                 run_extraction)
from ipguard_fast.search.distributed import SingleProcess, communicator
from ipguard_fast.search.step import StepSettings

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def owner():
    return train_digits_model("cnn", seed=0)


def config(**kw):
    return ExtractConfig(**{"n": 12, "k": 3.0, "input_shape": SHAPE, "batch_size": 8, "max_steps": 300, **kw})


def test_run_extraction_returns_the_set_and_the_statistics(owner):
    result = run_extraction(owner, config(), progress=False)
    assert isinstance(result, Extraction) and isinstance(result.stats, SearchStats)
    assert isinstance(result.fingerprints, FingerprintSet) and len(result.fingerprints) == 12
    assert result.fingerprints.meta["candidates_tried"] == result.stats.tried
    fps = extract_fingerprints(owner, 12, k=3.0, input_shape=SHAPE, batch_size=8, max_steps=300, progress=False)
    assert isinstance(fps, FingerprintSet) and not hasattr(fps, "stats")  # nothing bolted on
    assert torch.equal(fps.images, result.fingerprints.images)


def test_spares_change_the_schedule_not_the_fingerprints(owner):
    # Few steps: many candidates fail, so the failure rate passes the CPU's break-even and
    # spares go out ahead of the failures.
    with_spares = run_extraction(owner, config(n=16, max_steps=15, max_candidates=400), progress=False)
    without = run_extraction(owner, config(n=16, max_steps=15, max_candidates=400, spares=False), progress=False)
    assert with_spares.stats.exhausted > 16 and with_spares.stats.slot_steps != without.stats.slot_steps
    a, b = with_spares.fingerprints, without.fingerprints
    assert torch.equal(a.labels, b.labels) and torch.equal(a.source_labels, b.source_labels)
    assert torch.equal(a.steps, b.steps)
    # Other batch sizes along the way: convolutions may round differently, to float noise.
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-4)
    assert "spares" not in a.meta  # a speed option, like cuda_graph: not in the file
    key = dict(model_sha256="m", init="uniform")
    assert config(spares=False).resume_key(**key) == config().resume_key(**key)


def test_spares_ignore_the_old_environment_variable(owner, monkeypatch):
    monkeypatch.setenv("IPGUARD_FAST_NO_SPARES", "1")
    assert config().spares is True


@pytest.mark.parametrize("name, value", [("spares", "no"), ("spares", 1), ("channels_last", None),
                                         ("compile_model", "yes"), ("cuda_graph", 0)])
def test_switches_must_be_booleans(name, value):
    with pytest.raises(ArgumentError, match=f"^{name}: must be True or False") as error:
        config(**{name: value})
    assert error.value.argument == name


@pytest.mark.parametrize("kw, name", [(dict(num_classes=1), "num_classes"), (dict(lo=1.0, hi=0.5), "hi"),
                                      (dict(seed=1.5), "seed"), (dict(labels="x"), "labels"),
                                      (dict(result_rule="x"), "result_rule"), (dict(amp="int4"), "amp")])
def test_config_errors_name_the_argument(kw, name):
    with pytest.raises(ArgumentError) as error:
        config(**kw)
    assert error.value.argument == name and str(error.value).startswith(f"{name}: ")


def test_the_step_settings_come_from_the_config():
    fixed = config(lo=-1.0, hi=2.0, amp="bf16").on_device(torch.device("cpu"))
    settings = StepSettings.from_config(fixed)
    assert (settings.k, settings.lr, settings.max_steps, settings.lo, settings.hi) == (3.0, 0.01, 300, -1.0, 2.0)
    assert settings.amp_dtype == torch.bfloat16 and settings.cuda_graph is False


def test_owner_label_margin():
    logits = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.0, 5.0]], requires_grad=True)
    margin = owner_label_margin(logits, torch.tensor([1, 0]))
    assert margin.tolist() == [2.0, -2.0]
    margin.sum().backward()  # differentiable: selection's refinement climbs it
    assert logits.grad.tolist() == [[0.0, 1.0, -1.0], [1.0, 0.0, -1.0]]


def test_one_process_gathers_its_own_dict():
    comm = communicator()
    assert isinstance(comm, SingleProcess) and (comm.rank, comm.world) == (0, 1)
    assert comm.gather_dict({"a": 1, "b": 2}) == {"a": 1, "b": 2}


def test_seed_image_errors_name_init(owner):
    with pytest.raises(ArgumentError) as error:
        run_extraction(owner, config(), init=torch.rand(4, 1, 8, 4), progress=False)
    assert error.value.argument == "init"
