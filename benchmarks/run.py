"""End-to-end benchmark: the engine against its peers, side by side, in one run.

    python benchmarks/run.py --models digits_cnn resnet20 --n 256 --device cpu
    python benchmarks/run.py --quick --models digits_cnn          # seconds-long smoke (CI)

For each model (trained briefly on digits, weights cached; see models.py) every
method solves the same candidates -- (x0, i, j) from the engine's CandidateSource
with the same seed -- and every output is counted with the engine's float32
acceptance rule. Methods: the engine ("engine": extract_fingerprints, eager;
"engine-reference-ops": the same with IPGUARD_FAST_FORCE_REFERENCE=1, to show the
fused ops' effect; on CUDA also "engine-graph" and "engine-graph-bf16-cl"), and the
peers in benchmarks/peers/ (per_sample, eager_batched, torchattacks_cw). The engine
runs until n fingerprints are accepted; per_sample and torchattacks_cw run on the
first --peer-n candidates and eager_batched on the first --batched-peer-n (default
n), so the rates (accepted fingerprints per second) stay comparable.

Writes <out>/<machine>-<YYYY-MM-DD>.json (raw, with the command line), .md (tables)
and .png (chart). `main(argv)` is the entry point (also for `ipguard bench`).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import re
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import ipguard_fast
from ipguard_fast.search import extract_fingerprints, frozen
from ipguard_fast.search.acceptance import accept
from ipguard_fast.search.api import AMP_DTYPES
from ipguard_fast.search.candidates import CandidateSource
from ipguard_fast.search.slots import Slots, bucket_sizes
from ipguard_fast.search.step import SearchStep

from benchmarks import models as bench_models
from benchmarks import peers, report
from benchmarks.peers import torchattacks_cw

HERE = Path(__file__).resolve().parent
ENGINE_MODES = {  # name: (extract_fingerprints options, IPGUARD_FAST_FORCE_REFERENCE, CUDA only)
    "engine": (dict(amp=None, cuda_graph=False, channels_last=False), False, False),
    "engine-reference-ops": (dict(amp=None, cuda_graph=False, channels_last=False), True, False),
    "engine-graph": (dict(amp=None, cuda_graph=True, channels_last=False), False, True),
    "engine-graph-bf16-cl": (dict(amp="bf16", cuda_graph=True, channels_last=True), False, True),
}
METHODS = tuple(ENGINE_MODES) + peers.PEERS
DEFAULTS = dict(n=256, k=10.0, max_steps=1000, batch_size=256, reps=10)
QUICK = dict(n=8, peer_n=4, k=3.0, max_steps=100, batch_size=8, reps=3, train_epochs=1)


# ---------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------

def timed(fn, device) -> float:
    """Seconds one call of fn takes on the device (CUDA events, or perf_counter on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_floor(model, input_shape, batch, num_classes, device, amp_dtype=None, channels_last=False):
    """The bare model's forward + torch.autograd.grad w.r.t. the input (weights frozen by the caller)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(1)).to(device)
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    g = torch.randn(batch, num_classes, generator=torch.Generator().manual_seed(2)).to(device)

    def floor():
        with torch.enable_grad():
            with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()):
                logits = model(x)
            torch.autograd.grad(logits, x, g.to(logits.dtype))

    return floor


def median_floor(model, input_shape, batch, num_classes, device, reps, warmup=2, **kw) -> float:
    with frozen(model):
        floor = make_floor(model, input_shape, batch, num_classes, device, **kw)
        for _ in range(warmup):
            floor()
        return statistics.median(timed(floor, device) for _ in range(reps))


def _malloc_in_use():
    """glibc's bytes in use (mallinfo2: arena chunks in use + mmapped blocks), or None."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = Mallinfo2

    def in_use() -> int:
        info = fn()
        return info.uordblks + info.hblkhd

    return in_use


class PeakMemory:
    """Peak memory above the level at entry. CUDA: torch.cuda.max_memory_allocated. CPU:
    bytes malloc'd (glibc mallinfo2; PyTorch's CPU tensors come from malloc), else the
    resident set size, sampled every 5 ms by a thread (ru_maxrss is a process-lifetime
    high-water mark, useless for one method; RSS keeps freed heap, so later methods
    would read 0)."""

    _in_use = None

    def __init__(self, device):
        self.device = device
        self.bytes = None
        if device.type == "cuda":
            self.kind = "torch.cuda.max_memory_allocated above the allocation at the method's start"
            return
        if PeakMemory._in_use is None:
            PeakMemory._in_use = _malloc_in_use() or False
        if PeakMemory._in_use:
            self.kind = ("CPU: peak bytes malloc'd (glibc mallinfo2, sampled every 5 ms) above the level at "
                         "the method's start")
            self._read = PeakMemory._in_use
        else:
            self.kind = "CPU: peak resident set size (sampled every 5 ms) above its value at the method's start"
            self._read = self._rss

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._read())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = self._read()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.bytes = max(self._peak, self._read()) - self._base
        return False

    def record(self) -> dict:
        return {"bytes": self.bytes, "kind": self.kind}


