#!/usr/bin/env bash
# protect()'s costs on the lent H200 (its own torch and Python), through the device tool:
#   build the extension there, run the CUDA tests, then benchmarks/protect_costs.py -- the
#   plan's unit costs and estimates for every row, the training step at fp32 against
#   bf16 + channels_last, and one budgeted protect() run. Everything lands under $OUT.
# Usage (repository root):   OUT=/tmp/gpu RUN_BUDGET=resnet20-50k:180 bash benchmarks/gpu_protect_costs.sh
set -uo pipefail
OUT="${OUT:-/tmp/ipguard-gpu}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_protect_costs.log") 2>&1
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stage() { echo; echo "=== $(date +%T) $*"; }
status=0

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0))"

stage "build (setup.py build_ext --inplace, FORCE_CUDA=1)"
FORCE_CUDA=1 timeout 240 python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; echo "BUILD FAILED"; status=1; }

stage "CUDA tests"
timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/test_ops_cuda.py tests/test_search_cuda.py tests/test_precision.py tests/test_spread.py \
  tests/test_refine.py \
  --junitxml="$OUT/cuda-tests.xml" 2>&1 | tail -15 || status=1

stage "unit costs and plans"
timeout "${COSTS_TIMEOUT:-240}" python3 benchmarks/protect_costs.py --device cuda \
  --rows "${ROWS:-digits,resnet20-50k,digits28-60k,resnet50-imagenet}" --out "$OUT/costs-cuda.json" || status=1

if [ -n "${RUN_BUDGET:-}" ]; then
  stage "a budgeted protect: $RUN_BUDGET"
  timeout "${RUN_TIMEOUT:-300}" python3 benchmarks/protect_costs.py --device cuda --rows digits \
    --run-budget "$RUN_BUDGET" --out "$OUT/run-cuda.json" || status=1
fi
echo "gpu_protect_costs status: $status"
exit $status
