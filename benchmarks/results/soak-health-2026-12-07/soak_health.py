"""The soak test's health latencies (tests/test_remote_soak.py), with the server's decoding steps and
the load's priority as arguments, one JSON line per run.

    PYTHONPATH=. python benchmarks/results/soak-health-2026-12-07/soak_health.py \
        --runs 8 --steps before|after --load nice10|idle >> results.jsonl

--steps before: the decoding steps as they were until bc9b235 (1 MiB windows, time.sleep(0)
between them), set by patching ipguard_fast.remote.buffers in the server process; after: the
code as it is. --load nice10: the load process at nice 10 (as until bc9b235); idle: as
tests/remote_load.py now runs it (SCHED_IDLE).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_remote_soak as soak  # noqa: E402
from conftest import half_matching_fingerprints  # noqa: E402

BEFORE = ("import ipguard_fast.remote.buffers as B; B.WINDOW = 1 << 20; "
          "B.b64decode_in_steps.__defaults__ = (1 << 20,); B.let_others_run = lambda: time.sleep(0)")


def one_run(folder: Path, steps: str, load: str) -> dict:
    server = soak.SERVER.replace("import json, sys, torch", "import json, sys, time, torch\n    "
                                 + (BEFORE if steps == "before" else "pass"))
    prober = soak.PROBER
    load_script = folder / "remote_load.py"
    text = (ROOT / "tests" / "remote_load.py").read_text()
    if load == "nice10":
        text = text.replace("    _lowest_priority()\n", "    os.nice(10)\n")
    load_script.write_text(text)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    torch.save(model.state_dict(), folder / "model.pt")
    half_matching_fingerprints(model, 40).save(folder / "fp.safetensors")
    processes = [soak._start("-c", server, str(folder / "model.pt"), str(soak.PER_ADDRESS))]
    try:
        port = processes[0].stdout.readline().strip()
        loader = soak._start(str(load_script), port, str(folder / "fp.safetensors"), str(soak.HONEST))
        processes.append(loader)
        assert loader.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        probe = soak._start("-c", prober, port)
        processes.append(probe)
        loader.stdin.write("go\n")
        loader.stdin.flush()
        result = json.loads(loader.stdout.readline())
        latencies = sorted(json.loads(probe.communicate("stop\n", timeout=30)[0]))
        processes[0].communicate("stop\n", timeout=30)
    finally:
        for process in processes:
            process.kill()
    return {"steps": steps, "load": load, "probes": len(latencies),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
            "slowest_ms": [round(1000 * x, 1) for x in latencies[-5:]],
            "verdicts_ok": len(result["verdicts"]) == soak.HONEST, "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", choices=("before", "after"), required=True)
    parser.add_argument("--load", choices=("nice10", "idle"), required=True)
    args = parser.parse_args()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one_run(Path(folder), args.steps, args.load)), flush=True)


if __name__ == "__main__":
    main()
