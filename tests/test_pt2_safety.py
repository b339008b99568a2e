"""A hostile .pt2 never runs code: every entry point refuses it before torch unpickles anything.

A suspect's model file comes from the party accused of piracy. torch.export.load trusts its
archive (pickled weights, pickled constants, sample inputs with an unrestricted fallback,
native AOTInductor libraries, sympy expressions that are eval'd, guards code, call targets
looked up by name), and reads it with its own zip reader, which sees another member than
Python's zipfile when a name is duplicated or holds a NUL. Each hostile archive here carries a
payload that writes a marker file when executed; the tests assert it is refused, the marker
never appears and no file in the folder is created or changed.
"""
import json
import pickle
import warnings
import zipfile

import pytest
import torch
from torch import nn

import ipguard_fast as ig
from conftest import half_matching_fingerprints
from hostile_model_files import SHAPE, every_command_refuses, snapshot
from ipguard_fast.io import ModelLoadError, load_model, load_suspect, save_exported



class Payload:
    """Unpickling it writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    path = save_exported(model, torch.rand(2, *SHAPE), tmp_path_factory.mktemp("pt2") / "honest.pt2")
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    return model, path, members


def _root(members):
    return next(iter(members)).split("/")[0] + "/"


def _write(path, members, trailing=()):
    """The members, then ``trailing`` (name, data) pairs, which may repeat a name (zipfile reads the last)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Duplicate name")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for name, data in [*members.items(), *trailing]:
                archive.writestr(name, data)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"json" + _NUL_STAND_IN, b"json\x00x"))  # a name zipfile cuts at NUL
    return path


_NUL_STAND_IN = b"Qx"


def _edit_json(members, member, edit):
    key = _root(members) + member
    value = json.loads(members[key])
    edit(value)
    members[key] = json.dumps(value).encode()


def _pickled_weight(members, marker):
    config = "data/weights/model_weights_config.json"
    state = {}

    def mark(value):
        fqn = next(iter(value["config"]))
        value["config"][fqn]["use_pickle"] = True
        state["file"] = value["config"][fqn]["path_name"]

    _edit_json(members, config, mark)
    members[_root(members) + "data/weights/" + state["file"]] = pickle.dumps(Payload(marker))


