"""Hostile suspects that earlier checks let through (found by audit h3)."""
from typing import Dict, List

import pytest
import torch
from conftest import half_matching_fingerprints
from hostile_model_files import SHAPE
from remote_helpers import FakeApi, make_model, no_proxies  # noqa: F401 - a fixture
from torch import nn

import ipguard_fast as ig
from ipguard_fast.cli import main
from ipguard_fast.io import ModelLoadError, load_suspect


# --- TorchScript: a write laundered through a list or dict ---------------------------------------
# graphs.py lets an in-place operator write only into what the graph made. A list or dict the graph
# made counted as its own whatever was put into it, so `l.append(self.seen); l[0].add_(1)` wrote
# into the model's buffer (a memory from one query to the next) and the same on `x` into the
# caller's images.

class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.register_buffer("seen", torch.zeros(2))

    def out(self, x):
        return self.lin(x.flatten(1)) + self.seen.sum() * 0


class AppendsItsBuffer(Counter):
    def forward(self, x):
        held: List[torch.Tensor] = []
        held.append(self.seen)
        held[0].add_(1)
        return self.out(x)


class ExtendsWithItsBuffer(Counter):
    def forward(self, x):
        held: List[torch.Tensor] = []
        held += [self.seen]
        held[0].add_(1)
        return self.out(x)


class CopiesAListOfItsBuffer(Counter):
    def forward(self, x):
        held = list([self.seen])
        held[0].add_(1)
        return self.out(x)


class StoresItsBufferInADict(Counter):
    def forward(self, x):
        held: Dict[str, torch.Tensor] = {}
        held["seen"] = self.seen
        held["seen"].add_(1)
        return self.out(x)


class ReadsDictValues(Counter):
    def forward(self, x):
        held = {"seen": self.seen}
        held.values()[0].add_(1)
        return self.out(x)


class ReadsBeforeTheLoopAppends(Counter):
    """The element is read before the node that appends the buffer: its second turn writes into it."""

    def forward(self, x):
        held: List[torch.Tensor] = [torch.zeros(2)]
        for _ in range(2):
            held[-1].add_(1)
            held.append(self.seen)
        return self.out(x)


class AppendsItsInput(Counter):
    def forward(self, x):
        held: List[torch.Tensor] = []
        held.append(x)
        held[0].mul_(0)
        return self.out(x)


class FillsItsOwnList(Counter):
    """Honest: lists and dicts of what the model computed, written in place."""

    def forward(self, x):
        y = x.flatten(1)
        held: List[torch.Tensor] = []
        held.append(y * 2)
        held[0].relu_()
        named: Dict[str, torch.Tensor] = {"y": y + 1}
        named["y"].mul_(0.5)
        first, second = (y * 1).chunk(2, dim=1)
        first.add_(1)
        return self.lin(torch.cat([first, second], 1)) + held[0].sum() * 0 + named["y"].sum() * 0


LAUNDERED = [AppendsItsBuffer, ExtendsWithItsBuffer, CopiesAListOfItsBuffer, StoresItsBufferInADict,
             ReadsDictValues, ReadsBeforeTheLoopAppends, AppendsItsInput]


@pytest.mark.parametrize("cls", LAUNDERED, ids=lambda cls: cls.__name__)
def test_a_write_laundered_through_a_container_is_refused(cls, tmp_path):
    path = tmp_path / "suspect.pt"
    torch.jit.save(torch.jit.script(cls().eval()), str(path))
    x = torch.rand(3, *SHAPE)
    given = x.clone()
    with pytest.raises(ModelLoadError, match="writes into 'self'"):
        load_suspect(path)(given)
    assert torch.equal(given, x)


def test_a_buffer_laundered_through_a_list_is_refused_by_verify(tmp_path):
    path = tmp_path / "suspect.pt"
    torch.jit.save(torch.jit.script(AppendsItsBuffer().eval()), str(path))
    fps = half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10)
    with pytest.raises(ModelLoadError, match="writes into 'self'"):
        ig.verify(path, fps)


def test_containers_of_what_the_model_made_still_load(tmp_path):
    path = tmp_path / "honest.pt"
    honest = torch.jit.script(FillsItsOwnList().eval())
    torch.jit.save(honest, str(path))
    x = torch.rand(3, *SHAPE)
    given = x.clone()
    assert torch.equal(load_suspect(path)(given), honest(x)) and torch.equal(given, x)


# --- ONNX: a batch the model cannot take -----------------------------------------------------------
# onnxruntime raises its own exception types: a module that fails on a batch is bad input
# ("suspect: fails on images of shape ...", exit 2) and its worker goes on, but an ONNX suspect's
# failure escaped as a raw onnxruntime Fail (exit 1), killed its worker (serve stopped serving
# everyone on one client's request) and printed onnxruntime's own coloured log line.

