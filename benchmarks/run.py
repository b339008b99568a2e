"""The end-to-end benchmark from a source checkout: the same as `ipguard bench`.

    python benchmarks/run.py --models digits_cnn resnet20 --n 256 --device cpu

The runner lives in the package (ipguard_fast/bench/), so an installed wheel has it too.
"""
import sys

from ipguard_fast.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
