"""Does a cap of 29 epochs on the negatives that stop on matching the owner (what a budget
lowers it to on the digits owner) build the same references and fingerprints as the full
recipe's 60, on the demo owner (seed 0)?

    python benchmarks/results/budget-worst-case-2026-12-05/same_references.py [CAP]
"""
import tempfile, time, torch, sys
from pathlib import Path
from ipguard_fast.data import load_digits
from ipguard_fast.models import train_digits_model
from ipguard_fast.selection import CacheLocation, run_protect
from ipguard_fast.selection.config import ProtectConfig
from ipguard_fast.selection.recipe import RECIPE, capped_recipe
cap = int(sys.argv[1]) if len(sys.argv) > 1 else 29
owner = train_digits_model("cnn", seed=0)
train, test = load_digits("train"), load_digits("test")
runs = {}
for name, recipe in (("full", RECIPE), (f"cap{cap}", capped_recipe(RECIPE, cap, matched_only=True))):
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        r = run_protect(owner, train, ProtectConfig(n=100, seed=0, recipe=recipe), progress=False, held_out=test,
                        cache=CacheLocation(Path(d)))
        print(name, f"{time.perf_counter() - t:.0f} s", flush=True)
        runs[name] = r
a, b = runs["full"], runs[f"cap{cap}"]
ra = {x.name: x for x in a.references}; rb = {x.name: x for x in b.references}
same = diff = 0
for name, x in ra.items():
    y = rb.get(name)
    if y is None:
        print("only in full:", name); continue
    eq = all(torch.equal(p, q) for p, q in zip(x.model.state_dict().values(), y.model.state_dict().values()))
    same += eq; diff += not eq
    if not eq: print("differs:", name)
print("references same", same, "differ", diff)
fa, fb = a.fingerprints, b.fingerprints
print("fingerprints equal:", torch.equal(fa.images, fb.images) and torch.equal(fa.labels, fb.labels), "thresholds", fa.meta["threshold"], fb.meta["threshold"])