@contextlib.contextmanager
def env(name: str, value: str | None):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def step_stats(steps: torch.Tensor) -> dict | None:
    if steps.numel() == 0:
        return None
    s = steps.double()
    return {"mean": float(s.mean()), "median": float(s.median()), "p95": float(torch.quantile(s, 0.95)),
            "max": float(s.max())}


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as lines:
        for line in lines:
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "hostname": platform.node(), "device": str(device), "compiled_ops": ipguard_fast.has_extension(),
            "ipguard_fast": ipguard_fast.__version__}
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        # The search (engine and peers alike) runs with these; acceptance always turns TF32 off.
        info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


# ---------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------

def engine_step_time(model, source, input_shape, num_classes, args, device, options, reps, warmup=2):
    """Median time of one SearchStep on full slots, interleaved with the floor at the same
    batch, dtype and layout (interleaving keeps the ratio honest on a noisy machine).
    Also the warm-up of the end-to-end run that follows."""
    amp_dtype = AMP_DTYPES[options["amp"]]
    cl = options["channels_last"] and len(input_shape) == 3
    B = args.batch_size
    with frozen(model):
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        slots = Slots(B, input_shape, device, channels_last=cl)
        idx = list(range(B))
        x0, i, j = source.make(idx)
        slots.load(idx, idx, x0, i, j)
        step = SearchStep(model, slots, k=args.k, lr=args.lr, max_steps=args.max_steps, lo=0.0, hi=1.0,
                          amp_dtype=amp_dtype, cuda_graph=options["cuda_graph"])
        floor = make_floor(model, input_shape, B, num_classes, device, amp_dtype, cl)
        for _ in range(warmup):
            step()
            floor()
        # The search shrinks to these batch sizes at its end: build their kernels (oneDNN
        # primitives, cuDNN plans) now, so the first method timed does not pay for them.
        for b in bucket_sizes(B)[:-1]:
            make_floor(model, input_shape, b, num_classes, device, amp_dtype, cl)()
        slots.load(idx, idx, x0, i, j)  # fresh candidates: every slot active while timed
        step_t, floor_t = [], []
        for _ in range(reps):
            step_t.append(timed(step, device))
            floor_t.append(timed(floor, device))
        active = float(slots.active.float().mean())
    layout = {"batch": B, "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
              "layout": "channels_last" if cl else "contiguous", "reps": reps}
    return ({"median_s": statistics.median(step_t), "times_s": step_t, "active_share_at_end": active, **layout},
            {"median_s": statistics.median(floor_t), "times_s": floor_t, **layout})


