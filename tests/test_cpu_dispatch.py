"""Both builds of the CPU loss kernels, forced in turn, against the reference and each other.

The library picks the AVX2 build of its row kernels (csrc/cpu/avx2/) or the baseline one
once, when it loads; IPGUARD_FAST_CPU_CAPABILITY=default|avx2 forces one. Each build runs
here in a subprocess with the variable set, on inputs saved by this process: shapes that
straddle the vector widths, ties, non-finite values, every label pair, a row-padded view
and gradients large enough for the AVX2 build's streaming stores. Their outputs must
equal the reference, and each other, bit for bit.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import requires_extension
from op_cases import logits_case
from test_ops_fast_path import DTYPES, assert_bitwise_equal, layout, special_case

from ipguard_fast import ops, reference

pytestmark = requires_extension

ROOT = Path(__file__).resolve().parents[1]
VAR = "IPGUARD_FAST_CPU_CAPABILITY"

# Loads the cases, runs the op on each, saves the outputs and the capability in use.
_RUN_CASES = r"""
import sys, torch
from ipguard_fast import ops
cases = torch.load(sys.argv[1])
out = {name: ops.logit_gap_loss(x, i, j, k, check=False) for name, (x, i, j, k) in cases.items()}
torch.save({"capability": ops.cpu_capability(), "out": out}, sys.argv[2])
"""


def _cpu_has_avx2_kernels():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return bool(re.search(r"\bavx2\b", flags)) and bool(re.search(r"\bf16c\b", flags))


def _cases():
    cases = {}
    for dtype in DTYPES:
        name = str(dtype).split(".")[-1]
        for C in (2, 3, 7, 8, 9, 15, 16, 17, 33, 1000):
            for kind in ("random", "ties", "nan_rows"):
                x, i, j = logits_case(67, C, dtype, kind, seed=C)
                cases[f"{name}-{C}-{kind}"] = (x, i, j, 1.25)
            x, i, j = logits_case(67, C, dtype, "random", seed=C + 1)
            cases[f"{name}-{C}-row_padded"] = (layout(x, "row_padded"), i, j, 0.5)
            for kind in ("signed_zeros", "huge", "nonfinite_at_labels", "label_ties"):
                cases[f"{name}-{C}-{kind}"] = (*special_case(129, C, dtype, kind, seed=C), 2.0)
        for C in (17, 33):  # the columns left out of the max at every lane offset
            pairs = torch.tensor([(a, b) for a in range(C) for b in range(C) if a != b])
            values = torch.randint(0, 2, (len(pairs), C), generator=torch.Generator().manual_seed(C))
            cases[f"{name}-{C}-pairs"] = (values.to(dtype), pairs[:, 0].contiguous(), pairs[:, 1].contiguous(), 0.75)
        # A gradient of >= 4 MB: the AVX2 build streams it past the cache.
        B = (4 << 20) // (1000 * torch.empty(0, dtype=dtype).element_size()) + 3
        cases[f"{name}-stream"] = (*logits_case(B, 1000, dtype, "nan_rows", seed=5), 1.0)
    return cases


def _run(tmp_path, capability, env_value):
    """The op's outputs on every case in a subprocess with IPGUARD_FAST_CPU_CAPABILITY=env_value."""
    cases_file, out_file = tmp_path / "cases.pt", tmp_path / f"out-{capability}.pt"
    if not cases_file.exists():
        torch.save(_cases(), cases_file)
    env = {k: v for k, v in os.environ.items() if k not in (VAR, "ATEN_CPU_CAPABILITY")}
    env[VAR] = env_value
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _RUN_CASES, str(cases_file), str(out_file)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = torch.load(out_file)
    assert result["capability"] == capability
    return result["out"], done.stderr


def _check_against_reference(tmp_path, capability):
    out, _ = _run(tmp_path, capability, capability)
    for name, (x, i, j, k) in torch.load(tmp_path / "cases.pt").items():
        try:
            assert_bitwise_equal(out[name], reference.logit_gap_loss(x, i, j, k))
        except AssertionError as exc:
            raise AssertionError(f"{capability}, case {name}: {exc}") from exc
    return out


def test_default_build_equals_reference(tmp_path):
    _check_against_reference(tmp_path, "default")


@pytest.mark.skipif(not _cpu_has_avx2_kernels(), reason="the CPU lacks AVX2 or F16C")
def test_avx2_build_equals_reference_and_default_build(tmp_path):
    avx2 = _check_against_reference(tmp_path, "avx2")
    default, _ = _run(tmp_path, "default", "default")
    for name, got in avx2.items():
        assert_bitwise_equal(got, default[name])


def test_capability_in_this_process():
    assert torch.ops.ipguard._cpu_capability() == ops.cpu_capability()
    if VAR not in os.environ and os.environ.get("ATEN_CPU_CAPABILITY", "") == "":
        assert ops.cpu_capability() == ("avx2" if _cpu_has_avx2_kernels() else "default")


@pytest.mark.parametrize("value", ["AVX2", "avx512", "sse", " default"])
def test_bad_value_warns_and_is_ignored(tmp_path, value):
    expected = "avx2" if _cpu_has_avx2_kernels() else "default"
    torch.save({"small": logits_case(5, 9, torch.float32, "random")[:3] + (1.0,)}, tmp_path / "cases.pt")
    out, stderr = _run(tmp_path, expected, value)
    assert VAR in stderr and repr(value) in stderr, stderr[-2000:]
    x, i, j, k = torch.load(tmp_path / "cases.pt")["small"]
    assert_bitwise_equal(out["small"], reference.logit_gap_loss(x, i, j, k))


def test_avx2_code_only_in_its_own_symbols():
    # The linker keeps one copy of each inline function for the whole library: if the
    # AVX2 file compiled one shared with the other sources (c10, ATen, std), that copy
    # could be the one kept, and fault on a CPU without AVX2. So every global symbol
    # holding VEX instructions must be the AVX2 file's own (ipguard::cpu_avx2::*;
    # functions in anonymous namespaces are local to a file).
    from ipguard_fast import _C

    if shutil.which("objdump") is None or shutil.which("nm") is None:
        pytest.skip("needs binutils (objdump, nm)")
    lib = _C.__file__
    nm = subprocess.run(["nm", "-C", "--defined-only", lib], capture_output=True, text=True, check=True).stdout
    global_names = set()
    for line in nm.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "TWVu":
            global_names.add(parts[2])
    dis = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", lib], capture_output=True, text=True,
                         check=True).stdout
    with_vex, name = set(), None
    head = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    vex = re.compile(r"^\s+[0-9a-f]+:\s+v[a-z0-9]+\s.*%[xy]mm")
    for line in dis.splitlines():
        m = head.match(line)
        if m:
            name = m.group(1)
        elif name is not None and vex.match(line):
            with_vex.add(name)
    own = {n for n in global_names if n.startswith("ipguard::cpu_avx2::")}
    assert own <= with_vex, "the AVX2 kernels were compiled without AVX2"
    offenders = sorted(n for n in with_vex & global_names if n not in own)
    assert not offenders, offenders[:20]
