"""The methods the benchmark compares: the engine in each mode, and each peer, run on the
same candidates and counted with the same float32 acceptance rule; then the ratios
between them and the targets they are held to."""
from __future__ import annotations

import math
import statistics
import time

import torch

from ..modules import frozen
from ..search import AMP_DTYPES, ExtractConfig, accept, run_extraction
from ..search.instruments import FullBatchStep, bucket_sizes, candidate_batch
from . import peers
from .floors import best_floor
from .measure import PeakMemory, env, make_floor, median_floor, step_stats, timed
from .peers import torchattacks_cw

__all__ = ["DEFAULT_METHODS", "ENGINE_MODES", "METHODS", "engine_step_only", "ratios_and_targets", "run_engine", "run_peer"]

ENGINE_MODES = {  # name: (ExtractConfig options, environment for the run, CUDA only)
    "engine": (dict(amp=None, cuda_graph=False, channels_last=False), {}, False),
    "engine-reference-ops": (dict(amp=None, cuda_graph=False, channels_last=False),
                             {"IPGUARD_FAST_FORCE_REFERENCE": "1"}, False),
    "engine-graph": (dict(amp=None, cuda_graph=True, channels_last=False), {}, True),
    "engine-graph-bf16-cl": (dict(amp="bf16", cuda_graph=True, channels_last=True), {}, True),
    # A/B modes, opt-in: the launch policy without spares, and the other result rule (not
    # batch-size-independent).
    "engine-no-spares": (dict(amp=None, cuda_graph=False, channels_last=False, spares=False), {}, False),
    "engine-completion": (dict(amp=None, cuda_graph=False, channels_last=False, result_rule="completion"),
                          {}, False),
}
METHODS = tuple(ENGINE_MODES) + peers.PEERS
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ("engine-no-spares", "engine-completion"))


def engine_step_time(bm, args, device, options, reps, warmup=2):
    """Median time of one engine step on full slots, interleaved with the floor at the same
    batch, dtype and layout (interleaving keeps the ratio honest on a noisy machine).
    Also the warm-up of the end-to-end run that follows."""
    model, input_shape, B = bm.model, bm.input_shape, args.batch_size
    config = ExtractConfig(n=B, k=args.k, input_shape=input_shape, lr=args.lr, max_steps=args.max_steps,
                           batch_size=B, amp=options["amp"], cuda_graph=options["cuda_graph"],
                           channels_last=options["channels_last"])
    amp_dtype = AMP_DTYPES[options["amp"]]
    cl = options["channels_last"] and len(input_shape) == 3
    with frozen(model):
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        x0, i, j = candidate_batch(model, input_shape, bm.num_classes, range(B), device=device, seed=args.seed)
        step = FullBatchStep(model, config, device, x0, i, j)
        floor = make_floor(model, input_shape, B, bm.num_classes, device, amp_dtype, cl)
        for _ in range(warmup):
            step()
            floor()
        # The search shrinks to these batch sizes at its end: build their kernels (oneDNN
        # primitives, cuDNN plans) now, so the first method timed does not pay for them.
        for b in bucket_sizes(B)[:-1]:
            make_floor(model, input_shape, b, bm.num_classes, device, amp_dtype, cl)()
        step.reload()  # fresh candidates: every slot active while timed
        step_t, floor_t = [], []
        for _ in range(reps):
            step_t.append(timed(step, device))
            floor_t.append(timed(floor, device))
        active = step.active_share
    layout = {"batch": B, "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
              "layout": "channels_last" if cl else "contiguous", "reps": reps}
    return ({"median_s": statistics.median(step_t), "times_s": step_t, "active_share_at_end": active, **layout},
            {"median_s": statistics.median(floor_t), "times_s": floor_t, **layout})


