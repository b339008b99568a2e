"""Processes that write one reference cache at the same time leave a manifest that vouches
for every file as it is: records are merged under a lock, never lost, and each one
matches the bytes its file holds. Each worker waits at a barrier so the writes overlap."""
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from test_reference_cache import CONFIG
from torch import nn

from ipguard_fast.fingerprints import state_dict_sha256
from ipguard_fast.selection.cache import CacheLocation, ReferenceCache, ReferenceCacheWarning
from ipguard_fast.selection.inputs import owner_shapes
from ipguard_fast.selection.stages import make_references

ROOT = Path(__file__).resolve().parents[1]
NAMES = 40   # names each worker saves (SAVES)

BARRIER = """
import sys, time
from pathlib import Path
folder, me = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
"""

SAVES = BARRIER + """
import torch
from torch import nn
from ipguard_fast.selection.cache import ReferenceCache
cache = ReferenceCache(folder / "cache", key="d" * 32, key_file=folder / "key")
for i in range(40):   # every worker writes every name, each with its own weights
    torch.manual_seed(1000 * int(me) + i)
    cache.save(f"m{i}", nn.Linear(16, 4))
"""

REFERENCES = BARRIER + """
import json
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset
sys.path.insert(0, sys.argv[3])
from test_reference_cache import CONFIG
from ipguard_fast.data import load_digits
from ipguard_fast.fingerprints import state_dict_sha256
from ipguard_fast.models import DigitsCNN
from ipguard_fast.selection.inputs import owner_shapes
from ipguard_fast.selection.cache import CacheLocation
from ipguard_fast.selection.stages import make_references
torch.set_num_threads(1)
owner = DigitsCNN()
owner.load_state_dict(load_file(folder / "owner.safetensors"))
data = load_digits("train")
small = TensorDataset(data.tensors[0][:160].clone(), data.tensors[1][:160].clone())
refs = make_references(owner.eval(), small, CONFIG, owner_shapes(owner, small),
                       cache=CacheLocation(folder / "cache", folder / "key"), progress=False)
print(json.dumps({r.name: state_dict_sha256(r.model) for r in refs.references}))
"""


def run_together(script: str, folder: Path, workers: int, timeout: float = 600) -> list[str]:
    """`script` in `workers` processes released at once; their standard outputs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(folder), str(i), str(ROOT / "tests")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(workers)]
    deadline = time.monotonic() + timeout
    while not all((folder / f"ready-{i}").exists() for i in range(workers)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (folder / "go").touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, err
        assert "ReferenceCacheWarning" not in err, err
        outputs.append(out)
    return outputs


def test_concurrent_saves_lose_no_record_and_every_record_matches_its_file(tmp_path):
    run_together(SAVES, tmp_path, workers=3)
    cache = ReferenceCache(tmp_path / "cache", key="d" * 32, key_file=tmp_path / "key")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceCacheWarning)
        loaded = [cache.load(f"m{i}", lambda: nn.Linear(16, 4)) for i in range(NAMES)]
    assert all(model is not None for model in loaded)
    written = {}
    for worker in range(3):   # each file holds one worker's weights, whole
        for i in range(NAMES):
            torch.manual_seed(1000 * worker + i)
            written[(worker, i)] = state_dict_sha256(nn.Linear(16, 4))
    assert all(state_dict_sha256(m) in {written[(w, i)] for w in range(3)} for i, m in enumerate(loaded))
    assert not list((tmp_path / "cache" / ("d" * 32)).glob(".*.tmp*"))   # no temporary file left


def test_two_protect_runs_building_one_cache_agree_with_it(owner, small, tmp_path):
    save_file(owner.state_dict(), tmp_path / "owner.safetensors")
    outputs = run_together(REFERENCES, tmp_path, workers=2)
    built = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert all(b == built[0] for b in built[1:])   # the same references
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceCacheWarning)
        again = make_references(owner, small, CONFIG, owner_shapes(owner, small),
                                cache=CacheLocation(tmp_path / "cache", tmp_path / "key"), progress=False)
    assert all(r.cached for r in again.references)
    assert {r.name: state_dict_sha256(r.model) for r in again.references} == built[0]
