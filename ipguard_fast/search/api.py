"""IPGuard's fingerprint extraction from a caller's model: extract_fingerprints and run_extraction.

run_extraction takes the settings as one ExtractConfig and returns an Extraction (the
FingerprintSet and the engine's SearchStats); extract_fingerprints is its keyword front
end and returns the FingerprintSet alone. Around the engine this module does what
depends on the caller's model: checks it (one probe forward), freezes it and moves it to
the search's device and layout for the duration, and reads seed images.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .._errors import ran_out_of_memory
from .._files import short_error
from .._progress import progress_bar
from .._validate import ArgumentError, image_shape
from .._version import __version__
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..modules import channels_last, frozen, module_device
from .candidates import CandidateSource
from .checkpoint import load_checkpoint, save_checkpoint, verify_resumed
from .config import ExtractConfig
from .distributed import communicator
from .engine import SearchEngine, SearchStats

__all__ = ["Extraction", "IncompleteFingerprintsWarning", "compute_device", "extract_fingerprints", "float32_mismatch",
           "probe_classifier", "run_extraction", "warn_if_incomplete"]


class IncompleteFingerprintsWarning(UserWarning):
    """Fewer fingerprints than requested were accepted within max_candidates."""


@dataclass(frozen=True)
class Extraction:
    """What run_extraction returns: the fingerprints, and what the engine did to find them.

    The statistics are a report on the run (timings, batch sizes): they are not part of the
    fingerprint set and are not saved with it; the file's metadata keeps the counts that
    describe the result (candidates_tried, rejected_float32, ...)."""

    fingerprints: FingerprintSet
    stats: SearchStats


def extract_fingerprints(model: torch.nn.Module, n: int, *, k: float, input_shape: Sequence[int],
                         num_classes: int | None = None, init="uniform", labels: str = "random",
                         lr: float = 0.01, max_steps: int = 1000, max_candidates: int | None = None,
                         batch_size: int | str = 256, seed: int = 0, device=None, progress: bool = True,
                         check_every: int | None = None, amp: str | None = None,
                         cuda_graph: bool | None = None, channels_last: bool = False,
                         compile_model: bool = False, checkpoint=None, checkpoint_every: float = 30.0,
                         lo: float = 0.0, hi: float = 1.0, result_rule: str = "index",
                         spares: bool = True) -> FingerprintSet:
    """Find n fingerprints of `model`: inputs it labels j with margin >= k over i, i the runner-up.

    model: any classifier on [B, *input_shape] pixels in [lo, hi] returning logits
    (wrap normalisation with ipguard_fast.Normalized). The model is frozen for the
    search (eval, no parameter gradients) and left exactly as it was afterwards
    (modes, gradient flags, layout, device), also when the call fails.

    Candidates start from uniform noise (init="uniform") or from seed images (a
    tensor or DataLoader; with fewer images than candidates, the starts past the
    images are jittered copies, so no two candidates start at the same point and
    meta["seed_images"] says how many there were); labels are "random" (i != j uniform), "predicted" (i =
    the model's label at the start, j random) or "least_likely" (i predicted, j
    least likely). Each is searched with per-sample Adam (lr) for at most
    max_steps steps on batch_size slots with continuous refill, and accepted only
    if a float32 forward at its final point gives loss 0 and label j. Failures
    are replaced until n are accepted or max_candidates (default 10 n) were
    tried; then the set holds what was accepted, `.complete` is False and an
    IncompleteFingerprintsWarning is raised.

    checkpoint: a file path; finished candidates are saved there every
    checkpoint_every seconds and on Ctrl-C, and a later call with the same
    settings resumes from it (the result is the same as an uninterrupted run).
    The caller removes it when done (the CLI does).

    Under torchrun (an initialised process group with several ranks) the ranks
    share the candidate stream and every rank returns the same set: the one a
    single process finds, whatever the number of ranks.

    result_rule: "index" (default) returns the first n accepted candidates by candidate
    index, the same set for any batch size, device or number of ranks; "completion"
    returns the first n accepted in the order they finished, which ends the search
    sooner (no wait for slow low-index candidates) but depends on the batch size and
    the schedule.

    Performance options: check_every (steps between harvests, the only host
    syncs; default 1 on CPU, where nothing waits, and 8 on CUDA), amp ("bf16" or
    "fp16" autocast for the search; acceptance stays float32), cuda_graph
    (default: on for CUDA), channels_last, compile_model (torch.compile the
    model for the search), batch_size="auto" (start large, halve on
    out-of-memory, continuing every candidate where it was), spares=False (launch no
    spare candidates ahead of failures; the benchmark's baseline, same result).

    A keyword front end: it builds the ExtractConfig and calls run_extraction, which also
    returns the engine's statistics.
    """
    config = ExtractConfig(n=n, k=k, input_shape=input_shape, num_classes=num_classes, labels=labels, lr=lr,
                           max_steps=max_steps, max_candidates=max_candidates, batch_size=batch_size, seed=seed,
                           check_every=check_every, amp=amp, cuda_graph=cuda_graph, channels_last=channels_last,
                           compile_model=compile_model, checkpoint_every=checkpoint_every, lo=lo, hi=hi,
                           result_rule=result_rule, spares=spares)
    return run_extraction(model, config, init=init, device=device, progress=progress,
                          checkpoint=checkpoint).fingerprints


def run_extraction(model: torch.nn.Module, config: ExtractConfig, *, init="uniform", device=None,
                   progress: Any = True, checkpoint=None, checkpoint_writer=None) -> Extraction:
    """extract_fingerprints with its settings in one ExtractConfig (what the CLI calls).

    Returns an Extraction: `.fingerprints` (what extract_fingerprints returns) and `.stats`
    (the engine's SearchStats). progress: a bar (True), none (False), or an object the engine
    reports to as to a tqdm bar (`update(count)`, `set_postfix(**fields)` after every harvest).
    checkpoint_writer: takes each checkpoint's bytes instead of the file `checkpoint`, which still
    supplies the resume (a confined worker writes no file: its parent does)."""
    if not isinstance(model, torch.nn.Module):
        raise ArgumentError("model", f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, ExtractConfig):
        raise ArgumentError("config", f"expected an ExtractConfig, got {type(config).__name__}")
    if isinstance(init, str) and init != "uniform":
        raise ArgumentError("init", f"expected 'uniform', a tensor or a DataLoader of seed images, got {init!r}")
    device = compute_device("device", device) if device is not None else module_device(model)
    config = config.on_device(device)
    seeds = None if isinstance(init, str) else _seed_images(init, config.input_shape, config.max_candidates,
                                                            config.lo, config.hi)
    comm = communicator()
    if checkpoint is not None and comm.world > 1:
        raise ArgumentError("checkpoint", "resumable extraction runs in one process (not under torchrun) for now")
    init_key = "uniform" if seeds is None else hashlib.sha256(seeds.numpy().tobytes()).hexdigest()

    with frozen(model), _on_device(model, device), \
            channels_last([model], config.channels_last and len(config.input_shape) == 3):
        C = probe_classifier(model, config.input_shape, device, config.num_classes)
        source = CandidateSource(model, config.input_shape, C, "uniform" if seeds is None else seeds,
                                 config.labels, config.seed, config.lo, config.hi, device)
        model_hash = state_dict_sha256(model)
        resume_key = config.resume_key(model_sha256=model_hash, init=init_key)
        comm.agree({**{name: value for name, value in resume_key.items() if name != "model_sha256"},
                    "model": f"weights of SHA-256 {model_hash[:16]}"})   # ranks given different work refused
        resume = None
        if checkpoint is not None and os.path.exists(checkpoint):
            resume = load_checkpoint(checkpoint, resume_key)
            verify_resumed(resume[1], model, config.k, config.lo, config.hi, device, checkpoint, source)
        on_checkpoint = None if checkpoint is None else (
            lambda finished, outcomes: save_checkpoint(checkpoint, resume_key, finished, outcomes, checkpoint_writer))
        search_model = torch.compile(model, dynamic=False) if config.compile_model else model
        shown = progress_bar(config.n, "fingerprints", "fp", progress and comm.rank == 0) \
            if isinstance(progress, bool) else contextlib.nullcontext(progress)
        with shown as bar:
            engine = SearchEngine(search_model, source, config, device, comm=comm, progress=bar,
                                  acceptance_model=model, resume=resume, on_checkpoint=on_checkpoint)
            wins = engine.run()

    meta = config.meta(num_classes=C, model_sha256=model_hash, init="uniform" if seeds is None else "seed_images",
                       library_version=__version__, stats=engine.stats, world_size=comm.world,
                       seed_images=0 if seeds is None else int(seeds.shape[0]))
    fps = _to_set(wins, config.input_shape, meta)
    warn_if_incomplete(fps, config, stacklevel=4)
    return Extraction(fps, engine.stats)


def warn_if_incomplete(fps: FingerprintSet, config: ExtractConfig, stacklevel: int = 2) -> None:
    """An IncompleteFingerprintsWarning when ``fps`` holds fewer fingerprints than ``config`` asked for."""
    if len(fps) < config.n:
        warnings.warn(f"extract_fingerprints: only {len(fps)} of {config.n} fingerprints accepted after "
                      f"{fps.meta.get('candidates_tried')} candidates (max_candidates={config.max_candidates}); "
                      "raise max_steps, max_candidates or lr, or lower k", IncompleteFingerprintsWarning,
                      stacklevel=stacklevel)


# ---------------------------------------------------------------------- the model, for the duration


def compute_device(name: str, value) -> torch.device:
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ArgumentError(name, f"not a device: {value!r} ({exc})") from None
    if device.type not in ("cpu", "cuda", "xpu", "mps"):
        raise ArgumentError(name, f"the search computes on cpu or cuda, got {value!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(name, f"{value!r} asked for, but CUDA is not available")
    return device


@contextlib.contextmanager
def _on_device(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """The model on `device` for the duration; afterwards, also when the move fails part-way (out
    of memory), its very tensors back: each parameter's and gradient's data and each buffer, not
    copies moved back (a buffer the caller holds stays the model's)."""
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    if len(devices) > 1:
        raise ArgumentError("model", f"its weights are spread over {sorted(map(str, devices))}; the search "
                                     "runs it on one device")
    home = next(iter(devices), None)
    if home is None or home == device:
        yield
        return
    entries = [(table, name, t, t.data, t.grad, None if t.grad is None else t.grad.data)
               for m in model.modules() for table in (m._parameters, m._buffers) for name, t in table.items()
               if t is not None]
    try:
        model.to(device)
        yield
    finally:
        for table, name, tensor, data, grad, grad_data in entries:
            tensor.data, table[name] = data, tensor
            if grad is not None:
                grad.data = grad_data
                tensor.grad = grad


def probe_classifier(model, input_shape, device, num_classes=None):
    """One forward on two random inputs: checks input_shape and the output, returns C."""
    input_shape = image_shape("input_shape", input_shape)
    x = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    other = float32_mismatch(model)
    if other:   # the search feeds float32 pixels; such a model fails on them, and not for its input shape
        raise ArgumentError("model", f"has {other} weights; the search runs in float32 (convert it with .float())")
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the model's own error, reported against our argument ...
        if ran_out_of_memory(exc):
            raise   # ... unless a resource ran out: not bad input
        raise ArgumentError("input_shape", f"the model fails on a batch of shape {list(x.shape)}: "
                                           f"{short_error(exc)}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArgumentError("model", f"expected logits [B, C] for a batch of 2, got {shape}")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise ArgumentError("model", "returned non-finite or non-floating logits on random inputs")
    C = out.shape[1]
    if C < 2:
        raise ArgumentError("model", f"needs at least 2 classes, returns {C}")
    if num_classes is not None and num_classes != C:
        raise ArgumentError("num_classes", f"{num_classes} given but the model returns {C} logits")
    return C


def float32_mismatch(model: torch.nn.Module) -> str | None:
    """The first floating dtype other than float32 among `model`'s parameters (float64,
    float16, bfloat16), or None: the search and protect's training take float32 models."""
    other = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32})
    return other[0] if other else None


def _seed_images(init, input_shape, limit: int, lo: float, hi: float) -> torch.Tensor:
    if isinstance(init, torch.Tensor):
        images = init
    else:  # a DataLoader or any iterable of batches (images, ...) or images
        chunks, count = [], 0
        for batch in init:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            chunks.append(images.detach().cpu())
            count += images.shape[0]
            if count >= limit:
                break
        if not chunks:
            raise ArgumentError("init", "the data loader yielded no images")
        images = torch.cat(chunks)[:limit]
    if images.dim() != 1 + len(input_shape) or tuple(images.shape[1:]) != tuple(input_shape):
        raise ArgumentError("init", f"seed images must have shape [N, {', '.join(map(str, input_shape))}], "
                                    f"got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ArgumentError("init", "no seed images")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise ArgumentError("init", "seed images contain NaN or infinite pixels")
    if float(images.min()) < lo or float(images.max()) > hi:
        raise ArgumentError("init", f"seed images span [{float(images.min()):g}, {float(images.max()):g}], "
                                    f"outside the pixel box [{lo:g}, {hi:g}] (normalisation belongs inside the "
                                    "model: ipguard_fast.Normalized)")
    return images


# ---------------------------------------------------------------------- the result


def _to_set(wins, input_shape, meta) -> FingerprintSet:
    images = torch.stack([w.image for w in wins]) if wins else torch.zeros((0, *input_shape))
    return FingerprintSet(
        images=images,
        labels=torch.tensor([w.j for w in wins], dtype=torch.int64),
        source_labels=torch.tensor([w.i for w in wins], dtype=torch.int64),
        margins=torch.tensor([w.margin for w in wins], dtype=torch.float32),
        steps=torch.tensor([w.steps for w in wins], dtype=torch.int64),
        meta=meta,
    )
