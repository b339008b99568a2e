"""A hostile TorchScript file never touches the verifier's machine: refused before it loads or runs.

TorchScript runs no Python, but it runs any operator its code names -- ``aten::from_file`` maps
a file writably, so a suspect could write a ``.pth`` into site-packages during ``verify`` --
and ``torch.jit.load`` runs a scripted ``__setstate__`` while loading. Each module here does
one such thing; every entry point must refuse it with no file created or changed.
"""
from typing import Tuple

import pytest
import torch
from conftest import half_matching_fingerprints
from hostile_model_files import SHAPE, every_command_refuses, snapshot
from torch import nn

import ipguard_fast as ig
from ipguard_fast.io import ModelLoadError, load_model, load_suspect



class FileWriter(nn.Module):
    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        mapped = torch.from_file(self.victim, shared=True, size=8, dtype=torch.uint8)
        mapped.copy_(torch.full([8], 65, dtype=torch.uint8))
        return self.lin(x.flatten(1)) + mapped.sum() * 0


def touch(victim: str) -> torch.Tensor:
    mapped = torch.from_file(victim, shared=True, size=8, dtype=torch.uint8)
    return mapped.fill_(66).sum()


class CallsAHelper(FileWriter):
    def forward(self, x):
        return self.lin(x.flatten(1)) + touch(self.victim) * 0


class WritesOnLoad(nn.Module):
    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim

    def forward(self, x):
        return x.flatten(1)[:, :10]

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.victim, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        mapped = torch.from_file(state[0], shared=True, size=8, dtype=torch.uint8)
        mapped.copy_(torch.full([8], 67, dtype=torch.uint8))
        self.victim = state[0] + str(int(mapped.sum().item()))
        self.training = state[1]


class Prints(nn.Module):
    def __init__(self, victim: str):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        print("the suspect speaks")
        return self.lin(x.flatten(1))


class WritesItsInput(Prints):
    def forward(self, x):
        x.mul_(0)
        return self.lin(x.flatten(1))


class WritesItsBuffer(Prints):
    def __init__(self, victim: str):
        super().__init__(victim)
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, x):
        self.seen.add_(1)
        return self.lin(x.flatten(1)) + self.seen * 0


class KeepsCount(Prints):
    def __init__(self, victim: str):
        super().__init__(victim)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x.flatten(1))


def _count_the_call(mod: nn.Module, inputs: Tuple[torch.Tensor]) -> None:
    mod.seen.add_(1)


def _keep_the_output(mod: nn.Module, inputs: Tuple[torch.Tensor], output: torch.Tensor) -> None:
    mod.last = output


class HookCountsCalls(WritesItsBuffer):
    """The top-level module's own hook runs outside forward's graph on every call: a copy that
    answers honestly on the first query only (forward reads the count the hook keeps)."""

    def __init__(self, victim: str):
        super().__init__(victim)
        self.register_forward_pre_hook(_count_the_call)

    def forward(self, x):
        logits = self.lin(x.flatten(1))
        return torch.where(self.seen > 1, logits.roll(1, 1), logits)


class HookKeepsOutput(Prints):
    def __init__(self, victim: str):
        super().__init__(victim)
        self.last = torch.zeros(1)
        self.register_forward_hook(_keep_the_output)

    def forward(self, x):
        return self.lin(x.flatten(1))


class ViewsPastItsStorage(Prints):
    """_reshape_alias takes sizes and strides unchecked: a view past its 16 bytes reads (and
    with fill_ writes) the worker's heap."""

    def forward(self, x):
        window = torch.ops.aten._reshape_alias(torch.zeros(4), [262144], [1])
        return self.lin(x.flatten(1)) + (window != 0).sum() * 0


class CountsInRunningStatistics(Prints):
    """batch_norm in training mode updates its running mean in place, a write its schema does not
    declare: a buffer used so counts the calls (honest on the first batch only)."""

    def __init__(self, victim: str):
        super().__init__(victim)
        self.register_buffer("count", torch.zeros(1))
        self.register_buffer("var", torch.ones(1))

    def forward(self, x):
        y = torch.batch_norm(torch.ones(2, 1), None, None, self.count, self.var, True, 0.5, 1e-5, False)
        logits = self.lin(x.flatten(1))
        return torch.where(self.count > 0.6, logits.roll(1, 1), logits) + y.sum() * 0


