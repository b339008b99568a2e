#!/bin/bash
# $1: beds, $2: tag
cd /work/main
export OMP_NUM_THREADS=1
B=$1; T=$2
python benchmarks/three_beds.py --out /tmp/exp/s68/c3 --beds $B --seeds 6,7,8 --threads 1 --held-out-mistakes --cache /tmp/exp/s68/cache-$T --suspect-cache /tmp/exp/s68/susp-$T > /tmp/exp/s68/c3-$T.log 2>&1
python benchmarks/three_beds.py --out /tmp/exp/s68/c6 --beds $B --seeds 6,7,8 --threads 1 --held-out-mistakes --cache /tmp/exp/s68/cache-$T --suspect-cache /tmp/exp/s68/susp-$T --refine negative_cap=6 > /tmp/exp/s68/c6-$T.log 2>&1
echo finished >> /tmp/exp/s68/c6-$T.log
