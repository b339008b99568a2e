"""protect() on the demo owner (DigitsCNN, seed 0) by the full recipe from an empty reference
cache: its seconds per stage and a hash of its fingerprints, for a before/after of one change
(run once with PYTHONPATH at a worktree of the earlier commit, once without).

    PYTHONPATH=<worktree of 4fd9fdf> python protect_digits.py before-4fd9fdf
    python protect_digits.py after-2a850a4
"""
import hashlib, json, sys, tempfile, time
from pathlib import Path
import torch
import ipguard_fast
from ipguard_fast.data import load_digits
from ipguard_fast.models import train_digits_model
from ipguard_fast.selection import CacheLocation, run_protect
from ipguard_fast.selection.config import ProtectConfig
torch.set_num_threads(2)
owner = train_digits_model("cnn", seed=0)
train, test = load_digits("train"), load_digits("test")
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    r = run_protect(owner, train, ProtectConfig(n=100, seed=0), progress=False, held_out=test, cache=CacheLocation(Path(d)))
    seconds = time.perf_counter() - t
fp = r.fingerprints
h = hashlib.sha256(fp.images.numpy().tobytes() + fp.labels.numpy().tobytes()).hexdigest()[:16]
print(json.dumps({"code": sys.argv[1], "library": ipguard_fast.__file__, "protect_seconds": round(seconds, 1),
                  "timings": {k: round(v, 1) for k, v in r.fingerprints.meta["protect"]["timings"].items()},
                  "threshold": fp.meta["threshold"], "fingerprints_sha256_16": h}))
