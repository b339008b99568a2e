"""ONNX export and ONNX suspects (skipped where onnx / onnxruntime are not installed)."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest
import torch
from conftest import half_matching_fingerprints
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.io import OnnxSuspect, export_model, export_onnx, load_model, save_exported, save_torchscript
from ipguard_fast.verdicts import as_label_fn, matching_rate, verify

SHAPE = (1, 8, 8)
NUM_CLASSES = 10



def _installed(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


HAVE_ONNX = _installed("onnx")
HAVE_ORT = _installed("onnxruntime")
needs_onnx = pytest.mark.skipif(
    not (HAVE_ONNX and HAVE_ORT),
    reason="needs the optional ONNX packages: pip install onnx onnxruntime",
)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, NUM_CLASSES)).eval()


def make_conv_model(seed: int = 0) -> nn.Module:
    """A model with batch norm and dropout, whose eval and train outputs differ."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(256, NUM_CLASSES))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_fingerprints(model: nn.Module, n: int = 40, seed: int = 1) -> FingerprintSet:
    return half_matching_fingerprints(model, n, seed, SHAPE, NUM_CLASSES)


def labels_of(suspect, images):
    return as_label_fn(suspect, num_classes=NUM_CLASSES)(images)


@needs_onnx
def test_onnx_suspect_matches_pytorch_on_fingerprints(tmp_path):
    model = make_model()
    fingerprints = make_fingerprints(model)
    path = export_onnx(model, SHAPE, tmp_path / "model.onnx")
    suspect = OnnxSuspect(path)
    assert suspect.batch_size is None and suspect.input_shape == SHAPE  # dynamic batch axis

    assert torch.equal(labels_of(suspect, fingerprints.images), labels_of(model, fingerprints.images))
    assert matching_rate(suspect, fingerprints) == matching_rate(model, fingerprints) == 0.5
    assert verify(suspect, fingerprints, batch_size=7) == verify(model, fingerprints)
    for batch in (1, 3, 40):
        logits = suspect(fingerprints.images[:batch])
        assert logits.shape == (batch, NUM_CLASSES) and logits.dtype == torch.float32
        torch.testing.assert_close(logits, model(fingerprints.images[:batch]).detach(), atol=1e-5, rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # written atomically, no leftovers


@needs_onnx
def test_export_uses_eval_mode_and_restores_training(tmp_path):
    model = make_conv_model().train()
    images = make_fingerprints(make_conv_model()).images
    export_onnx(model, SHAPE, tmp_path / "conv.onnx")
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    suspect = OnnxSuspect(tmp_path / "conv.onnx")
    torch.testing.assert_close(suspect(images), model(images).detach(), atol=1e-5, rtol=1e-4)


@needs_onnx
@pytest.mark.parametrize("kind", ["torchscript", "pt2"])
def test_export_from_saved_models(tmp_path, kind):
    model = make_conv_model()
    example = torch.zeros(2, *SHAPE)
    source = tmp_path / ("model.pt" if kind == "torchscript" else "model.pt2")
    (save_torchscript if kind == "torchscript" else save_exported)(model, example, source)
    loaded = load_model(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the export itself stays quiet
        export_onnx(loaded, SHAPE, tmp_path / "out.onnx")
    images = make_fingerprints(model).images
    suspect = OnnxSuspect(tmp_path / "out.onnx")
    assert torch.equal(labels_of(suspect, images), labels_of(model, images))
    assert suspect(images[:5]).shape == (5, NUM_CLASSES)


@needs_onnx
def test_fixed_batch_onnx_model_is_fed_padded_chunks(tmp_path):
    model = make_model()
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(4, *SHAPE),), str(path), dynamo=False, input_names=["x"],
                          opset_version=17)
    suspect = OnnxSuspect(path)
    assert suspect.batch_size == 4
    images = make_fingerprints(model, n=10).images
    assert torch.equal(labels_of(suspect, images), labels_of(model, images))


