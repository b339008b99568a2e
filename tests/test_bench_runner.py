"""ipguard bench (ipguard_fast/bench/): a --quick smoke run writes the JSON, Markdown and PNG with every method."""
import json

import pytest

from ipguard_fast.bench import runner as bench
from ipguard_fast.bench.methods import ratios_and_targets
from ipguard_fast.bench.peers import torchattacks_cw

CPU_METHODS = ["engine", "engine-reference-ops", "per_sample", "eager_batched", "torchattacks_cw"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--models", "digits_cnn", "--device", "cpu", "--out", str(out),
            "--cache-dir", str(out / "cache"), "--name", "smoke"]
    assert bench.main(argv) == 0
    return out, json.loads((out / "smoke.json").read_text())


def test_quick_run_writes_json_markdown_and_png(quick):
    out, results = quick
    assert results["command"].endswith("--name smoke") and "--quick" in results["argv"]
    for key in ("cpu", "torch", "threads", "device", "compiled_ops"):
        assert key in results["machine"]
    md = (out / "smoke.md").read_text()
    assert (out / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = results["models"]["digits_cnn"]
    assert model["model"]["weights"] in ("trained", "cache") and model["model"]["test_accuracy"] > 0.5
    assert list(model["methods"]) == CPU_METHODS  # the CUDA-only engine modes are left out on CPU
    for method in CPU_METHODS:
        assert f"| {method} |" in md


def test_every_method_is_measured_the_same_way(quick):
    _, results = quick
    for method, r in results["models"]["digits_cnn"]["methods"].items():
        if method == "torchattacks_cw" and not torchattacks_cw.available():
            assert r["status"] == "skipped" and "torchattacks" in r["note"]
            continue
        assert r["status"] == "ok", method
        assert 0 <= r["accepted"] <= r["candidates"]
        assert r["seconds"] > 0 and r["fingerprints_per_s"] == pytest.approx(r["accepted"] / r["seconds"])
        assert r["step"]["median_s"] > 0 and r["floor"]["median_s"] > 0
        assert r["step_over_floor"] == pytest.approx(r["step"]["median_s"] / r["floor"]["median_s"])
        assert r["peak_memory"]["kind"]
    methods = results["models"]["digits_cnn"]["methods"]
    for peer in ("per_sample", "eager_batched"):  # the model labels j whatever it accepts, and more
        assert methods[peer]["labelled_j_share"] >= methods[peer]["acceptance_share"]
    assert methods["engine"]["accepted"] > 0 and methods["engine"]["step"]["batch"] == 8
    assert methods["per_sample"]["step"]["batch"] == 1 and methods["per_sample"]["candidates"] == 4
    assert methods["eager_batched"]["candidates"] == 8
    ratios = results["models"]["digits_cnn"]["ratios"]
    assert set(ratios) == {"engine", "engine-reference-ops"} and "per_sample" in ratios["engine"]


def test_quick_defaults_yield_to_explicit_options():
    args = bench.parse_args(["--quick", "--n", "5", "--k", "1.5"])
    assert (args.n, args.k, args.peer_n, args.batched_peer_n, args.max_steps) == (5, 1.5, 4, 5, 100)
    full = bench.parse_args([])
    assert (full.n, full.peer_n, full.batch_size, full.k) == (256, 64, 256, 10.0)
    with pytest.raises(SystemExit):
        bench.parse_args(["--n", "0"])


def test_targets_are_checked():
    def rec(kind, fps, ratio=None):
        return {"kind": kind, "status": "ok", "fingerprints_per_s": fps, "step_over_floor": ratio, "step": {"batch": 256}}

    methods = {"engine": rec("engine", 10.0, 1.05), "per_sample": rec("peer", 1.0), "eager_batched": rec("peer", 8.0),
               "torchattacks_cw": rec("peer", 0.0)}
    ratios, targets = ratios_and_targets(methods)
    assert ratios["engine"]["per_sample"] == 10.0 and ratios["engine"]["torchattacks_cw"] == float("inf")
    assert [t["met"] for t in targets] == [True, False, True]


def test_random_weights_time_the_engine_step_only(tmp_path):
    argv = ["--", "--quick", "--random-weights", "--models", "digits_cnn", "--device", "cpu", "--out", str(tmp_path),
            "--name", "rw"]  # a leading "--" (from `ipguard bench -- ...`) is dropped
    assert bench.main(argv) == 0
    methods = json.loads((tmp_path / "rw.json").read_text())["models"]["digits_cnn"]["methods"]
    assert list(methods) == ["engine", "engine-reference-ops"]
    assert all(r["step_over_floor"] > 0 and r["candidates"] == 0 for r in methods.values())
