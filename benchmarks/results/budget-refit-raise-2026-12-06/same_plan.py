"""protect on make_idx.py's files under a 5-minute budget with the unit costs fixed to those
a first run measured (mnist-plans.json, "before"), so that the code before and after the
raise makes the same plan and builds the same references; what differs is what the refit
does once they are built. python same_plan.py IDX_FOLDER OWNER.safetensors OUT.json"""
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import ipguard_fast.selection.stages as stages
from ipguard_fast.data import load_data
from ipguard_fast.models.lenet import LeNet5
from ipguard_fast.selection import run_protect
from ipguard_fast.selection.config import ProtectConfig
from ipguard_fast.selection.plan_costs import UnitCosts

folder, owner_file, out = sys.argv[1:4]
recorded = json.loads((Path(__file__).parent / "mnist-plans.json").read_text())["before"]["plan"]["unit_costs"]
costs = UnitCosts(**recorded)
stages.measure_unit_costs = lambda *args, **kwargs: costs
torch.set_num_threads(2)
owner = LeNet5()
owner.load_state_dict(load_file(owner_file))
owner.eval()
start = time.perf_counter()
result = run_protect(owner, load_data(f"mnist:{folder}", "train"), ProtectConfig(n=100, seed=0, budget=300),
                     held_out=load_data(f"mnist:{folder}", "test"), progress=False, log=print)
seconds = time.perf_counter() - start
report = result.fingerprints.meta["protect"]
Path(out).write_text(json.dumps({"protect_seconds": seconds, "plan": report["plan"], "timings": report["timings"],
                                 "chosen": report["chosen"], "candidates": report["candidates"],
                                 "threshold": result.fingerprints.meta["threshold"],
                                 "fingerprints_sha256": result.fingerprints.meta.get("sha256")}, indent=1))
print(f"protect took {seconds:.0f} s")
