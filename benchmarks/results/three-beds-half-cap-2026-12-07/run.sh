#!/bin/bash
# $1: beds, $2: tag
cd /tmp/exp/code
PY=/work/main/.venv/bin/python
export PYTHONPATH=/tmp/exp/code
B=$1; T=$2
$PY benchmarks/three_beds.py --out /tmp/exp/half/$T --beds $B --seeds 0,1,2 --threads 1 --held-out-mistakes --cache /tmp/exp/C-$T --suspect-cache /tmp/exp/S-$T > /tmp/exp/half-$T.log 2>&1
echo "rc=$? $(date)" >> /tmp/exp/half-$T.log
$PY benchmarks/three_beds.py --out /tmp/exp/plain/$T --beds $B --seeds 0,1,2 --threads 1 --held-out-mistakes --cache /tmp/exp/C-$T --suspect-cache /tmp/exp/S-$T --label-share 10 > /tmp/exp/plain-$T.log 2>&1
echo "rc=$? $(date)" >> /tmp/exp/plain-$T.log
