"""Loading the compiled library, the fallback and its single warning."""
import os
import subprocess
import sys
import warnings

import torch

from ipguard_fast import _extension, ops


def test_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(_extension, "_loaded", False)
    monkeypatch.setattr(_extension, "_load_error", "simulated")
    monkeypatch.setattr(_extension, "_warned", False)
    logits, i, j = torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops.logit_gap_loss(logits, i, j, 1.0)
        ops.logit_gap_loss(logits, i, j, 1.0)
    messages = [str(w.message) for w in caught if "compiled ops unavailable" in str(w.message)]
    assert len(messages) == 1 and "simulated" in messages[0]


def test_force_reference_env(monkeypatch):
    monkeypatch.setenv("IPGUARD_FAST_FORCE_REFERENCE", "1")
    assert not _extension.use_compiled()
    monkeypatch.setenv("IPGUARD_FAST_FORCE_REFERENCE", "0")
    assert _extension.use_compiled() == _extension.has_extension()


def test_import_without_library_in_fresh_process(tmp_path):
    # A checkout that was never built: the package imports and the ops still work.
    code = (
        "import importlib.util, sys, warnings\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'ipguard_fast._C' else real(n, *a)\n"
        "import torch, ipguard_fast\n"
        "assert not ipguard_fast.has_extension()\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    loss, _ = ipguard_fast.ops.logit_gap_loss(torch.tensor([[2., 1.]]), torch.tensor([0]), torch.tensor([1]), 1.0)\n"
        "assert loss.item() == 2.0 and len(w) == 1\n"
    )
    env = dict(os.environ, IPGUARD_FAST_FORCE_REFERENCE="0")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
