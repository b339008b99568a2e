"""The operator allowlist: every model the package itself exports loads, and every graph that
touches files, prints, reseeds or writes into its inputs or weights is refused before it runs."""
import copy
import json
import zipfile

import pytest
import torch
from torch import nn

from ipguard_fast.attacks import HalfPrecision
from ipguard_fast.io import ModelLoadError, export_model, load_model
from ipguard_fast.io.formats.pt2_graph import check_program
from ipguard_fast.io.exported_graphs import check_exported_program
from ipguard_fast.io.operators import ATEN_OPERATORS, PRIM_OPERATORS, SYMBOLIC_TARGETS, exported_operator, refusal
from ipguard_fast.models import DigitsCNN, DigitsMLP, GenericCNN, GenericMLP, build_model
from ipguard_fast.modules import device_and_dtype
from ipguard_fast.nn import Normalized

DIGITS, CIFAR = (1, 8, 8), (3, 32, 32)


def own_models():
    torch.manual_seed(0)
    return {
        "digits_cnn": (DigitsCNN(10), DIGITS),
        "digits_mlp": (DigitsMLP(10), DIGITS),
        "generic_mlp": (GenericMLP(CIFAR, 10), CIFAR),
        "generic_cnn": (GenericCNN(CIFAR, 10), CIFAR),
        "resnet20": (build_model("resnet20", 10, CIFAR, seed=0), CIFAR),
        "normalized": (Normalized(DigitsCNN(10), [0.5], [0.25]), DIGITS),
        "half": (HalfPrecision(DigitsCNN(10)), DIGITS),
    }


def _script_operators(module):
    found = set()
    for sub in module.modules():
        for name in sub._c._method_names():
            stack = [sub._c._get_method(name).graph]
            while stack:
                block = stack.pop()
                for node in block.nodes():
                    found.add(node.kind())
                    stack.extend(node.blocks())
    return found


def _exported_operators(path):
    with zipfile.ZipFile(path) as archive:
        graph = next(json.loads(archive.read(n)) for n in archive.namelist() if n.endswith("models/model.json"))
    return {exported_operator(n["target"]) or n["target"] for n in graph["graph_module"]["graph"]["nodes"]}


def test_every_operator_of_the_packages_own_models_is_allowed(tmp_path):
    used = set()
    for name, (model, shape) in own_models().items():
        model.eval()
        # in the model's dtype, as exporters trace it (a HalfPrecision .pt2 takes float16 images)
        images = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1)).to(device_and_dtype(model)[1])
        expected = model(images).detach()
        for suffix, form in ((".pt2", "pt2"), (".pt", "torchscript")):
            path = export_model(model, shape, tmp_path / f"{name}{suffix}", format=form)
            loaded = load_model(path)
            torch.testing.assert_close(loaded(images), expected, atol=1e-3, rtol=1e-3)
            used |= _exported_operators(path) if form == "pt2" else _script_operators(torch.jit.load(path))
        retraced = export_model(load_model(tmp_path / f"{name}.pt2"), shape, tmp_path / f"{name}-re.pt",
                                format="torchscript")  # a .pt2 model traced to TorchScript
        load_model(retraced)
        used |= _script_operators(torch.jit.load(retraced))
    assert {"aten::conv2d", "aten::_convolution", "aten::linear", "aten::relu_", "aten::batch_norm"} <= used
    assert [op for op in used if op not in SYMBOLIC_TARGETS and refusal(op) is not None] == []


@pytest.mark.parametrize("operator", [
    "aten::from_file", "aten::save", "aten::load", "aten::_load_for_mobile", "aten::manual_seed", "aten::seed",
    "aten::set_rng_state", "aten::_set_rng_state", "prim::Print", "aten::warn", "aten::set_", "aten::resize_",
    "aten::empty", "aten::as_strided", "profiler::_record_function_enter_new", "prim::PythonOp", "prim::Enter",
    "ipguard::boundary_adam_step_", "higher_order::cond", "myns::anything", "aten::_pin_memory",
    "aten::_reshape_alias",   # sizes and strides unchecked against the storage: reads and writes past it
])
def test_unsafe_or_unknown_operators_are_refused(operator):
    assert refusal(operator) is not None


def test_the_allowlist_names_nothing_that_touches_the_world():
    words = ("file", "save", "load", "seed", "rng", "print", "warn", "record", "profil", "socket", "pipe",
             "storage", "empty", "resize", "strided")
    names = ATEN_OPERATORS | PRIM_OPERATORS
    assert [name for name in names if any(w in name.lower() for w in words) or name.startswith("set_")] == []


# --- hostile graphs -------------------------------------------------------------------------------

class Bait(nn.Module):
    """A graph with a factory call and an in-place fill, which the tests turn into aten.from_file."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        scratch = torch.ones(8, dtype=torch.uint8)
        scratch.fill_(65)
        return self.lin(x.flatten(1)) + scratch.sum() * 0


def _edit_program(source, target, edit):
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    key = next(name for name in members if name.endswith("models/model.json"))
    program = json.loads(members[key])
    edit(program["graph_module"]["graph"]["nodes"])
    members[key] = json.dumps(program).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _from_file(victim):
    def edit(nodes):
        node = next(n for n in nodes if n["target"] == "torch.ops.aten.ones.default")
        dtype = node["inputs"][1]["arg"]
        node["target"] = "torch.ops.aten.from_file.default"
        node["inputs"] = [{"name": "filename", "arg": {"as_string": str(victim)}, "kind": 1},
                          {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                          {"name": "size", "arg": {"as_int": 8}, "kind": 1},
                          {"name": "dtype", "arg": dtype, "kind": 2}]
    return edit


def _fill_input(nodes):
    fill = next(n for n in nodes if n["target"] == "torch.ops.aten.fill_.Scalar")
    fill["inputs"][0]["arg"] = {"as_tensor": {"name": "x"}}


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bait(tmp_path_factory):
    torch.manual_seed(0)
    return export_model(Bait().eval(), DIGITS, tmp_path_factory.mktemp("bait") / "bait.pt2", format="pt2")


def test_torch_itself_runs_a_from_file_graph(bait, tmp_path):
    """Why operators are checked: the crafted graph passes torch's own loading and writes the file when run."""
    victim = tmp_path / "victim.pth"
    path = _edit_program(bait, tmp_path / "evil.pt2", _from_file(victim))
    torch.export.load(str(path)).module()(torch.rand(2, *DIGITS))
    assert victim.read_bytes() == b"A" * 8