def _onnx_that_takes_two_images(path, inputs=True):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], [0.01 * (i % 97) for i in range(640)])
    size = helper.make_tensor("size", TensorProto.INT64, [2], [2, 64])   # a batch of 2, whatever the input says
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", *SHAPE])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 10])
    nodes = [helper.make_node("Reshape", ["images", "size"], ["flat"]), helper.make_node("MatMul", ["flat", "w"],
                                                                                          ["logits"])]
    initializers = [weight, size]
    if not inputs:   # no input at all: a constant answer
        nodes = [helper.make_node("Constant", [], ["logits"], value=helper.make_tensor("c", TensorProto.FLOAT,
                                                                                       [1, 10], [0.0] * 10))]
        initializers = []
    graph = helper.make_graph(nodes, "g", [images] if inputs else [], [logits], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_onnx_batch_the_model_cannot_take_is_bad_input_in_process(tmp_path, capfd):
    path = _onnx_that_takes_two_images(tmp_path / "two.onnx")
    suspect = load_suspect(path)
    assert suspect(torch.rand(2, *SHAPE)).shape == (2, 10)
    fps = half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10)
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"^suspect: fails on images of shape \[10, 1, 8, 8\]"):
        ig.verify(suspect, fps)
    assert "onnxruntime" not in capfd.readouterr().err   # its own log line, with colour codes, is not printed


def test_an_onnx_batch_the_model_cannot_take_leaves_its_worker_running(tmp_path):
    from ipguard_fast.io.sandbox import IsolatedSuspect

    path = _onnx_that_takes_two_images(tmp_path / "two.onnx")
    with IsolatedSuspect(path) as suspect:
        with pytest.raises(ValueError, match="^suspect: fails on images of shape"):
            suspect(torch.rand(3, *SHAPE))
        assert suspect(torch.rand(2, *SHAPE)).shape == (2, 10) and suspect.failure is None


def test_an_onnx_model_without_inputs_is_no_suspect(tmp_path):
    path = _onnx_that_takes_two_images(tmp_path / "none.onnx", inputs=False)
    with pytest.raises(ValueError, match="takes no input"):
        load_suspect(path)


# --- HTTP: a server's error text on the verifier's terminal ------------------------------------------
# The server's error message went into the CLI's line as it was sent: escape sequences that retitle
# the terminal, erase the line and move the cursor up (over the verifier's earlier output), as the
# worker's text never does (sandbox/suspect.py keeps one printable line of it).

@pytest.mark.usefixtures("no_proxies")
@pytest.mark.parametrize("body", [
    '{"error": "bad", "message": "no \\u001b]0;title\\u0007\\u001b[2K\\u001b[1Acopy found \\u009b2J"}',
    "plain \x1b[31mred\x1b[0m \x07text",
])
def test_a_servers_error_text_reaches_the_terminal_as_printable_text(body, tmp_path, capsys):
    path = half_matching_fingerprints(make_model(), 10).save(tmp_path / "fp.safetensors")
    with FakeApi(make_model(), [(400, {"Content-Type": "text/plain"}, body)]) as api:
        capsys.readouterr()
        assert main(["verify", "--fingerprints", str(path), "--endpoint", api.url]) == 1
    err = capsys.readouterr().err
    assert "failed with HTTP 400" in err and err.count("\n") == 1
    assert all(ch.isprintable() for ch in err.rstrip("\n")), repr(err)


# --- the allowlist: in-place dropout ---------------------------------------------------------------
# nn.Dropout(inplace=True) (torchvision's MobileNetV3, EfficientNet, MNASNet) is aten::dropout_, which
# was not on the list: the package's own export of `tv:mobilenet_v3_small` (TorchScript or .pt2) was
# refused by every loader, so verify, extract and serve refused an honest model. It is an in-place
# operator like relu_: allowed as a write into what the graph made, refused on an input or a buffer.

@pytest.mark.parametrize("form, suffix", [("torchscript", ".pt"), ("pt2", ".pt2")])
def test_the_packages_own_export_of_an_inplace_dropout_model_loads(form, suffix, tmp_path):
    pytest.importorskip("torchvision")
    from ipguard_fast.io import export_model, load_model
    from ipguard_fast.models import build_model

    model = build_model("tv:mobilenet_v3_small", 10, (3, 32, 32), seed=0).eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    path = export_model(model, (3, 32, 32), tmp_path / f"m{suffix}", format=form)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(images), model(images), atol=1e-4, rtol=1e-4)


class DropsOutItsInputInPlace(Counter):
    def forward(self, x):
        torch.dropout_(x, 0.5, True)
        return self.out(x)


class DropsOutItsBufferInPlace(Counter):
    def forward(self, x):
        torch.dropout_(self.seen, 0.0, False)
        return self.out(x)


@pytest.mark.parametrize("cls", [DropsOutItsInputInPlace, DropsOutItsBufferInPlace], ids=lambda cls: cls.__name__)
def test_an_inplace_dropout_into_an_input_or_a_buffer_is_refused(cls, tmp_path):
    path = tmp_path / "suspect.pt"
    torch.jit.save(torch.jit.script(cls().eval()), str(path))
    with pytest.raises(ModelLoadError, match="aten::dropout_, which writes into 'self'"):
        load_suspect(path)