class ReadsPastItsBias(Prints):
    """native_batch_norm indexes its statistics by the input's channel count, their sizes unchecked."""

    def forward(self, x):
        past = torch.native_batch_norm(torch.zeros(1, 64, 1, 1), None, torch.zeros(1), None, None, True, 0.1, 0.0)[0]
        return self.lin(x.flatten(1)) + (past != 0).sum() * 0


HOSTILE = {
    "running statistics as a counter": (CountsInRunningStatistics, "aten::batch_norm in training mode"),
    "statistics read past their storage": (ReadsPastItsBias, "aten::native_batch_norm"),
    "write into its buffer from a hook": (HookCountsCalls, "hook '_count_the_call' (inlined) calls aten::add_"),
    "attribute set in a hook": (HookKeepsOutput, "sets the model's attribute 'last'"),
    "view past its storage": (ViewsPastItsStorage, "aten::_reshape_alias"),
    "from_file in forward": (FileWriter, "aten::from_file"),
    "from_file in a helper": (CallsAHelper, "aten::from_file"),
    "from_file in __setstate__": (WritesOnLoad, "__setstate__"),
    "print": (Prints, "prim::Print"),
    "write into its input": (WritesItsInput, "writes into 'self'"),
    "write into its buffer": (WritesItsBuffer, "writes into 'self'"),
    "attribute set": (KeepsCount, "sets the model's attribute 'calls'"),
}


@pytest.fixture(params=sorted(HOSTILE))
def hostile(request, tmp_path):
    cls, reason = HOSTILE[request.param]
    victim = tmp_path / "victim.pth"
    path = tmp_path / "suspect.pt"
    torch.jit.save(torch.jit.script(cls(str(victim))), str(path))
    return path, victim, reason


def test_torch_itself_writes_the_file(tmp_path):
    """Why the checks exist: plain torch.jit.load runs __setstate__ on load, and from_file when called."""
    victim = tmp_path / "victim.pth"
    for cls, when in ((WritesOnLoad, "load"), (FileWriter, "call")):
        torch.jit.save(torch.jit.script(cls(str(victim))), str(tmp_path / "s.pt"))
        loaded = torch.jit.load(str(tmp_path / "s.pt"))
        if when == "call":
            loaded(torch.rand(2, *SHAPE))
        assert victim.exists(), when
        victim.unlink()


def test_every_loader_refuses_before_anything_runs(hostile):
    path, victim, reason = hostile
    before = snapshot(path.parent)
    fps = half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10)
    for load in (load_model, load_suspect, lambda p: ig.verify(p, fps)):
        with pytest.raises(ModelLoadError, match="refused") as info:
            load(path)
        assert reason in str(info.value) and str(path) in str(info.value)
    assert snapshot(path.parent) == before and not victim.exists()


def test_every_command_refuses_without_touching_files(hostile, tmp_path, capsys):
    path, victim, _ = hostile
    errors = every_command_refuses(path, tmp_path, capsys)
    assert all("refused" in err for err in errors[:4]) and not victim.exists()


def test_a_hook_in_a_member_named_in_another_case_is_found(tmp_path):
    """torch finds code/__torch__.py also when the archive spells it CODE/__TORCH__.PY."""
    import zipfile

    victim = tmp_path / "victim.pth"
    torch.jit.save(torch.jit.script(WritesOnLoad(str(victim))), str(tmp_path / "s.pt"))
    with zipfile.ZipFile(tmp_path / "s.pt") as source, zipfile.ZipFile(tmp_path / "upper.pt", "w") as target:
        for info in source.infolist():
            root, member = info.filename.split("/", 1)
            target.writestr(f"{root}/{member.upper() if member.endswith('.py') else member}", source.read(info))
    with pytest.raises(ModelLoadError, match="__setstate__"):
        load_model(tmp_path / "upper.pt")
    assert not victim.exists()


# Operators whose schema declares no alias, yet which hand back their input itself or a view of
# it: an in-place op on their result writes into the caller's images or the model's own buffer.
class TypeAsThenWrites(Prints):
    def forward(self, x):
        return self.lin(x.type_as(x).mul_(0).flatten(1))


class DropoutThenWrites(Prints):
    def forward(self, x):
        return self.lin(torch.dropout(x, 0.5, False).mul_(0).flatten(1))


class FeatureDropoutThenWrites(Prints):
    def forward(self, x):
        return self.lin(torch.feature_dropout(x, 0.5, False).mul_(0).flatten(1))


class UnsafeViewThenWrites(Prints):
    def forward(self, x):
        return self.lin(torch.ops.aten._unsafe_view(x, [x.shape[0], 64]).mul_(0))