def run_engine(mode, bm, source, args, device) -> dict:
    options, reference, _ = ENGINE_MODES[mode]
    model = bm.model
    with env("IPGUARD_FAST_FORCE_REFERENCE", "1" if reference else None):
        step, floor = engine_step_time(model, source, bm.input_shape, bm.num_classes, args, device, options,
                                       args.reps)
        with PeakMemory(device) as mem:
            cpu_start, start = time.process_time(), time.perf_counter()
            fps = extract_fingerprints(model, args.n, k=args.k, input_shape=bm.input_shape, lr=args.lr,
                                       max_steps=args.max_steps, batch_size=args.batch_size, seed=args.seed,
                                       device=device, progress=False, **options)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start
    model.to(memory_format=torch.contiguous_format)  # extract_fingerprints leaves channels_last on
    s = fps.stats
    finished = s.accepted + s.rejected + s.exhausted
    return {
        "kind": "engine", "status": "ok", "options": {**options, "force_reference_ops": reference},
        "candidates": s.tried, "finished": finished, "accepted": len(fps), "accepted_total": s.accepted,
        "rejected_float32": s.rejected, "exhausted": s.exhausted,
        "acceptance_share": s.accepted / finished if finished else None,
        "rejected_share": s.rejected / finished if finished else None,
        "seconds": seconds, "fps_per_s": len(fps) / seconds, "process_cpu_seconds": cpu_seconds,
        "steps_per_accepted": step_stats(fps.steps),
        "steps_run": s.steps_run, "slot_steps": s.slot_steps, "harvests": s.harvests,
        "batch_sizes": {str(b): c for b, c in sorted(s.batch_sizes.items())},
        "seconds_per_slot_step": seconds / s.slot_steps if s.slot_steps else None,
        "step": step, "floor": floor, "step_over_floor": step["median_s"] / floor["median_s"],
        "peak_memory": mem.record(),
    }


def engine_step_only(mode, bm, source, args, device) -> dict:
    """Per-step time and floor without the search (random weights: the search would not converge)."""
    options, reference, _ = ENGINE_MODES[mode]
    with env("IPGUARD_FAST_FORCE_REFERENCE", "1" if reference else None):
        step, floor = engine_step_time(bm.model, source, bm.input_shape, bm.num_classes, args, device, options,
                                       args.reps)
    bm.model.to(memory_format=torch.contiguous_format)
    return {"kind": "engine", "status": "ok", "options": {**options, "force_reference_ops": reference},
            "candidates": 0, "accepted": 0, "step": step, "floor": floor,
            "step_over_floor": step["median_s"] / floor["median_s"]}


def run_peer(name, bm, source, args, device) -> dict:
    if name == "torchattacks_cw" and not torchattacks_cw.available():
        return {"kind": "peer", "status": "skipped",
                "note": "torchattacks is not installed (pip install torchattacks, or the [bench] extra)"}
    run = peers.get(name)
    m = args.batched_peer_n if name == "eager_batched" else args.peer_n
    extra = {} if name == "per_sample" else {"batch_size": args.batch_size}
    if name == "torchattacks_cw":
        extra["c"] = args.cw_c
    model = bm.model
    x0, i, j = source.make(list(range(m)))
    # Warm-up on a few candidates at the batch the peer will run (not timed).
    warm = 1 if name == "per_sample" else min(m, args.batch_size)
    run(model, x0[:warm], i[:warm], j[:warm], k=args.k, lr=args.lr, max_steps=2, device=device, **extra)
    with PeakMemory(device) as mem:
        cpu_start = time.process_time()
        res = run(model, x0, i, j, k=args.k, lr=args.lr, max_steps=args.max_steps, device=device, **extra)
        cpu_seconds = time.process_time() - cpu_start
    ok, margins = accept(model, res.images.to(device), i, j, args.k)
    ok, labelled_j = ok.cpu(), (margins > 0).cpu()  # margin > 0: the model labels the output j
    accepted = int(ok.sum())
    failed = int((res.converged & ~ok).sum())
    floor_s = median_floor(model, bm.input_shape, res.batch_size, bm.num_classes, device, args.reps)
    times = res.step_seconds
    step_s = statistics.median(times) if times else None
    return {
        "kind": "peer", "status": "ok", "options": extra, "note": res.notes,
        "candidates": m, "finished": m, "accepted": accepted, "rejected_float32": failed,
        "exhausted": int((~res.converged).sum()),
        "acceptance_share": accepted / m, "rejected_share": failed / m,
        "labelled_j_share": float(labelled_j.float().mean()),
        "seconds": res.seconds, "fps_per_s": accepted / res.seconds, "process_cpu_seconds": cpu_seconds,
        "steps_per_accepted": step_stats(res.steps[ok]),
        "steps_run": res.steps_run,
        "step": {"median_s": step_s, "batch": res.batch_size, "dtype": "float32", "layout": "contiguous",
                 "timed_steps": len(times)},
        "floor": {"median_s": floor_s, "batch": res.batch_size, "reps": args.reps},
        "step_over_floor": step_s / floor_s if step_s else None,
        "peak_memory": mem.record(),
    }


