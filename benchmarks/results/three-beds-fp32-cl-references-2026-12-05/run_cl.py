"""three_beds.py with protect's references trained fp32-cl (channels_last conv weights,
float32) instead of float32 contiguous: only the references (plan_costs._PRECISION), the
owners and the beds' suspects train as in the base run."""
import runpy, sys
import ipguard_fast.selection.plan_costs as plan_costs
plan_costs._PRECISION = "fp32-cl"
sys.argv = ["benchmarks/three_beds.py", *sys.argv[1:]]
runpy.run_path("benchmarks/three_beds.py", run_name="__main__")