@pytest.mark.parametrize("variant, reason", [("from_file", "aten::from_file"), ("fill input", "writes into 'self'")])
def test_a_hostile_exported_graph_is_refused_before_it_runs(bait, tmp_path, variant, reason):
    victim = tmp_path / "victim.pth"
    edit = _from_file(victim) if variant == "from_file" else _fill_input
    path = _edit_program(bait, tmp_path / "evil.pt2", edit)
    before = snapshot(tmp_path)
    with pytest.raises(ModelLoadError, match="refused") as info:
        load_model(path)
    assert reason in str(info.value) and str(path) in str(info.value)
    assert snapshot(tmp_path) == before and not victim.exists()


def test_the_deserialised_program_is_checked_too(bait):
    """A second check on what torch built, apart from the JSON: every call of every graph."""
    program = torch.export.load(str(bait))
    check_exported_program(program, "bait.pt2")
    evil = copy.deepcopy(program)
    node = next(n for n in evil.graph.nodes if n.target is torch.ops.aten.ones.default)
    node.target = torch.ops.aten.from_file.default
    with pytest.raises(ModelLoadError, match="aten::from_file"):
        check_exported_program(evil, "bait.pt2")


class WritesItsInput(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x.flatten(1)[:, :10]


def test_an_export_that_mutates_its_input_is_refused(tmp_path):
    path = export_model(WritesItsInput(), DIGITS, tmp_path / "mutates.pt2", format="pt2")
    with pytest.raises(ModelLoadError, match="writes into 'self'|user_input_mutation"):
        load_model(path)


@pytest.mark.parametrize("kind", ["user_input_mutation", "buffer_mutation", "parameter_mutation", "token"])
def test_a_signature_that_writes_back_or_keeps_state_is_refused(bait, kind):
    """The loaded module would copy such outputs back into the caller's tensors or its own state."""
    with zipfile.ZipFile(bait) as archive:
        program = next(json.loads(archive.read(n)) for n in archive.namelist() if n.endswith("models/model.json"))
    check_program(program, "models/model.json", "bait.pt2")
    program["graph_module"]["signature"]["output_specs"].append({kind: {}})
    with pytest.raises(ModelLoadError, match=f"bait.pt2: refused: models/model.json declares {kind}"):
        check_program(program, "models/model.json", "bait.pt2")


class BroadcastsAScratch(nn.Module):
    """A scratch tensor the graph made, through broadcast_tensors, then written: allowed as made,
    and the edit below hands broadcast_tensors the model's buffer instead."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, x):
        view = torch.ops.aten.broadcast_tensors.default([torch.zeros(1)])[0]
        view.add_(1)
        logits = self.lin(x.flatten(1))
        return torch.where(self.seen > 1, logits.roll(1, 1), logits) + view.sum() * 0


def test_a_list_of_the_models_own_tensors_is_not_the_graphs(tmp_path):
    """A list argument counted as the graph's own whatever it held: broadcast_tensors of the
    model's buffer, then add_ into the view, counted the calls (PIRATED at batch 64, not at 10)."""
    path = export_model(BroadcastsAScratch().eval(), DIGITS, tmp_path / "scratch.pt2", format="pt2")
    load_model(path)   # its own scratch: loads

    def to_the_buffer(nodes):
        node = next(n for n in nodes if n["target"] == "torch.ops.aten.broadcast_tensors.default")
        node["inputs"][0]["arg"]["as_tensors"] = [{"name": "b_seen"}]

    edited = _edit_program(path, tmp_path / "counts.pt2", to_the_buffer)
    with pytest.raises(ModelLoadError, match="writes into 'self'"):
        load_model(edited)


class ReadsPastItsStatistics(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(64))
        self.register_buffer("var", torch.ones(64))

    def forward(self, x):
        normed = torch.ops.aten._native_batch_norm_legit_no_training(torch.zeros(1, 64, 1, 1), None, self.bias,
                                                                      self.mean, self.var, 0.1, 0.0)[0]
        return self.lin(x.flatten(1)) + (normed != 0).sum() * 0


def test_a_core_aten_batch_norm_is_taken_only_with_sizes_that_fit(tmp_path):
    """It indexes its statistics by the input's channel count unchecked: a 1-element bias for 64
    channels read past its storage. The exported graph records every size: checked there."""
    fits = export_model(ReadsPastItsStatistics(64).eval(), DIGITS, tmp_path / "fits.pt2", format="pt2")
    load_model(fits)
    past = export_model(ReadsPastItsStatistics(1).eval(), DIGITS, tmp_path / "past.pt2", format="pt2")
    with pytest.raises(ModelLoadError, match=r"statistic of shape \(1,\) for 64 channels"):
        load_model(past)
