"""protect on the demo owner, float32 (the default) and --bf16 (search amp bf16), one after the other."""
import json, sys, tempfile, time
import torch
from ipguard_fast.data import load_digits
from ipguard_fast.models import train_digits_model
from ipguard_fast.selection import ProtectConfig, run_protect

train_set, test_set = load_digits("train"), load_digits("test")
owner = train_digits_model("cnn", seed=0)
out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
       "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()), "runs": []}
for name, search in (("float32", {}), ("bf16", {"amp": "bf16"})):
    with tempfile.TemporaryDirectory() as cache:
        from ipguard_fast.selection import CacheLocation
        start = time.perf_counter()
        result = run_protect(owner, train_set, ProtectConfig(n=100, seed=0, search=search), held_out=test_set,
                             cache=CacheLocation(cache), progress=False)
        total = time.perf_counter() - start
    meta = result.fingerprints.meta
    run = {"name": name, "search": search, "seconds": round(total, 1),
           "stages": {k: round(v, 1) for k, v in result.report.timings.items()},
           "threshold": meta["threshold"], "references_precision": meta["protect"]["plan"]["unit_costs"]["precision"],
           "pool_amp": meta["protect"]["plan"]["unit_costs"]["amp"]}
    out["runs"].append(run)
    print(json.dumps(run), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
