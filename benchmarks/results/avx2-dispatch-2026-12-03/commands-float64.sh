#!/usr/bin/env bash
# A second float64 pass (the first, in commands.sh, ran at load average 6 on 2 cores),
# plus each side's instruction count in its AVX2 kernel (callgrind, 3 calls, 1 thread).
set -euo pipefail
BEFORE=${BEFORE:-/work/main}
AFTER=${AFTER:-/work/wt-native}
OUT=${OUT:-$AFTER/benchmarks/results/avx2-dispatch-2026-12-03}
for rep in 3 4 5; do
  for side in before after; do
    root=$BEFORE; [ $side = after ] && root=$AFTER
    PYTHONPATH=$root python "$root/benchmarks/bench_loss_cpu.py" --runs 150 --threads 1 --dtype float64 \
      --impls compiled --label "$side-avx2-float64-$rep" --out "$OUT/$side-avx2-float64-$rep.json" | sed -n 1p
  done
done
# Instruction counts (not run by default: about 4 minutes each):
#   PYTHONPATH=<root> valgrind --tool=callgrind --collect-atstart=no '--toggle-collect=ipguard::cpu_avx2::*' \
#     python benchmarks/results/avx2-dispatch-2026-12-03/callgrind_loop.py float64 3
