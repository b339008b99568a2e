#!/usr/bin/env bash
# The GPU check, run on the lent H200 (its own torch and Python) through the device tool:
#   build the extension there, run every CUDA test, time the ops, run the side-by-side
#   benchmark; everything lands under $OUT (one log, one tarball of raw results).
# Usage (from the repository root):   OUT=/tmp/gpu bash benchmarks/gpu_check.sh [quick]
# Carry torchattacks as a wheel in .whl/ (see the device notes) for the CW peer.
set -uo pipefail
OUT="${OUT:-/tmp/ipguard-gpu}"
mkdir -p "$OUT/results"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
QUICK="${1:-}"
stage() { echo; echo "=== $(date +%T) $*"; }
status=0

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"

if ls .whl/*.whl >/dev/null 2>&1; then
  stage "wheels carried for the device image"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage "build (setup.py build_ext --inplace, FORCE_CUDA=1)"
FORCE_CUDA=1 timeout 300 python3 setup.py -q build_ext --inplace > "$OUT/results/build.log" 2>&1 || { tail -40 "$OUT/results/build.log"; echo "BUILD FAILED"; exit 1; }
python3 -c "import ipguard_fast, torch; assert ipguard_fast.has_extension(); print('extension loaded; CUDA kernel:', torch._C._dispatch_has_kernel_for_dispatch_key('ipguard::logit_gap_loss', 'CUDA'))"

stage "CUDA tests"
timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_ops_cuda.py tests/test_search_cuda.py \
  --junitxml="$OUT/results/cuda-tests.xml" || status=1

stage "ops microbenchmarks (CUDA: loss [65536, 1000], step [256, 3, 224, 224]; CPU too)"
timeout 180 python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_ops.py --benchmark-only \
  --benchmark-json="$OUT/results/ops-bench.json" --benchmark-columns=min,median,mean,rounds || status=1

if [ "$QUICK" != "quick" ]; then
  for model in resnet20 resnet50 vit_b_16; do
    stage "end-to-end benchmark: $model"
    timeout "${BENCH_TIMEOUT:-200}" python3 benchmarks/run.py --device cuda --models "$model" \
      --out "$OUT/results" --name "h200-$model" --cache-dir /tmp/ipguard-bench-cache ${BENCH_ARGS:-} || status=1
  done
fi

stage "pack"
tar -czf "$OUT/results.tar.gz" -C "$OUT" results
ls -la "$OUT/results"
echo "gpu_check status: $status"
exit $status
