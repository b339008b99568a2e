"""extract_fingerprints(): IPGuard's fingerprint extraction, and its argument checks."""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import math
import warnings
from typing import Sequence

import torch

from ..fingerprints import FingerprintSet, state_dict_sha256
from .candidates import LABEL_MODES, CandidateSource
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import communicator
from .engine import Outcome, SearchEngine

# batch_size="auto": start here and halve on out-of-memory (nothing is lost).
AUTO_BATCH = {False: 256, True: 4096}
AMP_DTYPES = {None: None, "none": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16}


class IncompleteFingerprintsWarning(UserWarning):
    """Fewer fingerprints than requested were accepted within max_candidates."""


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """eval() and no parameter gradients for the duration; restores both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@contextlib.contextmanager
def _memory_format(model: torch.nn.Module, channels_last: bool):
    """channels_last weights for the search; the model's own layout back afterwards."""
    if not channels_last:
        yield
        return
    weights = [p for p in model.parameters() if p.dim() == 4]
    was = weights and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                          for p in weights)
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if not was:
            model.to(memory_format=torch.contiguous_format)


def _model_device(model) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _probe(model, input_shape, device, num_classes):
    """One forward on two random inputs: checks input_shape and the output, returns C."""
    x = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the model's own error, reported against our argument
        raise ValueError(f"input_shape: the model fails on a batch of shape {list(x.shape)}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: expected logits [B, C] for a batch of 2, got {shape}")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise ValueError("model: returned non-finite or non-floating logits on random inputs")
    C = out.shape[1]
    if C < 2:
        raise ValueError(f"model: needs at least 2 classes, returns {C}")
    if num_classes is not None and num_classes != C:
        raise ValueError(f"num_classes: {num_classes} given but the model returns {C} logits")
    return C


