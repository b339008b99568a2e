"""End-to-end benchmark: the engine against its peers, side by side, in one run.

    ipguard bench --models digits_cnn resnet20 -n 256 --device cpu
    ipguard bench --quick --models digits_cnn          # seconds-long smoke (CI)
    python benchmarks/run.py ...                       # the same, from a source checkout

For each model (trained briefly on digits, weights cached; see models.py) every
method solves the same candidates -- the engine's own, from the same seed -- and
every output is counted with the engine's float32 acceptance rule. Methods: the
engine ("engine": extract_fingerprints, eager; "engine-reference-ops": the same with
IPGUARD_FAST_FORCE_REFERENCE=1, to show the fused ops' effect; on CUDA also
"engine-graph" and "engine-graph-bf16-cl"; on request (--methods) the A/B modes
"engine-no-spares", the launch policy without spare candidates (ExtractConfig(spares=False)), and
"engine-completion", the completion-order result rule), and the peers in peers/ (per_sample,
eager_batched, torchattacks_cw). The engine runs until n fingerprints are accepted;
per_sample and torchattacks_cw run on the first --peer-n candidates and
eager_batched on the first --batched-peer-n (default n), so the rates (accepted
fingerprints per second) stay comparable.

Writes <out>/<machine>-<YYYY-MM-DD>.json (raw, with the command line), .md (tables)
and .png (chart). `main(argv)` is the entry point.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from .._validate import thread_count
from ..cli.common import OneLineParser, add_count_argument
from . import models as bench_models
from . import report
from .measure import PeakMemory, machine_info, slug
from .methods import DEFAULT_METHODS, ENGINE_MODES, METHODS, engine_step_only, ratios_and_targets, run_engine, run_peer
from .peers import torchattacks_cw

DEFAULTS = dict(n=256, k=10.0, max_steps=1000, batch_size=256, reps=10)
QUICK = dict(n=8, peer_n=4, k=3.0, max_steps=100, batch_size=8, reps=3, train_epochs=1)
DEFAULT_OUT = "benchmarks/results"


def parse_args(argv):
    p = OneLineParser(prog="ipguard bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["digits_cnn", "resnet20"], choices=bench_models.MODEL_NAMES)
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="default: all but engine-completion (the CUDA-only engine modes only on CUDA)")
    add_count_argument(p, None, f"fingerprints the engine extracts (default {DEFAULTS['n']})")
    p.add_argument("--peer-n", type=int,
                   help="candidates for per_sample and torchattacks_cw, a prefix of the engine's (default min(n, 64))")
    p.add_argument("--batched-peer-n", type=int, help="candidates for eager_batched (default n)")
    p.add_argument("--k", type=float, help=f"default {DEFAULTS['k']}")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, help=f"default {DEFAULTS['max_steps']}")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--reps", type=int, help=f"timed repetitions of a step and of the floor (default {DEFAULTS['reps']})")
    p.add_argument("--cw-c", type=float, default=torchattacks_cw.DEFAULT_C, help="torchattacks CW's c")
    p.add_argument("--best-floor", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the best the bare model can do (cudnn.benchmark, channels_last, bf16, "
                        "torch.compile, CUDA graphs) beside the engine's step (default: on CUDA only)")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights: per-step timings and floors only (the search does not converge)")
    p.add_argument("--weights", nargs="*", default=[], metavar="NAME=PATH", help="weights files instead of training")
    p.add_argument("--cache-dir", default=None, help=f"trained-weight cache (default {bench_models.DEFAULT_CACHE})")
    p.add_argument("--train-epochs", type=int, default=None, help="override the training recipe's epochs")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI), defaults " +
                   ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--name", default=None, help="output file stem (default <machine>-<YYYY-MM-DD>)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():  # explicit options win
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.peer_n = min(args.n, 64) if args.peer_n is None else args.peer_n
    args.batched_peer_n = args.n if args.batched_peer_n is None else args.batched_peer_n
    for key in ("n", "peer_n", "batched_peer_n", "max_steps", "batch_size", "reps"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be positive")
    return args


def selected_methods(args, device) -> list[str]:
    wanted = args.methods or list(DEFAULT_METHODS)
    return [m for m in wanted if not (m in ENGINE_MODES and ENGINE_MODES[m][2] and device.type != "cuda")]


def bench_model(name, args, device, weights, save=lambda entry: None) -> dict:
    """All selected methods on one model; save(entry) after each, so a run cut short keeps its results."""
    if args.random_weights:
        bm = bench_models.random_model(name, device, seed=args.seed)
    else:
        bm = bench_models.trained_model(name, device, args.cache_dir, weights=weights.get(name), seed=args.seed,
                                        epochs=args.train_epochs)
    print(f"[bench] {name}: {bm.weights} weights, test accuracy {bm.test_accuracy}", flush=True)
    bm.model.to(device)
    methods, notes = {}, []
    entry = {"model": bm.describe(), "methods": methods, "ratios": {}, "targets": [], "notes": notes}
    for method in selected_methods(args, device):
        t = time.perf_counter()
        if method in ENGINE_MODES:
            methods[method] = (engine_step_only if args.random_weights else run_engine)(method, bm, args, device)
        elif args.random_weights:
            continue  # the peers have no step timing apart from their search
        else:
            methods[method] = run_peer(method, bm, args, device)
        r = methods[method]
        with contextlib.suppress(OSError):
            r["loadavg_after"] = list(os.getloadavg())  # how busy the (shared) machine was
        if r.get("status") == "ok":
            print(f"[bench] {name} {method}: {r.get('accepted')}/{r.get('candidates')} accepted, "
                  f"{r.get('fingerprints_per_s', 0) or 0:.3g} fingerprints/s, step {1e3 * (r['step']['median_s'] or 0):.3g} ms "
                  f"(floor {1e3 * r['floor']['median_s']:.3g} ms) [{time.perf_counter() - t:.1f} s]", flush=True)
            if r.get("labelled_j_share", 0) > r.get("acceptance_share", 0):
                notes.append(f"{method}: the model labels {100 * r['labelled_j_share']:.1f}% of its outputs j, but "
                             f"only {100 * r['acceptance_share']:.1f}% pass acceptance (margin >= k with i the "
                             "runner-up)")
        else:
            notes.append(f"{method} {r['status']}: {r['note']}")
            print(f"[bench] {name} {method}: {r['status']} ({r['note']})", flush=True)
        if not args.random_weights:
            entry["ratios"], entry["targets"] = ratios_and_targets(methods)
        save(entry)
    return entry


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `ipguard bench -- --quick ...` passes the separator on
        argv = argv[1:]
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(thread_count("--threads", args.threads))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.best_floor is None:
        args.best_floor = device.type == "cuda"
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    weights = dict(w.split("=", 1) for w in args.weights)
    machine = machine_info(device)
    machine_slug = f"{device.type}-{slug(machine.get('gpu') or machine['cpu'])}"
    date = datetime.date.today().isoformat()
    results = {
        "command": "ipguard bench " + shlex.join(argv) if argv else "ipguard bench",
        "argv": argv, "date": date, "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine_slug": machine_slug, "machine": machine,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "weights")},
        "memory_kind": PeakMemory(device).kind,
        "models": {}, "notes": [],
    }
    if args.quick:
        results["notes"].append("--quick: a smoke run; its numbers are not a measurement")
    t0 = time.perf_counter()
    stem = args.name or f"{machine_slug}-{date}"

    def save(name, entry, png=False):  # after every method: a run cut short keeps what it measured
        results["models"][name] = entry
        results["total_seconds"] = time.perf_counter() - t0
        with contextlib.suppress(OSError):
            results["machine"]["loadavg_at_end"] = list(os.getloadavg())
        return report.write(results, Path(args.out), stem, png=png)

    for name in args.models:
        entry = bench_model(name, args, device, weights, save=lambda e, name=name: save(name, e))
    paths = save(name, entry, png=True)
    print(f"[bench] wrote {', '.join(str(p) for p in paths.values())} in {results['total_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
