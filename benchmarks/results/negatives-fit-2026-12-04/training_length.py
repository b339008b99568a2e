import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from ipguard_fast.data import load_digits
from ipguard_fast.evaluation.beds import owner_half
from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
from ipguard_fast.models import DigitsCNN
from ipguard_fast.nn import seeded
from ipguard_fast.selection import CacheLocation, run_protect
from ipguard_fast.selection.config import ProtectConfig
from ipguard_fast.train import train_model, TrainRecipe, predict
from ipguard_fast.fingerprints import FingerprintSet
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 2
train = load_digits("train")
data = owner_half(train, seed)
owner = train_model(seeded(DigitsCNN, seed), data, FOREIGN_OWNER_RECIPE, seed=seed)
out = Path(f"/tmp/exp/foreign{seed}.safetensors")
if out.exists():
    fps = FingerprintSet.load(out)
else:
    res = run_protect(owner, data, ProtectConfig(n=100, seed=seed), progress=False, log=print,
                      cache=CacheLocation(Path(f"/tmp/x/tbcache4/foreign-seed{seed}")))
    fps = res.fingerprints
    fps.save(out)
rates = fps.meta["selection"]["reference_rates_on_selection"]
for name, r in sorted(rates.items()):
    if "independent" in name: print(f"  ref {name}: {r}")
def rate(m):
    return float((predict(m, fps.images) == fps.labels).float().mean())
def trace(label, factory, recipe_kw, s, checkpoints):
    model = seeded(factory, 1000 + s)
    done = 0
    row = []
    for e in checkpoints:
        r = TrainRecipe(epochs=e - done, **recipe_kw)
        model = train_model(model, data, r, seed=1000 + s + e)
        done = e
        row.append((e, round(rate(model), 2)))
    print(label, s, row, flush=True)
like = dict(lr=0.03, batch_size=128, optimizer="sgd", weight_decay=1e-3, augment=True)
prot_sgd = dict(lr=0.05, optimizer="sgd", weight_decay=5e-4, augment=True)
adam = dict(lr=1e-3, optimizer="adam")
for s in range(2):
    trace("like-owner", DigitsCNN, like, s, [5, 10, 20, 40, 60])
    trace("protect-sgd-aug", DigitsCNN, prot_sgd, s, [5, 10, 20, 40, 60])
    trace("protect-adam", DigitsCNN, adam, s, [5, 10, 20, 40, 60])
    trace("w64-adam-b32-aug", lambda: DigitsCNN(width=64), dict(lr=5e-4, batch_size=32, augment=True), s, [5, 10, 20, 40])