def run_engine(mode, bm, args, device) -> dict:
    options, variables, _ = ENGINE_MODES[mode]
    model = bm.model
    with env(variables):
        step, floor = engine_step_time(bm, args, device, options, args.reps)
        with PeakMemory(device) as mem:
            cpu_start, start = time.process_time(), time.perf_counter()
            config = ExtractConfig(n=args.n, k=args.k, input_shape=bm.input_shape, lr=args.lr,
                                   max_steps=args.max_steps, batch_size=args.batch_size, seed=args.seed, **options)
            extraction = run_extraction(model, config, device=device, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start
    model.to(memory_format=torch.contiguous_format)  # engine_step_time switched it for channels_last modes
    fps, s = extraction.fingerprints, extraction.stats
    finished = s.accepted + s.rejected + s.exhausted
    result = {
        "kind": "engine", "status": "ok", "options": {**options, "environment": variables},
        "candidates": s.tried, "finished": finished, "accepted": len(fps), "accepted_total": s.accepted,
        "rejected_float32": s.rejected, "exhausted": s.exhausted,
        "acceptance_share": s.accepted / finished if finished else None,
        "rejected_share": s.rejected / finished if finished else None,
        "seconds": seconds, "fingerprints_per_s": len(fps) / seconds, "process_cpu_seconds": cpu_seconds,
        "steps_per_accepted": step_stats(fps.steps),
        "steps_run": s.steps_run, "slot_steps": s.slot_steps, "harvests": s.harvests,
        "batch_sizes": {str(b): c for b, c in sorted(s.batch_sizes.items())},
        "batch_seconds": {str(b): t for b, t in sorted(s.batch_seconds.items())},
        # The straggler tail: the share of the search spent at batch <= capacity / 8.
        "tail_share": tail_share(s.batch_seconds, args.batch_size),
        # At the tail, nothing may cost more than the model: a step there (harvest included)
        # against the bare model's forward + input gradient at the same batch.
        "tail_steps": tail_steps(model, bm, s, args, device),
        "seconds_per_slot_step": seconds / s.slot_steps if s.slot_steps else None,
        "step": step, "floor": floor, "step_over_floor": step["median_s"] / floor["median_s"],
        "peak_memory": mem.record(),
    }
    if mode == "engine" and getattr(args, "best_floor", False):
        # Is the floor itself near what the model can do? The best of the careful variants.
        result["best_floor"] = best_floor(model, bm.input_shape, args.batch_size, bm.num_classes, device, args.reps)
        if result["best_floor"]["best_s"]:
            result["step_over_best_floor"] = step["median_s"] / result["best_floor"]["best_s"]
    return result


def engine_step_only(mode, bm, args, device) -> dict:
    """Per-step time and floor without the search (random weights: the search would not converge)."""
    options, variables, _ = ENGINE_MODES[mode]
    with env(variables):
        step, floor = engine_step_time(bm, args, device, options, args.reps)
    bm.model.to(memory_format=torch.contiguous_format)
    return {"kind": "engine", "status": "ok", "options": {**options, "environment": variables},
            "candidates": 0, "accepted": 0, "step": step, "floor": floor,
            "step_over_floor": step["median_s"] / floor["median_s"]}


def run_peer(name, bm, args, device) -> dict:
    if name == "torchattacks_cw" and not torchattacks_cw.available():
        return {"kind": "peer", "status": "skipped",
                "note": "torchattacks is not installed (pip install torchattacks, or the [bench] extra)"}
    run = peers.get(name)
    m = args.batched_peer_n if name == "eager_batched" else args.peer_n
    extra = {} if name == "per_sample" else {"batch_size": args.batch_size}
    if name == "torchattacks_cw":
        extra["c"] = args.cw_c
    model = bm.model
    x0, i, j = candidate_batch(model, bm.input_shape, bm.num_classes, range(m), device=device, seed=args.seed)
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
        "seconds": res.seconds, "fingerprints_per_s": accepted / res.seconds, "process_cpu_seconds": cpu_seconds,
        "steps_per_accepted": step_stats(res.steps[ok]),
        "steps_run": res.steps_run,
        "step": {"median_s": step_s, "batch": res.batch_size, "dtype": "float32", "layout": "contiguous",
                 "timed_steps": len(times)},
        "floor": {"median_s": floor_s, "batch": res.batch_size, "reps": args.reps},
        "step_over_floor": step_s / floor_s if step_s else None,
        "peak_memory": mem.record(),
    }


def tail_steps(model, bm, stats, args, device) -> dict:
    """{batch: {"step_s", "floor_s", "ratio"}} for the tail's batch sizes (<= capacity / 8)."""
    out = {}
    for b in sorted(stats.batch_steps):
        if b > max(1, args.batch_size // 8) or not stats.batch_steps[b]:
            continue
        step = stats.batch_seconds.get(b, 0.0) / stats.batch_steps[b]
        floor = median_floor(model, bm.input_shape, b, bm.num_classes, device, args.reps)
        out[str(b)] = {"steps": stats.batch_steps[b], "step_s": step, "floor_s": floor,
                       "ratio": step / floor if floor else None}
    return out


def tail_share(batch_seconds: dict, capacity: int) -> float | None:
    """Share of the stepping time spent at batch <= capacity / 8 (None before any step)."""
    total = sum(batch_seconds.values())
    if not total:
        return None
    return sum(t for b, t in batch_seconds.items() if b <= capacity / 8) / total


def ratios_and_targets(methods: dict) -> tuple[dict, list]:
    ratios = {}
    for e in (m for m, r in methods.items() if r.get("kind") == "engine" and r.get("status") == "ok"):
        ratios[e] = {}
        for p in (m for m, r in methods.items() if r.get("kind") == "peer" and r.get("status") == "ok"):
            pf = methods[p]["fingerprints_per_s"]
            ratios[e][p] = methods[e]["fingerprints_per_s"] / pf if pf else math.inf
    targets = []
    if "engine" in ratios:
        for p, bound in (("per_sample", 5.0), ("eager_batched", 1.5)):
            if p in ratios["engine"]:
                v = ratios["engine"][p]
                targets.append({"name": f"engine >= {bound}x {p} (accepted fingerprints/s)", "value": v, "met": v >= bound})
        v = methods["engine"]["step_over_floor"]
        targets.append({"name": f"engine step <= 1.10x floor at batch {methods['engine']['step']['batch']}",
                        "value": v, "met": v <= 1.10})
        v = methods["engine"].get("tail_share")
        if v is not None:
            targets.append({"name": "engine time at batch <= capacity/8 under 15%", "value": v, "met": v < 0.15})
    return ratios, targets


