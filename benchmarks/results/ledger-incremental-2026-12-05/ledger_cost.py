"""The engine's bookkeeping alone, before and after the running result rule: a pool part's
worth of candidates (n accepted of up to 2n) finishing a few per harvest, as the CPU engine
harvests every step; per harvest record + share + merge + determined, as engine.py calls
them. The old ledger is read from git (`--old-rev`), both run interleaved in one process.

    python benchmarks/results/ledger-incremental-2026-12-05/ledger_cost.py --old-rev b365c20 --out F
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ipguard_fast.search import ledger as new_ledger


def old_module(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:ipguard_fast/search/ledger.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "ipguard_fast_old_ledger.py"
    path.write_text(source.replace("from .._hashing", "from ipguard_fast._hashing")
                    .replace("from .._validate", "from ipguard_fast._validate"))
    spec = importlib.util.spec_from_file_location("ipguard_fast_old_ledger", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run(module, n: int, seed: int) -> tuple[float, list[int]]:
    g = torch.Generator().manual_seed(seed)
    ledger = module.CandidateLedger(n, 2 * n)
    running = ledger.take(256)
    images = torch.rand(2 * n, 8)
    start = time.perf_counter()
    while not ledger.determined():
        done = running[:int(torch.randint(1, 6, (1,), generator=g))]
        for c in done:
            ledger.record(c, module.Outcome(bool(torch.rand(1, generator=g) < 0.97), images[c]))
        running = running[len(done):]
        running += ledger.take(ledger.launch_count(256 - len(running)))
        ledger.merge([ledger.share(running)])
    return time.perf_counter() - start, ledger.result()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--old-rev", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    old = old_module(args.old_rev)
    rows = []
    for n in (1000, 3000, 10000):
        times = {"old": [], "new": []}
        for seed in range(3):
            (t_old, r_old), (t_new, r_new) = run(old, n, seed), run(new_ledger, n, seed)
            assert r_old == r_new, "the result must not change"
            times["old"].append(t_old)
            times["new"].append(t_new)
        rows.append({"n": n, "old_s": [round(t, 3) for t in times["old"]], "new_s": [round(t, 3) for t in times["new"]],
                     "speedup_of_medians": round(sorted(times["old"])[1] / sorted(times["new"])[1], 1)})
        print(rows[-1])
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
