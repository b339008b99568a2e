"""Interleaved A/B of protect's reference stage on the demo owner: float32 against fp32-cl
(the references only; 2 threads, no cache)."""
import json, sys, time
from ipguard_fast.data import load_digits
from ipguard_fast.models import train_digits_model
from ipguard_fast.precision import chosen_precision
from ipguard_fast.selection.config import ProtectConfig
from ipguard_fast.selection.stages import make_references
from ipguard_fast.selection.inputs import owner_shapes
train = load_digits("train")
owner = train_digits_model("cnn", seed=0)
shapes = owner_shapes(owner, train)
config = ProtectConfig(n=100, seed=0)
out = {"fp32": [], "fp32-cl": []}
for rnd in range(int(sys.argv[1])):
    for name in ("fp32", "fp32-cl"):
        with chosen_precision(name):
            start = time.perf_counter()
            make_references(owner, train, config, shapes, progress=False)
            out[name].append(round(time.perf_counter() - start, 2))
        print(name, out[name][-1], flush=True)
print(json.dumps(out))