@needs_onnx
def test_onnx_suspect_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        OnnxSuspect(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxSuspect(bad)
    export_onnx(make_model(), SHAPE, tmp_path / "m.onnx")
    suspect = OnnxSuspect(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="takes images"):
        suspect(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError):
        suspect(torch.zeros(2, 64, dtype=torch.int64))


@needs_onnx
def test_an_onnx_suspect_answering_strings_is_bad_input_in_process_and_in_the_worker(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", *SHAPE])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["B", 64])
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"], axis=1),
                               helper.make_node("Cast", ["f"], ["y"], to=TensorProto.STRING)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "strings.onnx"
    onnx.save(model, str(path))
    fps = make_fingerprints(make_model(), n=8)
    with pytest.raises(ValueError, match="^suspect: strings.onnx answers object values"):
        verify(OnnxSuspect(path), fps)
    fp_path = fps.save(tmp_path / "fp.safetensors")
    capsys.readouterr()
    assert main(["verify", "--fingerprints", str(fp_path), "--model", str(path), "--no-isolate"]) == 2
    assert "answers object values" in capsys.readouterr().err


def test_export_argument_errors(tmp_path):
    model = make_model()
    for shape in ((), (0, 8, 8), (1.5, 8), "1,8,8"):
        with pytest.raises(ValueError, match="input_shape"):
            export_onnx(model, shape, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, SHAPE, tmp_path / "x.onnx", opset=0)
    with pytest.raises(ValueError, match="format"):
        export_model(model, SHAPE, tmp_path / "x.bin", format="tflite")


def test_missing_onnxruntime_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        OnnxSuspect(tmp_path / "m.onnx")


def test_missing_onnx_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx"):
        export_onnx(make_model(), SHAPE, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@needs_onnx
def test_onnx_suspect_served_over_http(tmp_path, monkeypatch):
    """An ONNX model behind the label API verifies like its PyTorch original."""
    from ipguard_fast.remote import serve, verify_remote

    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    model = make_model()
    fingerprints = make_fingerprints(model)
    export_onnx(model, SHAPE, tmp_path / "m.onnx")
    with serve(OnnxSuspect(tmp_path / "m.onnx"), input_shape=SHAPE) as running:
        assert verify_remote(running.url, fingerprints, batch_size=16, timeout=10) == verify(model, fingerprints)


# ---------------------------------------------------------------------- ipguard export


def _run_export(argv):
    return main(["export", *argv])


@pytest.mark.parametrize("fmt, suffix", [
    pytest.param("onnx", ".onnx", marks=needs_onnx),
    ("torchscript", ".pt"),
    ("pt2", ".pt2"),
])
def test_export_cli_formats(tmp_path, capsys, fmt, suffix):
    model = make_conv_model()
    source = tmp_path / "source.pt"
    save_torchscript(model, torch.zeros(2, *SHAPE), source) if fmt != "pt2" else None
    spec = str(source)
    if fmt == "pt2":  # a .pt2 needs an eager model: use a factory spec with weights
        from safetensors.torch import save_file

        linear = make_model()
        save_file(linear.state_dict(), str(tmp_path / "w.safetensors"))
        spec = f"{__name__}:make_model"  # this module, as pytest imported it
        model = linear
    out = tmp_path / f"out{suffix}"
    argv = ["--model", spec, "--input-shape", "1,8,8", "--format", fmt, "--out", str(out)]
    if fmt == "pt2":
        argv += ["--weights", str(tmp_path / "w.safetensors")]
    assert _run_export(argv) == 0, capsys.readouterr().err
    assert str(out) in capsys.readouterr().out
    images = make_fingerprints(model).images
    exported = OnnxSuspect(out) if fmt == "onnx" else load_model(out)
    assert torch.equal(labels_of(exported, images), labels_of(model, images))


def test_export_cli_errors(tmp_path, capsys):
    assert _run_export(["--model", str(tmp_path / "none.pt"), "--input-shape", "1,8,8", "--out",
                        str(tmp_path / "o.onnx")]) == 2
    source = tmp_path / "m.pt"
    save_torchscript(make_model(), torch.zeros(2, *SHAPE), source)
    assert _run_export(["--model", str(source), "--input-shape", "1,x", "--out", str(tmp_path / "o.onnx")]) == 2
    # A TorchScript model cannot be re-exported with torch.export: bad input (issue 21's contract), exit 2.
    assert _run_export(["--model", str(source), "--input-shape", "1,8,8", "--format", "pt2",
                        "--out", str(tmp_path / "o.pt2")]) == 2
    assert "TorchScript" in capsys.readouterr().err


def test_onnx_suspect_through_the_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from ipguard_fast.io import ModelLoadError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    ts = tmp_path / "m.pt"
    save_torchscript(model, torch.rand(2, 1, 8, 8), ts)
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--model", str(ts), "--input-shape", "1,8,8", "--format", "onnx", "--out", str(onnx_path)]) == 0
    fp_path = make_fingerprints(model, n=20).save(tmp_path / "fp.safetensors")
    capsys.readouterr()
    assert main(["verify", "--fingerprints", str(fp_path), "--model", str(onnx_path), "--json"]) == 0
    assert '"matching_rate": 0.5' in capsys.readouterr().out
    with pytest.raises(ModelLoadError, match="ONNX"):
        load_model(onnx_path)


def _reading_beside(where: str, location: str = "fp.safetensors"):
    """A suspect whose 64x10 weight reads its bytes from `location` beside the model, the
    tensor placed `where`: an initializer, a Constant node, an If's branch, a local function,
    a local function's default attribute value."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((64, 10), dtype=np.float32), name="W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(64 * 10 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", *SHAPE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 10])
    flat = helper.make_node("Flatten", ["x"], ["f"], axis=1)
    nodes, initializers, functions = [flat], [], []
    if where == "initializer":
        initializers = [weight]
    elif where == "constant":
        nodes.append(helper.make_node("Constant", [], ["W"], value=weight))
    elif where == "subgraph":
        w_out = helper.make_tensor_value_info("W", TensorProto.FLOAT, [64, 10])
        branch = helper.make_graph([helper.make_node("Constant", [], ["W"], value=weight)], "b", [], [w_out])
        cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
        nodes += [helper.make_node("Constant", [], ["cond"], value=cond),
                  helper.make_node("If", ["cond"], ["W"], then_branch=branch, else_branch=branch)]
    elif where == "function":
        body = [helper.make_node("Constant", [], ["W"], value=weight)]
        functions = [helper.make_function("local", "weights", [], ["W"], body, [helper.make_opsetid("", 17)])]
        nodes.append(helper.make_node("weights", [], ["W"], domain="local"))
    elif where == "function default":   # the function's Constant takes its value from a default attribute
        import onnx

        constant = helper.make_node("Constant", [], ["W"])
        constant.attribute.append(onnx.AttributeProto(name="value", ref_attr_name="value",
                                                       type=onnx.AttributeProto.TENSOR))
        function = helper.make_function("local", "weights", [], ["W"], [constant], [helper.make_opsetid("", 17)])
        function.attribute_proto.append(helper.make_attribute("value", weight))
        functions = [function]
        nodes.append(helper.make_node("weights", [], ["W"], domain="local"))
    nodes.append(helper.make_node("MatMul", ["f", "W"], ["y"]))
    graph = helper.make_graph(nodes, "g", [x], [y], initializers)
    model = helper.make_model(graph, functions=functions,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    return model


@needs_onnx
@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph", "function", "function default"])
def test_a_suspect_that_reads_a_file_beside_it_is_refused(tmp_path, where, monkeypatch):
    """It read the verifier's own fingerprint file as its weights (onnxruntime refuses only
    absolute and escaping paths): refused before onnxruntime sees it."""
    import onnxruntime

    make_fingerprints(make_model(), n=8).save(tmp_path / "fp.safetensors")
    path = tmp_path / "suspect.onnx"
    path.write_bytes(_reading_beside(where).SerializeToString())
    sessions = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: sessions.append(a))
    with pytest.raises(ValueError, match=r"suspect.onnx is refused: its tensor 'W' would read its data from the "
                                         r"file 'fp.safetensors' beside it"):
        OnnxSuspect(path)
    assert sessions == []


@needs_onnx
def test_an_external_tensor_in_a_training_graph_is_found_too():
    import onnx
    from onnx import helper

    from ipguard_fast.io.formats.onnx_external import external_tensors

    model = _reading_beside("initializer")
    info = onnx.TrainingInfoProto()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], [model.graph.initializer[0]]))
    model.graph.ClearField("initializer")
    assert list(external_tensors(model)) == []
    model.training_info.append(info)
    assert list(external_tensors(model)) == [("W", "fp.safetensors")]


@needs_onnx
def test_a_suspect_reading_a_file_beside_it_is_refused_by_verify_in_the_worker_too(tmp_path, capsys):
    fp_path = make_fingerprints(make_model(), n=8).save(tmp_path / "fp.safetensors")
    path = tmp_path / "suspect.onnx"
    path.write_bytes(_reading_beside("initializer").SerializeToString())
    for isolation in ([], ["--no-isolate"]):
        capsys.readouterr()
        assert main(["verify", "--fingerprints", str(fp_path), "--model", str(path), *isolation]) == 2
        err = capsys.readouterr().err
        assert "would read its data from the file 'fp.safetensors'" in err and "matching rate" not in err


@needs_onnx
def test_a_self_contained_file_saved_by_onnx_still_loads(tmp_path):
    import onnx

    model = make_model()
    export_onnx(model, SHAPE, tmp_path / "m.onnx")
    resaved = tmp_path / "resaved.onnx"
    onnx.save_model(onnx.load(str(tmp_path / "m.onnx")), str(resaved), save_as_external_data=False)
    images = torch.rand(5, *SHAPE)
    assert torch.equal(labels_of(OnnxSuspect(resaved), images), labels_of(model, images))


@needs_onnx
def test_a_file_past_protobufs_limit_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    import ipguard_fast.io.formats.onnx as onnx_format

    export_onnx(make_model(), SHAPE, tmp_path / "m.onnx")
    size = (tmp_path / "m.onnx").stat().st_size
    monkeypatch.setattr(onnx_format, "_LARGEST_SELF_CONTAINED", size - 1)
    with pytest.raises(ValueError, match="m.onnx is refused: over 2 GiB, protobuf's limit"):
        OnnxSuspect(tmp_path / "m.onnx")
    monkeypatch.setattr(onnx_format, "_LARGEST_SELF_CONTAINED", size)
    assert OnnxSuspect(tmp_path / "m.onnx").input_shape == SHAPE


@needs_onnx
def test_a_small_onnx_suspect_loads_in_a_worker_with_little_memory(tmp_path, capsys):
    """The size bound once reserved a 2 GiB buffer up front: under --memory-limit 0.5 every
    ONNX model ran out of memory while loading."""
    model = make_model()
    export_onnx(model, SHAPE, tmp_path / "m.onnx")
    fp_path = make_fingerprints(model, n=8).save(tmp_path / "fp.safetensors")
    capsys.readouterr()
    code = main(["verify", "--fingerprints", str(fp_path), "--model", str(tmp_path / "m.onnx"), "--memory-limit", "0.5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "matching rate 0.5000 (4/8)" in out.out   # make_fingerprints: half of them the model's labels


@needs_onnx
def test_an_onnx_suspect_that_asks_for_petabytes_runs_out_of_memory(tmp_path, capsys):
    """onnxruntime's arena says "Failed to allocate memory", which was taken for bad input (exit
    2, "fails on images"): it is a resource running out, exit 1, as for any other format."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import ipguard_fast as ig
    from ipguard_fast.io import SuspectResourceError

    def constant(name, values, dtype):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype=dtype)))

    nodes = [constant("shape", [2 ** 50], np.int64), constant("one", [1.0], np.float32),
             helper.make_node("Expand", ["one", "shape"], ["big"]),   # 4 PiB of float32
             helper.make_node("ReduceSum", ["big"], ["sum"], keepdims=0),
             helper.make_node("Flatten", ["x"], ["flat"]),
             constant("start", [0], np.int64), constant("end", [10], np.int64), constant("axis", [1], np.int64),
             helper.make_node("Slice", ["flat", "start", "end", "axis"], ["ten"]),
             helper.make_node("Mul", ["ten", "sum"], ["y"])]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", *SHAPE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 10])])
    path = tmp_path / "bomb.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    fps = make_fingerprints(make_model(), n=8)
    with pytest.raises(SuspectResourceError, match="ran out of memory"):
        ig.verify(path, fps, threshold=0.5)   # the package's verify: the file in a confined worker
    fps_path = fps.save(tmp_path / "fp.safetensors")
    assert main(["verify", "--fingerprints", str(fps_path), "--model", str(path), "--threshold", "0.5"]) == 1
    assert "ran out of memory" in capsys.readouterr().err
