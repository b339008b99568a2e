#!/usr/bin/env bash
# The GPU check, run on the lent H200 (its own torch and Python) through the device tool:
#   build the extension there, run every CUDA test, time the ops, run the side-by-side
#   benchmark; everything lands under $OUT (one log, one tarball of raw results).
# Usage (from the repository root):   OUT=/tmp/gpu bash benchmarks/gpu_check.sh [quick]
# Carry torchattacks as a wheel in .whl/ (see the device notes) for the CW peer.
set -uo pipefail
OUT="${OUT:-/tmp/ipguard-gpu}"
RES="${RES:-/tmp/ipguard-gpu-results/results}"   # raw files; packed into $OUT/results.tar.gz at the end
mkdir -p "$OUT" "$RES"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
QUICK="${1:-}"
stage() { echo; echo "=== $(date +%T) $*"; }
status=0
pack() { tar -czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")"; }

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
FORCE_CUDA=1 timeout 300 python3 setup.py -q build_ext --inplace > "$RES/build.log" 2>&1 || { tail -40 "$RES/build.log"; echo "BUILD FAILED"; exit 1; }
python3 -c "import ipguard_fast, torch; assert ipguard_fast.has_extension(); print('extension loaded; CUDA kernel:', torch._C._dispatch_has_kernel_for_dispatch_key('ipguard::logit_gap_loss', 'CUDA'))"

stage "CUDA tests"
timeout 240 python3 -m pytest ${GPU_TEST_ARGS:-} -q -x -p no:cacheprovider tests/test_ops_cuda.py tests/test_search_cuda.py \
  --junitxml="$RES/cuda-tests.xml" || status=1

stage "ops microbenchmarks (CUDA: loss [65536, 1000], step [256, 3, 224, 224]; CPU too)"
timeout 180 python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_ops.py --benchmark-only \
  --benchmark-json="$RES/ops-bench.json" --benchmark-columns=min,median,mean,rounds || status=1

# One benchmark invocation per "model:extra args" spec (';'-separated), each with its own
# time limit, so one slow model cannot take the others' results with it.
# n > batch_size lets continuous batching amortise the long tail of slow candidates.
BENCH_SPECS="${BENCH_SPECS:-resnet20:--batch-size 512;resnet50:-n 1024 --batch-size 256 --batched-peer-n 256 --peer-n 16;vit_b_16:-n 128 --batch-size 128 --max-steps 500 --peer-n 4 --batched-peer-n 64}"
if [ "$QUICK" != "quick" ]; then
  IFS=';' read -ra specs <<< "$BENCH_SPECS"
  for spec in "${specs[@]}"; do
    model="${spec%%:*}"; extra="${spec#*:}"
    stage "end-to-end benchmark: $model $extra"
    timeout "${BENCH_TIMEOUT:-200}" python3 benchmarks/run.py --device cuda --models "$model" $extra \
      --out "$RES" --name "h200-$model" --cache-dir /tmp/ipguard-bench-cache ${BENCH_ARGS:-} || status=1
    pack  # what is done survives a later stage running out of time
  done
fi

stage "pack"
pack
ls -la "$RES"
echo "gpu_check status: $status"
exit $status