class BroadcastThenWrites(Prints):
    def forward(self, x):
        return self.lin(torch.broadcast_tensors([x, x])[0].mul_(0).flatten(1))


class EinsumThenWrites(Prints):
    def forward(self, x):
        return self.lin(torch.einsum("bchw->bchw", [x]).mul_(0).flatten(1))


class RemembersThroughTypeAs(WritesItsBuffer):
    def forward(self, x):
        return self.lin(x.flatten(1)) + self.seen.type_as(self.seen).add_(1)


class WritesWhatItMadeThroughThem(Prints):
    """Honest: the same operators on what the model computed itself, then in-place writes."""

    def forward(self, x):
        y = torch.einsum("bchw->bchw", [torch.dropout((x * 2).type_as(x), 0.5, False)])
        y = torch.broadcast_tensors([y, y])[0].relu_()
        return self.lin(torch.ops.aten._unsafe_view(y, [x.shape[0], 64]).add_(1))


@pytest.mark.parametrize("cls", [TypeAsThenWrites, DropoutThenWrites, FeatureDropoutThenWrites,
                                 UnsafeViewThenWrites, BroadcastThenWrites, EinsumThenWrites,
                                 RemembersThroughTypeAs])
def test_a_write_through_an_alias_its_schema_does_not_declare_is_refused(cls, tmp_path):
    path = tmp_path / "suspect.pt"
    torch.jit.save(torch.jit.script(cls("").eval()), str(path))
    x = torch.rand(3, *SHAPE)
    given = x.clone()
    with pytest.raises(ModelLoadError, match="writes into 'self'"):
        load_suspect(path)(given)
    assert torch.equal(given, x)


def test_writes_into_what_the_model_made_through_those_operators_still_load(tmp_path):
    path = tmp_path / "honest.pt"
    honest = torch.jit.script(WritesWhatItMadeThroughThem("").eval())
    torch.jit.save(honest, str(path))
    x = torch.rand(3, *SHAPE)
    given = x.clone()
    assert torch.equal(load_suspect(path)(given), honest(x)) and torch.equal(given, x)


def _scale_the_input(mod: nn.Module, inputs: Tuple[torch.Tensor]) -> Tuple[torch.Tensor]:
    return (inputs[0] * 2,)


class HookScalesInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.register_forward_pre_hook(_scale_the_input)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_a_hook_that_writes_nothing_still_loads(tmp_path):
    """The hooks' check refuses writes, not hooks: one that returns new inputs loads and runs."""
    torch.manual_seed(0)
    model = HookScalesInput()
    path = tmp_path / "hooked.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    images = torch.rand(3, *SHAPE)
    assert torch.equal(load_model(path)(images), model(images))


class CountsWithAFlagOfItsOwn(nn.Module):
    """The same counter with the training flag computed when it runs: no graph check can tell it
    is true, so the verifier checks after each call that the suspect's tensors are unchanged."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.register_buffer("count", torch.zeros(1))
        self.register_buffer("var", torch.ones(1))

    def forward(self, x):
        y = torch.batch_norm(torch.ones(2, 1), None, None, self.count, self.var, bool(x.sum() > -1e9), 0.5, 1e-5,
                             False)
        logits = self.lin(x.flatten(1))
        return torch.where(self.count > 0.6, logits.roll(1, 1), logits) + y.sum() * 0


def test_a_suspect_that_changes_its_own_tensors_is_refused_and_put_back(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "counts.pt"
    torch.jit.save(torch.jit.script(CountsWithAFlagOfItsOwn()), str(path))
    fps = half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 20)
    for isolate in (True, False):
        with pytest.raises(ValueError, match="^suspect: changed its own tensor 'count' while answering"):
            ig.verify(path, fps, threshold=0.5, batch_size=5, isolate=isolate)
    module = load_model(path)
    with pytest.raises(ValueError, match="changed its own tensor 'count'"):
        ig.verify(module, fps, threshold=0.5)
    assert float(module.count) == 0.0   # the caller's object as it was


class CountsThenFails(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.register_buffer("count", torch.zeros(1))

    def forward(self, x):
        self.count.add_(1)
        raise RuntimeError("gives up after counting")


def test_a_suspect_that_changes_its_tensors_and_fails_is_put_back_too():
    """The caller's model is left as it was found, also when the call fails."""
    module = CountsThenFails()
    fps = half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 20)
    with pytest.raises(ValueError, match="^suspect: fails on images"):
        ig.verify(module, fps, threshold=0.5)
    assert float(module.count) == 0.0