def _opaque_constant(members, marker):
    def add(value):
        value["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                                   "tensor_meta": None}

    _edit_json(members, "data/constants/model_constants_config.json", add)
    members[_root(members) + "data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))


def _hidden_config(config, payload_file, nul):
    """An unpickled payload behind a clean copy of ``config`` that zipfile reads instead of torch's."""
    def build(members, marker):
        key = _root(members) + config
        clean = members[key]
        value = json.loads(clean)
        value["config"]["evil"] = {"path_name": payload_file, "is_param": False, "use_pickle": True,
                                   "tensor_meta": None}
        members[key] = json.dumps(value).encode()
        members[_root(members) + config.rsplit("/", 1)[0] + "/" + payload_file] = pickle.dumps(Payload(marker))
        return [(key + (_NUL_STAND_IN.decode() if nul else ""), clean)]
    return build


def _sample_inputs(members, marker):
    members[_root(members) + "data/sample_inputs/model.pt"] = pickle.dumps(Payload(marker))


def _native_code(members, marker):
    members[_root(members) + "data/aotinductor/model/model.so"] = b"\x7fELF not really"


def _call_target(members, marker):
    def retarget(value):
        node = value["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.system"

    _edit_json(members, "models/model.json", retarget)


def _shape_expression(members, marker):
    def inject(value):
        value["range_constraints"] = {"s0": {"min_val": 0, "max_val": None}}
        value["graph_module"]["graph"]["sym_int_values"] = {
            "s0": {"as_expr": {"expr_str": f"__import__('builtins').exec(\"open({str(marker)!r},'w')\")"}}}

    _edit_json(members, "models/model.json", inject)


def _guards_code(members, marker):
    _edit_json(members, "models/model.json",
               lambda value: value.__setitem__("guards_code", [f"open({str(marker)!r}, 'w')"]))


HOSTILE = {
    "pickled weight": (_pickled_weight, "use_pickle"),
    "opaque constant": (_opaque_constant, "opaque_obj_0"),
    "sample inputs": (_sample_inputs, "sample_inputs"),
    "native code": (_native_code, "AOTInductor"),
    "call target": (_call_target, "torch.os.system"),
    "shape expression": (_shape_expression, "shape expression"),
    "guards code": (_guards_code, "guards code"),
    "duplicate weights config": (_hidden_config("data/weights/model_weights_config.json", "weight_9", False),
                                 "two members are named"),
    "duplicate constants config": (_hidden_config("data/constants/model_constants_config.json", "tensor_9", False),
                                   "two members are named"),
    "NUL-truncated name": (_hidden_config("data/weights/model_weights_config.json", "weight_9", True),
                           "control byte 0x00"),
}


@pytest.fixture(params=sorted(HOSTILE))
def hostile(request, honest, tmp_path):
    build, reason = HOSTILE[request.param]
    members = dict(honest[2])
    marker = tmp_path / "MARKER"
    trailing = build(members, marker) or ()
    return _write(tmp_path / "hostile.pt2", members, trailing), marker, reason


@pytest.mark.parametrize("variant", ["pickled weight", "duplicate weights config", "NUL-truncated name"])
def test_torch_itself_runs_the_pickled_payload(honest, tmp_path, variant):
    """Why the guard exists: torch.export.load executes the payload, even though the load then fails --
    also where Python's zipfile, reading the last of two names or cutting a name at NUL, sees a clean config."""
    members = dict(honest[2])
    marker = tmp_path / "MARKER"
    trailing = HOSTILE[variant][0](members, marker) or ()
    path = _write(tmp_path / "hostile.pt2", members, trailing)
    if trailing:
        config = _root(members) + "data/weights/model_weights_config.json"
        assert zipfile.ZipFile(path).read(config) == honest[2][config]
    try:
        torch.export.load(str(path))
    except Exception:
        pass
    assert marker.exists()


def test_every_loader_refuses_without_running_code(hostile):
    path, marker, reason = hostile
    before = snapshot(path.parent)
    for load in (load_model, load_suspect):
        with pytest.raises(ModelLoadError, match="refused") as info:
            load(path)
        assert reason in str(info.value)
    with pytest.raises(ModelLoadError, match="refused"):
        ig.verify(path, half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10))
    assert not marker.exists() and snapshot(path.parent) == before


def test_every_command_refuses_without_running_code(hostile, tmp_path, capsys):
    path, marker, _ = hostile
    errors = every_command_refuses(path, tmp_path, capsys)
    assert all("refused" in err for err in errors[:4]) and not marker.exists()


def test_an_honest_export_still_loads_and_verifies(honest):
    model, path, _ = honest
    fps = half_matching_fingerprints(model, 20)
    assert ig.matching_rate(path, fps) == ig.matching_rate(model, fps) == 0.5


# Raw weights whose tensor metadata lies about their record: torch.export.load views each record
# with the metadata's sizes, strides and offset, and makes an EMPTY record torch.zeros(sizes) --
# before, a 12 KB file passed the inspection and allocated whatever its JSON asked (2 GiB measured),
# a view past its record failed inside torch (with torch's traceback logged), and a "meta" device
# loaded a model that failed only when run (exit 1, not bad input).
LYING = {
    "empty record, huge sizes": ("1.bias", {"sizes": [{"as_int": 1 << 26}]}, b""),
    "view past its record": ("1.weight", {"sizes": [{"as_int": 10}, {"as_int": 6400}]}, None),
    "offset past its record": ("1.weight", {"storage_offset": {"as_int": 1 << 40}}, None),
    "negative stride": ("1.weight", {"strides": [{"as_int": -64}, {"as_int": 1}]}, None),
    "wider dtype than its record": ("1.weight", {"dtype": 8}, None),
    "meta device": ("1.weight", {"device": {"type": "meta", "index": None}}, None),
}


@pytest.mark.parametrize("case", sorted(LYING))
def test_tensor_metadata_that_lies_about_its_record_is_refused_before_torch_reads_it(honest, tmp_path, case):
    _, _, members = honest
    members = dict(members)
    fqn, change, record = LYING[case]
    _edit_json(members, "data/weights/model_weights_config.json",
               lambda config: config["config"][fqn]["tensor_meta"].update(change))
    if record is not None:
        members[_root(members) + "data/weights/weight_1"] = record
    path = _write(tmp_path / "lying.pt2", members)
    with pytest.raises(ModelLoadError, match="refused: data/weights/model_weights_config.json"):
        load_model(path)


def test_garbage_is_a_clean_error(tmp_path):
    bad = tmp_path / "garbage.pt2"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError, match="not a loadable torch.export"):
        load_model(bad)
