#!/usr/bin/env bash
# Before (main at 52c2203, pragma-built AVX2 kernel) and after (this branch) of
# benchmarks/bench_loss_cpu.py, interleaved rep by rep on the same machine.
# BEFORE/AFTER: the two checkouts, each with its own ipguard_fast/_C*.so built in place.
set -euo pipefail
BEFORE=${BEFORE:-/work/main}
AFTER=${AFTER:-/work/wt-native}
OUT=${OUT:-$AFTER/benchmarks/results/avx2-dispatch-2026-12-03}
bench() {  # tag checkout dtype impls... (env vars set by the caller pass through)
  local tag=$1 root=$2 dtype=$3; shift 3
  PYTHONPATH=$root python "$root/benchmarks/bench_loss_cpu.py" --runs 80 --dtype "$dtype" \
    --impls "$@" --label "$tag" --out "$OUT/$tag.json" | sed -n 1,2p
}
for rep in 1 2 3; do
  bench before-avx2-float32-$rep "$BEFORE" float32 compiled careful_eager
  bench after-avx2-float32-$rep "$AFTER" float32 compiled careful_eager
done
for rep in 1 2; do
  ATEN_CPU_CAPABILITY=default bench before-default-float32-$rep "$BEFORE" float32 compiled careful_eager
  IPGUARD_FAST_CPU_CAPABILITY=default bench after-default-float32-$rep "$AFTER" float32 compiled careful_eager
  for dtype in float64 float16 bfloat16; do
    bench before-avx2-$dtype-$rep "$BEFORE" $dtype compiled
    bench after-avx2-$dtype-$rep "$AFTER" $dtype compiled
  done
done
