"""What a fixed 0.5 did to plain IPGuard files, before verify stopped judging files with no threshold.

1. From the committed three-bed results (owner seeds 0-2): per plain k, how many innocent
   models had a rate of 0.5 or more, and the highest innocent rate.
2. Afresh: the demo owner (DigitsCNN, seed 0), three CNNs and one MLP trained by the same
   recipe at other seeds, 100 plain fingerprints at k = 3, 5, 10 (seed 0): each innocent's rate.

    python benchmarks/results/plain-default-threshold-2026-12-07/measure.py > result.json
"""
import glob
import json
import os

import torch

from ipguard_fast import extract_fingerprints
from ipguard_fast.models import train_digits_model
from ipguard_fast.verdicts import matching_rate

HERE = os.path.dirname(os.path.abspath(__file__))
BEDS = os.path.join(HERE, "..", "three-beds-negative-cap-2026-12-06", "seeds-0-2")


def committed():
    rows = {}
    for path in sorted(glob.glob(os.path.join(BEDS, "*-seed*.json"))):
        for run in json.load(open(path))["runs"]:
            if run.get("method") != "ipguard":
                continue
            rates = [s["matching_rate"] for s in run["suspects"] if s["role"] == "negative"]
            row = rows.setdefault(f"k={run['k']:g}", {"innocents": 0, "at_or_above_0.5": 0, "highest": 0.0})
            row["innocents"] += len(rates)
            row["at_or_above_0.5"] += sum(rate >= 0.5 for rate in rates)
            row["highest"] = max(row["highest"], max(rates))
    return rows


def afresh():
    torch.set_num_threads(1)
    owner = train_digits_model("cnn", seed=0)
    innocents = {f"cnn-seed{s}": train_digits_model("cnn", seed=s) for s in (1, 2, 3)}
    innocents["mlp-seed1"] = train_digits_model("mlp", seed=1)
    out = {}
    for k in (3, 5, 10):
        fps = extract_fingerprints(owner, n=100, k=k, input_shape=(1, 8, 8), seed=0, progress=False)
        out[f"k={k}"] = {name: matching_rate(model, fps) for name, model in innocents.items()}
    return out


if __name__ == "__main__":
    print(json.dumps({"committed_three_beds_seeds_0_2": committed(), "demo_owner_afresh": afresh(),
                      "torch": torch.__version__}, indent=1))