def _seed_images(init, input_shape, limit: int) -> torch.Tensor:
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
            raise ValueError("init: the data loader yielded no images")
        images = torch.cat(chunks)[:limit]
    if images.dim() != 1 + len(input_shape) or tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(f"init: seed images must have shape [N, {', '.join(map(str, input_shape))}], "
                         f"got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("init: no seed images")
    return images.detach().float().cpu()


def extract_fingerprints(model: torch.nn.Module, n: int, *, k: float, input_shape: Sequence[int],
                         num_classes: int | None = None, init="uniform", labels: str = "random",
                         lr: float = 0.01, max_steps: int = 1000, max_candidates: int | None = None,
                         batch_size: int | str = 256, seed: int = 0, device=None, progress: bool = True,
                         check_every: int | None = None, amp: str | None = None,
                         cuda_graph: bool | None = None, channels_last: bool = False,
                         compile_model: bool = False, checkpoint=None, checkpoint_every: float = 30.0,
                         lo: float = 0.0, hi: float = 1.0) -> FingerprintSet:
    """Find n fingerprints of `model`: inputs it labels j with margin >= k over i, i the runner-up.

    model: any classifier on [B, *input_shape] pixels in [lo, hi] returning logits
    (wrap normalisation with ipguard_fast.Normalized). The model is frozen for the
    search (eval, no parameter gradients) and restored afterwards.

    Candidates start from uniform noise (init="uniform") or from seed images (a
    tensor or DataLoader); labels are "random" (i != j uniform), "predicted" (i =
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

    Performance options: check_every (steps between harvests, the only host
    syncs; default 1 on CPU, where nothing waits, and 8 on CUDA), amp ("bf16" or
    "fp16" autocast for the search; acceptance stays float32), cuda_graph
    (default: on for CUDA), channels_last, compile_model (torch.compile the
    model for the search), batch_size="auto" (start large, halve on
    out-of-memory, continuing every candidate where it was).
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n: must be a positive int, got {n!r}")
    try:
        k = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"k: expected a number, got {k!r}") from None
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"k: must be finite and >= 0, got {k}")
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s <= 0 for s in input_shape):
        raise ValueError(f"input_shape: expected positive sizes, got {input_shape}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: must be finite and > 0, got {lr!r}")
    if not isinstance(max_steps, int) or max_steps <= 0:
        raise ValueError(f"max_steps: must be a positive int, got {max_steps!r}")
    max_candidates = 10 * n if max_candidates is None else max_candidates
    if not isinstance(max_candidates, int) or max_candidates < 1:
        raise ValueError(f"max_candidates: must be a positive int, got {max_candidates!r}")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size <= 0):
        raise ValueError(f"batch_size: must be a positive int or 'auto', got {batch_size!r}")
    if labels not in LABEL_MODES:
        raise ValueError(f"labels: expected one of {LABEL_MODES}, got {labels!r}")
    if isinstance(init, str) and init != "uniform":
        raise ValueError(f"init: expected 'uniform', a tensor or a DataLoader of seed images, got {init!r}")
    if not lo < hi:
        raise ValueError(f"lo, hi: need lo < hi, got {lo}, {hi}")
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp: expected one of 'bf16', 'fp16' or None, got {amp!r}")
    device = torch.device(device) if device is not None else _model_device(model)
    check_every = check_every if check_every is not None else (8 if device.type == "cuda" else 1)
    if not isinstance(check_every, int) or check_every <= 0:
        raise ValueError(f"check_every: must be a positive int, got {check_every!r}")
    cuda_graph = (device.type == "cuda") if cuda_graph is None else bool(cuda_graph)
    slots = AUTO_BATCH[device.type == "cuda"] if batch_size == "auto" else batch_size

    seeds = None if isinstance(init, str) else _seed_images(init, input_shape, max_candidates)
    comm = communicator()
    if checkpoint is not None and comm.world > 1:
        raise ValueError("checkpoint: resumable extraction runs in one process (not under torchrun) for now")
    to_channels_last = channels_last and len(input_shape) == 3
    with frozen(model), _memory_format(model, to_channels_last):
        model.to(device)
        C = _probe(model, input_shape, device, num_classes)
        source = CandidateSource(model, input_shape, C, "uniform" if seeds is None else seeds,
                                 labels, seed, lo, hi, device)
        bar = _progress_bar(n, progress and comm.rank == 0)
        settings = {"n": n, "k": k, "lr": float(lr), "max_steps": max_steps, "max_candidates": max_candidates,
                    "seed": int(seed), "labels": labels, "input_shape": list(input_shape), "lo": lo, "hi": hi,
                    "init": "uniform" if seeds is None else hashlib.sha256(seeds.numpy().tobytes()).hexdigest(),
                    "model_sha256": state_dict_sha256(model), "amp": amp or "none"}
        resume = None
        if checkpoint is not None and os.path.exists(checkpoint):
            resume = load_checkpoint(checkpoint, settings, Outcome)
        search_model = torch.compile(model, dynamic=False) if compile_model else model
        engine = SearchEngine(search_model, source, n=n, k=k, lr=lr, max_steps=max_steps,
                              max_candidates=max_candidates, batch_size=min(slots, max_candidates),
                              check_every=check_every, lo=lo, hi=hi, device=device,
                              amp_dtype=AMP_DTYPES[amp], cuda_graph=cuda_graph,
                              channels_last=channels_last, progress=bar, comm=comm,
                              acceptance_model=model, resume=resume, checkpoint_every=checkpoint_every,
                              on_checkpoint=None if checkpoint is None else
                              (lambda finished, outcomes: save_checkpoint(checkpoint, settings, finished, outcomes)))
        try:
            wins = engine.run()
        finally:
            if bar is not None:
                bar.close()
        model_hash = settings["model_sha256"]

    from .. import __version__
    stats = engine.stats
    meta = {
        "k": k, "lr": float(lr), "max_steps": max_steps, "seed": int(seed),
        "init": "uniform" if seeds is None else "seed_images", "labels": labels,
        "input_shape": list(input_shape), "num_classes": C, "lo": float(lo), "hi": float(hi),
        "model_sha256": model_hash, "library_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "requested": n, "candidates_tried": stats.tried, "rejected_float32": stats.rejected,
        "exhausted": stats.exhausted, "amp": amp or "none", "batch_size": batch_size,
        "world_size": comm.world, "oom_halvings": stats.oom_halvings,
    }
    fps = _to_set(wins, input_shape, meta)
    if len(fps) < n:
        warnings.warn(f"extract_fingerprints: only {len(fps)} of {n} fingerprints accepted after "
                      f"{stats.tried} candidates (max_candidates={max_candidates}); raise max_steps, "
                      "max_candidates or lr, or lower k", IncompleteFingerprintsWarning, stacklevel=2)
    fps.stats = stats
    return fps


def _to_set(wins, input_shape, meta) -> FingerprintSet:
    if wins:
        images = torch.stack([w.image for w in wins])
    else:
        images = torch.zeros((0, *input_shape))
    return FingerprintSet(
        images=images,
        labels=torch.tensor([w.j for w in wins], dtype=torch.int64),
        source_labels=torch.tensor([w.i for w in wins], dtype=torch.int64),
        margins=torch.tensor([w.margin for w in wins], dtype=torch.float32),
        steps=torch.tensor([w.steps for w in wins], dtype=torch.int64),
        meta=meta,
    )


def _progress_bar(n, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=n, desc="fingerprints", unit="fp")
