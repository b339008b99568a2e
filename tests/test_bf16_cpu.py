"""bf16 on a CPU that multiplies it natively (AMX): precision.native_bf16, training under a
CPU autocast, and protect's opt-in (plan_costs, `ipguard protect --bf16`): asked for, the
pool searches under bf16 autocast and, for a conv owner on a CPU with AMX, the references
train at bf16; float32 otherwise and by default. AMX is simulated where the machine lacks
it: bf16 autocast runs on any CPU, slower."""
import copy

import pytest
import torch

from ipguard_fast.models import DigitsCNN, DigitsMLP
from ipguard_fast.nn import seeded
from ipguard_fast.precision import chosen_precision, native_bf16, training_precision
from ipguard_fast.selection import ProtectConfig, plan_protect
from ipguard_fast.train import train_classifier


@pytest.fixture(autouse=True)
def _short_pilot(monkeypatch):
    """These tests ask which precision and layout the plan picks, not how long a point takes:
    a pilot of 32 points, not 256 (bf16 autocast is emulated, slowly, on a CPU without AMX;
    the three plans of the protect test took 72 s)."""
    from ipguard_fast.selection import plan_costs

    monkeypatch.setattr(plan_costs, "_PILOT_POINTS", 32)


def _amx(monkeypatch, present: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: present)
    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)


def test_native_bf16_on_cpu_follows_the_amx_probe_and_is_no_when_torch_cannot_say(monkeypatch):
    _amx(monkeypatch, True)
    assert native_bf16(torch.device("cpu"))
    _amx(monkeypatch, False)
    assert not native_bf16(torch.device("cpu"))
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")   # a torch without the private probe
    assert not native_bf16(torch.device("cpu"))
    assert not native_bf16(torch.device("meta"))


@pytest.mark.parametrize("present", [True, False])
def test_bf16_training_on_cpu_autocasts_only_where_native(monkeypatch, present):
    _amx(monkeypatch, present)
    model = seeded(DigitsCNN, 0)
    with chosen_precision("bf16"):
        precision = training_precision(model, torch.device("cpu"))
    assert precision.enabled == present and precision.converted == present
    with precision.autocast():
        assert torch.is_autocast_enabled("cpu") == present
        if present:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    precision.restore(model)
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_bf16_cpu_training_leaves_a_float32_contiguous_model_close_to_float32s(monkeypatch):
    _amx(monkeypatch, True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=gen)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (256,), generator=gen))
    trained = {}
    for name in ("fp32", "bf16"):
        with chosen_precision(name):
            trained[name] = train_classifier(seeded(DigitsCNN, 0), data, epochs=2, seed=0)
        assert all(p.is_contiguous() and p.dtype == torch.float32 for p in trained[name].parameters())
    differs = [not torch.equal(a, b) for a, b in zip(trained["fp32"].parameters(), trained["bf16"].parameters())]
    assert any(differs)   # it did train at another precision
    for a, b in zip(trained["fp32"].parameters(), trained["bf16"].parameters()):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)   # the same recipe, rounded otherwise


def test_protect_trains_and_searches_at_bf16_on_an_amx_cpu_only_when_asked(owner, small, monkeypatch):
    _amx(monkeypatch, True)
    default = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1))
    assert default.costs.precision == "fp32-cl" and default.costs.amp is None and "amp" not in default.config.search
    assert default.costs.to_meta()["amp"] is None
    plan = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1, search={"amp": "bf16"}))
    assert plan.costs.precision == "bf16" and plan.costs.amp == "bf16" and plan.costs.channels_last
    assert plan.config.search["amp"] == "bf16" and plan.config.search["channels_last"] is True
    assert plan.costs.to_meta()["amp"] == "bf16"
    # Without the layout (the caller's), the references stay float32: the rule is for conv owners run channels_last.
    flat = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1,
                                                   search={"amp": "bf16", "channels_last": False}))
    assert flat.costs.precision == "fp32" and flat.costs.amp == "bf16"


def test_asked_for_bf16_an_mlp_owner_or_a_cpu_without_amx_trains_at_float32(owner, small, monkeypatch):
    _amx(monkeypatch, True)
    mlp = seeded(DigitsMLP, 0)
    costs = plan_protect(mlp, small, ProtectConfig(n=8, pool_factor=2, replicas=1, search={"amp": "bf16"})).costs
    assert costs.precision == "fp32" and costs.amp == "bf16"   # bf16's casts cost a small MLP's training more than they save
    _amx(monkeypatch, False)
    plan = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1, search={"amp": "bf16"}))
    assert plan.costs.precision == "fp32-cl" and plan.costs.amp == "bf16"   # emulated bf16 would train slower


def test_a_bf16_pool_accepts_its_points_at_float32(owner, small, monkeypatch):
    """The search steps under autocast but accepts at float32: every point's owner label and
    margin are what a float32 suspect sees."""
    from ipguard_fast.search import extract_fingerprints

    _amx(monkeypatch, True)
    model = copy.deepcopy(owner)
    fps = extract_fingerprints(model, 32, k=2.0, input_shape=(1, 8, 8), init=small.tensors[0][:32].clone(),
                               labels="predicted", amp="bf16", channels_last=True, seed=0, progress=False)
    with torch.no_grad():
        logits = model(fps.images)
    top2 = logits.topk(2, dim=1)
    assert torch.equal(top2.indices[:, 0], fps.labels)
    assert bool(((top2.values[:, 0] - top2.values[:, 1]) >= 2.0 - 1e-4).all())


def test_cli_bf16_asks_for_it_and_the_plan_says_so(owner, tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from ipguard_fast.cli import main

    _amx(monkeypatch, True)
    monkeypatch.chdir(tmp_path)
    save_file(owner.state_dict(), tmp_path / "owner.safetensors")
    args = ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--weights", "owner.safetensors", "--data",
            "digits", "-n", "8", "--pool-factor", "2", "--replicas", "1", "--dry-run", "--out", "fps.safetensors"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "references train at fp32-cl" in printed and "autocast" not in printed, printed
    assert main(args + ["--bf16"]) == 0
    printed = capsys.readouterr().out
    assert "references train at bf16" in printed and "the pool under bf16 autocast" in printed, printed