def ratios_and_targets(methods: dict) -> tuple[dict, list]:
    ratios = {}
    for e in (m for m, r in methods.items() if r.get("kind") == "engine" and r.get("status") == "ok"):
        ratios[e] = {}
        for p in (m for m, r in methods.items() if r.get("kind") == "peer" and r.get("status") == "ok"):
            pf = methods[p]["fps_per_s"]
            ratios[e][p] = methods[e]["fps_per_s"] / pf if pf else math.inf
    targets = []
    if "engine" in ratios:
        for p, bound in (("per_sample", 5.0), ("eager_batched", 1.5)):
            if p in ratios["engine"]:
                v = ratios["engine"][p]
                targets.append({"name": f"engine >= {bound}x {p} (accepted fps/s)", "value": v, "met": v >= bound})
        v = methods["engine"]["step_over_floor"]
        targets.append({"name": f"engine step <= 1.10x floor at batch {methods['engine']['step']['batch']}",
                        "value": v, "met": v <= 1.10})
    return ratios, targets


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="ipguard bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["digits_cnn", "resnet20"], choices=bench_models.MODEL_NAMES)
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="default: all (the CUDA-only engine modes only on CUDA)")
    p.add_argument("--n", type=int, help=f"fingerprints the engine extracts (default {DEFAULTS['n']})")
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
    p.add_argument("--random-weights", action="store_true",
                   help="random weights: per-step timings and floors only (the search does not converge)")
    p.add_argument("--weights", nargs="*", default=[], metavar="NAME=PATH", help="weights files instead of training")
    p.add_argument("--cache-dir", default=None, help=f"trained-weight cache (default {bench_models.DEFAULT_CACHE})")
    p.add_argument("--train-epochs", type=int, default=None, help="override the training recipe's epochs")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI), defaults " +
                   ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--out", default=str(HERE / "results"))
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
    wanted = args.methods or list(METHODS)
    return [m for m in wanted if not (m in ENGINE_MODES and ENGINE_MODES[m][2] and device.type != "cuda")]


def bench_model(name, args, device, weights, save=lambda entry: None) -> dict:
    """All selected methods on one model; save(entry) after each, so a run cut short keeps its results."""
    if args.random_weights:
        bm = bench_models.random_model(name, device, seed=args.seed)
    else:
        bm = bench_models.trained_model(name, device, args.cache_dir, weights=weights.get(name), seed=args.seed,
                                        epochs=args.train_epochs)
    print(f"[bench] {name}: {bm.weights} weights, test accuracy {bm.test_accuracy}", flush=True)
    model = bm.model.to(device)
    source = CandidateSource(model, bm.input_shape, bm.num_classes, "uniform", "random", args.seed, 0.0, 1.0,
                             device)
    methods, notes = {}, []
    entry = {"model": bm.describe(), "methods": methods, "ratios": {}, "targets": [], "notes": notes}
    for method in selected_methods(args, device):
        t = time.perf_counter()
        if method in ENGINE_MODES:
            methods[method] = (engine_step_only if args.random_weights else run_engine)(method, bm, source, args,
                                                                                        device)
        elif args.random_weights:
            continue  # the peers have no step timing apart from their search
        else:
            methods[method] = run_peer(method, bm, source, args, device)
        r = methods[method]
        with contextlib.suppress(OSError):
            r["loadavg_after"] = list(os.getloadavg())  # how busy the (shared) machine was
        if r.get("status") == "ok":
            print(f"[bench] {name} {method}: {r.get('accepted')}/{r.get('candidates')} accepted, "
                  f"{r.get('fps_per_s', 0) or 0:.3g} fps/s, step {1e3 * (r['step']['median_s'] or 0):.3g} ms "
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
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    weights = dict(w.split("=", 1) for w in args.weights)
    machine = machine_info(device)
    machine_slug = f"{device.type}-{slug(machine.get('gpu') or machine['cpu'])}"
    date = datetime.date.today().isoformat()
    results = {
        "command": "python benchmarks/run.py " + shlex.join(argv) if argv else "python benchmarks/run.py",
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
