"""The CPU loss's unit-stride fast path (csrc/cpu/logit_gap_rows.h) against the reference, bit for bit.

Rows with stride(1) == 1 (contiguous, or row-padded views) take the vectorised
path; transposed and column-strided logits take the scalar fold. Both must equal
reference.logit_gap_loss exactly: ties to the lowest index, non-finite rows NaN
with a zero gradient, no second term at C == 2. The sizes straddle the vector
widths (8 float32, 4 float64, 16 float16/bfloat16 per load; 2 loads per step).
On an AVX2 machine the AVX2 build runs in this process; a subprocess with
ATEN_CPU_CAPABILITY=default runs the baseline build of the same kernel.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import distinct_labels, requires_extension
from op_cases import logits_case

from ipguard_fast import ops, reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repo root

from benchmarks.test_bench_ops import careful_eager_loss  # noqa: E402

pytestmark = requires_extension

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
CS = [2, 3, 7, 8, 9, 15, 16, 17, 1000]
BS = [0, 1, 7, 4096]


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_bitwise_equal(got, expected):
    loss, grad = got
    ref_loss, ref_grad = expected
    assert loss.dtype == ref_loss.dtype and grad.dtype == ref_grad.dtype
    assert loss.shape == ref_loss.shape and grad.shape == ref_grad.shape
    assert grad.is_contiguous()
    # NaN in the same rows, the same bits elsewhere (a -0.0 for a +0.0 fails too).
    nan = ref_loss.isnan()
    assert torch.equal(loss.isnan(), nan)
    assert torch.equal(_bits(loss[~nan]), _bits(ref_loss[~nan]))
    assert torch.equal(_bits(grad), _bits(ref_grad))


def layout(logits, how):
    """The same values in another memory layout."""
    if how == "contiguous":
        return logits.contiguous()
    if how == "row_padded":  # stride(1) == 1, stride(0) > C: still the fast path
        B, C = logits.shape
        wide = torch.full((B, C + 5), 7.0, dtype=logits.dtype)
        wide[:, :C] = logits
        return wide[:, :C]
    if how == "transposed":  # stride(1) == B: the scalar fold
        return logits.t().contiguous().t()
    if how == "strided":  # stride(1) == 2: the scalar fold
        B, C = logits.shape
        wide = torch.zeros(B, 2 * C, dtype=logits.dtype)
        wide[:, ::2] = logits
        return wide[:, ::2]
    raise ValueError(how)


def special_case(B, C, dtype, kind, seed):
    """Values the kernels must agree on beyond random normals."""
    gen = torch.Generator().manual_seed(seed)
    i, j = distinct_labels(B, C, gen)
    if kind == "signed_zeros":  # -0.0 and +0.0 tie: t* is the lowest of either
        vals = torch.tensor([0.0, -0.0, -1.0])
        logits = vals[torch.randint(0, 3, (B, C), generator=gen)]
    elif kind == "huge":  # near the dtype's max: v - v must stay 0, nothing may overflow
        big = torch.finfo(dtype).max
        logits = ((torch.rand(B, C, generator=gen, dtype=torch.float64) * 2 - 1) * big).to(dtype)
        logits[:, 0] = big
    elif kind == "nonfinite_at_labels":  # NaN/inf only in the columns the max leaves out
        logits = torch.randn(B, C, generator=gen)
        rows = torch.arange(B)
        bad = torch.tensor([float("nan"), float("inf"), float("-inf")])
        logits[rows[0::2], i[0::2]] = bad.repeat(B)[: len(rows[0::2])]
        logits[rows[1::2], j[1::2]] = bad.repeat(B)[: len(rows[1::2])]
    elif kind == "label_ties":  # g_i or g_j equal to the runner-up's value
        logits = torch.randint(0, 2, (B, C), generator=gen).float()
        logits[torch.arange(B), i] = 1.0
    else:
        raise ValueError(kind)
    return logits.to(dtype), i, j


@pytest.mark.parametrize("kind", ["random", "ties", "nan_rows"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("B", BS)
def test_fast_path_bitwise(B, C, dtype, kind):
    logits, i, j = logits_case(B, C, dtype, kind, seed=31 * B + C)
    assert logits.is_contiguous()
    got = ops.logit_gap_loss(logits, i, j, 1.25)
    assert_bitwise_equal(got, reference.logit_gap_loss(logits, i, j, 1.25))


@pytest.mark.parametrize("how", ["row_padded", "transposed", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", CS)
def test_layouts_bitwise(C, dtype, how):
    for kind in ("random", "ties", "nan_rows"):
        logits, i, j = logits_case(67, C, dtype, kind, seed=C)
        fast = ops.logit_gap_loss(logits, i, j, 0.5)
        other = layout(logits, how)
        assert (other.stride(1) == 1) == (how == "row_padded")
        got = ops.logit_gap_loss(other, i, j, 0.5)
        assert_bitwise_equal(got, reference.logit_gap_loss(other, i, j, 0.5))
        assert_bitwise_equal(got, fast)  # both paths, same bits


@pytest.mark.parametrize("kind", ["signed_zeros", "huge", "nonfinite_at_labels", "label_ties"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", CS)
def test_special_values_bitwise(C, dtype, kind):
    logits, i, j = special_case(129, C, dtype, kind, seed=C)
    for how in ("contiguous", "transposed"):
        x = layout(logits, how)
        assert_bitwise_equal(ops.logit_gap_loss(x, i, j, 2.0), reference.logit_gap_loss(x, i, j, 2.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [3, 15, 16, 17, 33])
def test_every_label_pair(C, dtype):
    # One row per (i, j): the columns left out of the max fall at every offset
    # of a vector, including its first and last lanes and the scalar tail.
    pairs = torch.tensor([(a, b) for a in range(C) for b in range(C) if a != b])
    i, j = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
    gen = torch.Generator().manual_seed(C)
    for values in (torch.randn(len(pairs), C, generator=gen),
                   torch.randint(0, 2, (len(pairs), C), generator=gen).float()):
        logits = values.to(dtype)
        assert_bitwise_equal(ops.logit_gap_loss(logits, i, j, 0.75),
                             reference.logit_gap_loss(logits, i, j, 0.75))


def test_bad_labels_rejected_on_both_paths():
    # The CPU op checks label values itself (check=False only skips the Python check).
    logits = torch.randn(4, 9)
    for x in (logits, logits.t().contiguous().t()):
        for i, j in (([0, 9, 1, 2], [1, 2, 3, 4]), ([0, 1, 2, -1], [1, 2, 3, 4]), ([0, 1, 2, 3], [1, 2, 2, 4])):
            with pytest.raises(ValueError):
                ops.logit_gap_loss(x, torch.tensor(i), torch.tensor(j), 1.0, check=False)


def test_opcheck_fast_and_strided():
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        for C in (2, 17, 40):
            logits = torch.randn(11, C, generator=gen, dtype=dtype)
            i, j = distinct_labels(11, C, gen)
            for x in (logits, logits.t().contiguous().t()):
                torch.library.opcheck(torch.ops.ipguard.logit_gap_loss.default,
                                      (x.detach().requires_grad_(), i, j, 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C", [2, 3, 17, 1000])
def test_careful_eager_peer_matches_op_on_finite_inputs(C, dtype):
    # benchmarks/test_bench_ops.py's peer does less work (no NaN rows), but on
    # finite logits it must compute what the op computes, or the ratio is void.
    for kind in ("random", "ties"):
        logits, i, j = logits_case(257, C, dtype, kind, seed=C)
        loss, grad = careful_eager_loss(logits, i, j, 1.5)
        op_loss, op_grad = ops.logit_gap_loss(logits, i, j, 1.5)
        torch.testing.assert_close(loss, op_loss, rtol=0, atol=0)
        torch.testing.assert_close(grad, op_grad, rtol=0, atol=0)


_DEFAULT_BUILD_SCRIPT = r"""
import sys, torch
sys.path[:0] = sys.argv[1:]
from op_cases import logits_case
from ipguard_fast import has_extension, ops, reference
assert has_extension()
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
n = 0
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for C in (2, 3, 8, 9, 16, 17, 1000):
        for kind in ("random", "ties", "nan_rows"):
            logits, i, j = logits_case(300, C, dtype, kind, seed=C)
            got, ref = ops.logit_gap_loss(logits, i, j, 1.0), reference.logit_gap_loss(logits, i, j, 1.0)
            torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)
            n += 1
print("ok", n)
"""


def test_baseline_build_in_subprocess():
    # ATEN_CPU_CAPABILITY=default makes the op take the baseline (non-AVX2)
    # build of the fast path, as on a CPU without AVX2.
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _DEFAULT_BUILD_SCRIPT, str(Path(__file__).parent), str(root)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip() == "ok 84"
