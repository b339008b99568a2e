"""How copies of the demo owner (seed 0) keep the demo's selected fingerprints (made by
`ipguard demo` at a7f4d23) from one draw of the attack to the next: the demo bed's own
RTAL (its evaluation seed) and 19 more seeds of that attack (the head re-drawn, then all
layers fine-tuned by Adam at 1e-3 for 5 epochs on the owner's training data), each
draw's matching rate and test accuracy; then 12 draws of each of protect's other
per-replica copies (its recipe's settings).

    python draws.py demo-seed0-fingerprints.safetensors [--threads 1] > draws.txt
"""
import argparse

import torch

from ipguard_fast import FingerprintSet
from ipguard_fast.attacks import AttackContext, FineTune, run_attack
from ipguard_fast.selection.recipe import RECIPE
from ipguard_fast.attacks.seeds import evaluation_seed
from ipguard_fast.data import load_digits
from ipguard_fast.models import train_digits_model
from ipguard_fast.train import accuracy
from ipguard_fast.verdicts import matching_rate

p = argparse.ArgumentParser()
p.add_argument("fingerprints")
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)
fingerprints = FingerprintSet.load(args.fingerprints)
train, test = load_digits("train"), load_digits("test")
owner = train_digits_model("cnn", seed=0)
seeds = [("the demo bed's RTAL-lr0.001-e5", evaluation_seed(0, "RTAL-lr0.001-e5"))] + [
    (f"draw {s}", 2000 + s) for s in range(19)]
rates = []
for name, seed in seeds:
    (copy,) = run_attack("fine-tune", FineTune(1e-3, 5, reinit_last=True), AttackContext(owner, train, seed))
    rates.append(matching_rate(copy, fingerprints))
    print(f"{name:32s} seed {seed:>11d}: matching rate {rates[-1]:.2f}, test accuracy {accuracy(copy, test):.3f}",
          flush=True)
low = sorted(r for r in rates if r < 0.95)
print(f"{len(low)} of {len(rates)} draws below 0.95 ({', '.join(f'{r:.2f}' for r in low)}); "
      f"the others {min(r for r in rates if r >= 0.95):.2f}-{max(rates):.2f}")

for kind in RECIPE:
    if kind.role != "positive" or not kind.per_replica or kind.kind == "RTAL":
        continue
    rates = [matching_rate(run_attack(kind.attack, kind.settings, AttackContext(owner, train, 3000 + s))[0],
                           fingerprints) for s in range(12)]
    print(f"{kind.kind:16s} 12 draws: {' '.join(f'{r:.2f}' for r in rates)}", flush=True)
