"""What running a suspect's file in a confined worker costs: verification of 100 fingerprints
of the digits owner (CNN, 2 epochs, k=2) saved as TorchScript, through the path, isolated
(the default) and in-process (isolate=False / --no-isolate); the API call and the
`ipguard verify` command end to end, the two kinds interleaved, median of --runs each.

Usage: python benchmarks/results/sandbox-overhead-2026-12-03/measure.py --out FILE.json [--runs 5]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import ipguard_fast as ig
from ipguard_fast.io import IsolatedSuspect, save_torchscript
from ipguard_fast.models import train_digits_model


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def summary(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": times}


def prepare(folder: Path):
    owner = train_digits_model("cnn", seed=0, epochs=2)
    fps = ig.extract_fingerprints(owner, 100, k=2.0, input_shape=(1, 8, 8), progress=False, seed=0)
    model = save_torchscript(owner, fps.images[:2], folder / "owner.pt")
    return str(model), fps, str(fps.save(folder / "owner.fingerprints.safetensors"))


def measure_api(model, fps, runs):
    ig.verify(model, fps), ig.verify(model, fps, isolate=False)  # warm-up: page cache, first-call costs
    isolated, in_process, verdicts = [], [], set()
    for _ in range(runs):
        for isolate, times in ((True, isolated), (False, in_process)):
            seconds, verdict = timed(lambda: ig.verify(model, fps, isolate=isolate))
            times.append(seconds)
            verdicts.add(json.dumps(verdict.to_dict(), sort_keys=True))
    starts = []
    for _ in range(runs):  # the worker's share: fork, confine, load, answer "ready"
        suspect = IsolatedSuspect(model)
        seconds, _ = timed(suspect.start)
        suspect.close()
        starts.append(seconds)
    return {"isolated": summary(isolated), "in_process": summary(in_process), "worker_start": summary(starts),
            "same_verdicts": len(verdicts) == 1, "verdict": json.loads(verdicts.pop())}


def measure_cli(model, fp_file, runs):
    base = [sys.executable, "-m", "ipguard_fast", "verify", "--fingerprints", fp_file, "--model", model, "--json"]
    commands = {"isolated": base, "in_process": base + ["--no-isolate"]}
    for argv in commands.values():
        subprocess.run(argv, check=True, capture_output=True)  # warm-up
    times = {name: [] for name in commands}
    outputs = {name: set() for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            seconds, proc = timed(lambda: subprocess.run(argv, check=True, capture_output=True, text=True))
            times[name].append(seconds)
            outputs[name].add(proc.stdout.strip())
    result = {name: summary(t) for name, t in times.items()}
    result["commands"] = {name: " ".join(argv) for name, argv in commands.items()}
    result["same_output"] = len(outputs["isolated"] | outputs["in_process"]) == 1
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model, fps, fp_file = prepare(Path(folder))
        load_before = os.getloadavg()
        api = measure_api(model, fps, args.runs)
        cli = measure_cli(model, fp_file, args.runs)
        load_after = os.getloadavg()
    cli_in_process = cli["in_process"]["median_s"]
    report = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "fingerprints": len(fps), "api": api, "cli": cli,
        "overhead": {
            "api_s": api["isolated"]["median_s"] - api["in_process"]["median_s"],
            "cli_s": cli["isolated"]["median_s"] - cli_in_process,
            "api_over_cli_in_process": (api["isolated"]["median_s"] - api["in_process"]["median_s"]) / cli_in_process,
            "cli_over_cli_in_process": (cli["isolated"]["median_s"] - cli_in_process) / cli_in_process,
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["overhead"], indent=2))


if __name__ == "__main__":
    main()
