"""torchrun with 2 gloo ranks on the CPU finds the same fingerprints as one process."""
import os
import re
import subprocess
import sys

import pytest
import torch

from ipguard_fast.cli import main
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.io import save_torchscript
from ipguard_fast.models import train_digits_model


@pytest.fixture(scope="module")
def owner_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "owner.pt"
    save_torchscript(train_digits_model("cnn", seed=0, epochs=3), torch.rand(2, 1, 8, 8), path)
    return path


def extract_args(model, out, n=16):
    # The documented spelling, --num-fingerprints: torchrun's own parser would take "--n" for --nnodes.
    return ["extract", "--model", str(model), "--input-shape", "1,8,8", "--num-fingerprints", str(n), "--k", "2",
            "--seed", "7",
            "--batch-size", "8", "--max-steps", "300", "--no-progress", "--out", str(out)]


def test_two_ranks_equal_one(owner_file, tmp_path):
    """One process runs the file in its confined worker; under torchrun each rank runs it in-process
    (--no-isolate: the ranks' process group needs it)."""
    single = tmp_path / "single.safetensors"
    assert main(extract_args(owner_file, single)) == 0
    double = tmp_path / "double.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ipguard_fast", *extract_args(owner_file, double), "--no-isolate"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = FingerprintSet.load(single), FingerprintSet.load(double)
    assert b.meta["world_size"] == 2 and a.meta["world_size"] == 1
    assert torch.equal(a.labels, b.labels) and torch.equal(a.source_labels, b.source_labels)
    assert torch.equal(a.steps, b.steps)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-4)


def test_a_failing_rank_fails_the_run_without_a_file(tmp_path):
    out = tmp_path / "never.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ipguard_fast", *extract_args("does_not_exist.pt", out), "--no-isolate"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert not out.exists()


def test_evaluate_under_two_ranks_equals_one_process(tmp_path):
    """Each rank trains and scores its share of the suspects (every rank used to train them all):
    the table equals one process's."""
    import json

    from safetensors.torch import save_file
    weights = tmp_path / "owner.safetensors"
    save_file(train_digits_model("cnn", seed=0, epochs=3).state_dict(), weights)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def evaluate(out, *launcher):
        proc = subprocess.run([sys.executable, *launcher, "-m", "ipguard_fast", "evaluate", "--model",
                               "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--data", "digits",
                               "--negative-arch", "digits_mlp", "--negative-epochs", "2", "--k", "2",
                               "--num-fingerprints", "12", "--families", "FTLL,prune,extract-labels",
                               "--out", str(out)],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout, json.loads((out / "results.json").read_text())

    log, double = evaluate(tmp_path / "double", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    _, single = evaluate(tmp_path / "single")
    built = [int(n) for n in re.findall(r"suspects \(this rank built (\d+)\)", log)]
    total = len(single["runs"][0]["suspects"])
    assert len(built) == 2 and sum(built) == total and min(built) >= total // 2, log
    rows = lambda result: [(s["name"], s["role"], s["accuracy"], s["matching_rate"])  # noqa: E731
                           for run in result["runs"] for s in run["suspects"]]
    assert {s["role"] for s in single["runs"][0]["suspects"]} == {"positive", "negative"}
    assert rows(double) == rows(single) and double["runs"][0]["n_fingerprints"] == 12


def test_protect_under_two_ranks_equals_one_process(tmp_path):
    """The ranks split the reference training through the cache, the pool, the reference
    outputs and the refinement (75 candidates: three chunks); the selected fingerprints
    and threshold are the single process's."""
    from safetensors.torch import save_file

    weights = tmp_path / "owner.safetensors"
    save_file(train_digits_model("cnn", seed=0, epochs=3).state_dict(), weights)
    key = tmp_path / "cache.key"

    def protect_args(out, cache):
        return ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--data", "digits",
                "--num-fingerprints", "25", "--replicas", "1", "--pool-factor", "2", "--no-progress",
                "--epoch-cap", "2",   # negatives at most 2 epochs: the same comparison at a third of the time
                "--cache", str(cache), "--cache-key", str(key), "--out", str(out)]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "ipguard_fast", *protect_args(tmp_path / "one.safetensors",
                                                                                 tmp_path / "cache-one")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stdout + single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "ipguard_fast", *protect_args(tmp_path / "two.safetensors", tmp_path / "cache-two")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert double.returncode == 0, double.stdout + double.stderr
    a, b = FingerprintSet.load(tmp_path / "one.safetensors"), FingerprintSet.load(tmp_path / "two.safetensors")
    assert a.meta["threshold"] == b.meta["threshold"]
    assert a.meta["selection"]["pool_indices"] == b.meta["selection"]["pool_indices"]
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-4)
    assert len(list((tmp_path / "cache-two").rglob("*.safetensors"))) == len(
        list((tmp_path / "cache-one").rglob("*.safetensors")))
    # --dry-run under torchrun: every rank measures (the pilot is shared), rank 0 prints once
    dry = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "ipguard_fast", *protect_args(tmp_path / "dry.safetensors", tmp_path / "cache-dry"),
                          "--dry-run", "--budget", "10h"], capture_output=True, text=True, timeout=300, env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.count("plan (budget 10.0 h: rung 0 of") == 1 and ", 2 ranks)" in dry.stdout, dry.stdout
    assert not (tmp_path / "dry.safetensors").exists()
