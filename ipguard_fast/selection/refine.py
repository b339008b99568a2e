"""Refinement: after selection ranks the pool, move the best candidates so that copies of
the owner keep its label more surely and independent models less surely -- the step
beyond choosing points, after conferrable adversarial examples (Lukas, Zhang, Kerschbaum,
ICLR 2021), which optimise inputs against surrogate and reference models.

Why: selection can only keep the pool's best points. On owners whose boundary points
independent models mostly share, the best of the pool still loses distilled and
retrained copies; moving the points themselves reaches where the pool has none
(measurements: benchmarks/results/README.md, selection rows).

Each candidate x with the owner's label j (never changed) climbs, by Adam on its pixels,

    mean_pos min(m_r(x), cap) - w * mean_neg max(m_r(x), -cap) - penalty * ReLU(min_margin - m_owner(x))

with m_r(x) = g^r_j(x) - max_{t != j} g^r_t(x) for reference r and w the negatives'
weight the choice picked. The caps stop pushing a reference that is already sure either
way (|m| >= cap logits), so the steps go to the references still in doubt instead of
inflating margins; the penalty keeps the owner's own label j by min_margin logits.
Pixels stay in the pool's box. Only nn.Module references take part (a label-only
callable has no gradient); every model is frozen for the duration and left as it was.

RefineConfig(positive_focus=t) replaces the positives' mean by a per-point softmin over
the kinds of copy (the kind least sure of keeping the point gets most of the weight): it
lifts the distilled and extracted students but independent models with them, so it is off
by default (benchmarks/results/three-beds-positive-focus-2026-12-05).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from .._validate import finite_number, positive_int
from ..attacks.preprocess import restart_noise
from ..fingerprints import FingerprintSet
from ..modules import frozen, module_device
from ..search.distributed import communicator
from .scores import owner_label_margin

__all__ = ["RefineConfig", "duplicate_rows", "refine_points", "refined_pool"]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the refinement: Adam at `lr` on [0, 1] pixels for `steps`, each reference
    pushed until it is `cap` logits sure, the owner kept `min_margin` logits on its label
    (a violation costs `penalty`); the top `factor` * n of the ranking are refined, in
    chunks of at most `batch_size` (at least four: torchrun ranks share them). The
    defaults are the measured best for their cost (benchmarks/results/README.md)."""

    steps: int = 50
    lr: float = 0.01
    cap: float = 3.0
    min_margin: float = 1.0
    penalty: float = 10.0
    factor: int = 3          # candidates refined per fingerprint kept: the top factor * n of the ranking
    negative_weight: float | None = None   # w of the objective; None: the weight the selection chose
    batch_size: int = 512
    # None: every positive reference weighs the same (their mean). A temperature t in logits:
    # per point, each kind of copy weighs softmin_t of the kinds' capped mean margins at the
    # previous step, so the steps go to the kind least sure of keeping the point.
    positive_focus: float | None = None
    # How far the negatives are pushed from the owner's label (None: `cap`, as the copies).
    # Further than the copies are pushed towards it (a larger confidence, as Carlini &
    # Wagner's kappa, transfers to models the refinement never saw): on the three beds at
    # owner seeds 0-5, 6 accused no innocent where 3 accused 3 (mean ARUC 0.748 -> 0.760,
    # 22 more copies missed: RTAL, distillation, blur; the demo bed lost 0.04-0.08), and at
    # seeds 6-8, chosen after it and held out of that choice, 2 where 3 accused 5, with 26
    # fewer copies missed (benchmarks/results/three-beds-negative-cap-2026-12-06,
    # three-beds-seeds-6-8-2026-12-06). A false accusation is the worst verdict: 6.
    negative_cap: float | None = 6.0
    # None: every reference takes part in every step. A fraction f in (0, 1): each step draws
    # (seeded per chunk) ceil(f * count) of the positives and of the negatives, each term
    # scaled so the objective's expectation is the full one's, as ensemble attacks sample their
    # members: each step costs about f. At 0.5 on the three beds at owner seeds 0-2: 0.007 less
    # mean ARUC, the same innocents accused, where 25 steps lost 0.010 and accused one more;
    # off by default (benchmarks/results/three-beds-reference-fraction-2026-12-06).
    reference_fraction: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"refine steps: must be a non-negative int, got {self.steps!r}")
        positive_int("refine batch_size", self.batch_size)
        positive_int("refine factor", self.factor)
        for name in ("lr", "cap", "penalty"):
            finite_number(f"refine {name}", getattr(self, name), positive=True)
        finite_number("refine min_margin", self.min_margin, minimum=0.0)
        if self.negative_weight is not None:
            finite_number("refine negative_weight", self.negative_weight, positive=True)
        if self.positive_focus is not None:
            finite_number("refine positive_focus", self.positive_focus, positive=True)
        if self.negative_cap is not None:
            finite_number("refine negative_cap", self.negative_cap, positive=True)
        if self.reference_fraction is not None:
            finite_number("refine reference_fraction", self.reference_fraction, positive=True)
            if self.reference_fraction > 1:
                raise ValueError(f"refine reference_fraction: must be in (0, 1], got {self.reference_fraction!r}")
            if self.positive_focus is not None:
                raise ValueError("refine reference_fraction: takes no positive_focus (the focus weighs every kind)")

    def as_meta(self) -> dict:
        return asdict(self)


def refine_points(owner: nn.Module, images: torch.Tensor, labels: torch.Tensor, positives: Sequence[nn.Module],
                  negatives: Sequence[nn.Module], *, negative_weight: float, lo: float = 0.0, hi: float = 1.0,
                  config: RefineConfig = RefineConfig(), positive_kinds: Sequence[str] | None = None) -> torch.Tensor:
    """The refined images [N, ...] (float32, on the images' device, in [lo, hi]); the inputs
    are not modified. positives/negatives: modules returning logits [B, C]. The steps run
    on the owner's device (each reference gets the batch on its own). positive_kinds: each
    positive's kind of copy (config.positive_focus weighs the kinds; default: one kind each)."""
    if not positives or not negatives:
        raise ValueError("refine: needs at least one positive and one negative module reference")
    if positive_kinds is not None and len(positive_kinds) != len(positives):
        raise ValueError(f"refine: positive_kinds has {len(positive_kinds)} entries for {len(positives)} positives")
    kinds = list(positive_kinds) if positive_kinds is not None else [str(i) for i in range(len(positives))]
    out = images.detach().to(module_device(owner), torch.float32).clone()
    labels = labels.to(out.device)
    if config.steps == 0 or len(out) == 0:
        return out.to(images.device)
    models = [owner, *positives, *negatives]
    chunks = _chunks(len(out), config.batch_size)
    comm = communicator()
    refined = {}
    with contextlib.ExitStack() as stack:
        for model in dict.fromkeys(models):   # a model given twice is frozen once
            stack.enter_context(frozen(model))
        for c in range(comm.rank, len(chunks), comm.world):
            restart_noise(models, c)   # a noisy reference draws the same noise on any rank
            refined[c] = _refine_chunk(owner, out[chunks[c]], labels[chunks[c]], positives, negatives,
                                       negative_weight, (lo, hi), config, kinds, c)
    if comm.world > 1:
        refined = {c: x.to(out.device) for c, x in comm.gather_dict({c: x.cpu() for c, x in refined.items()}).items()}
    for c, chunk in enumerate(chunks):
        out[chunk] = refined[c]
    return out.to(images.device)


def _chunks(count: int, batch_size: int) -> list[slice]:
    """The candidates' chunks: at most batch_size each, and at least _MIN_CHUNKS of them
    (of _MIN_CHUNK_SIZE or more) so that torchrun ranks can share them. Every candidate's
    steps depend on its own pixels only, but a chunk's size can change the float rounding
    of the models' kernels: the chunks are the same whatever the number of ranks, so the
    refined points are the single process's."""
    size = min(batch_size, max(_MIN_CHUNK_SIZE, -(-count // _MIN_CHUNKS)))
    return [slice(start, start + size) for start in range(0, count, size)]


_MIN_CHUNKS, _MIN_CHUNK_SIZE = 4, 32


def _refine_chunk(owner, x0, j, positives, negatives, weight, box: tuple[float, float], config: RefineConfig,
                  kinds: Sequence[str], chunk: int = 0) -> torch.Tensor:
    """config.steps Adam steps on one chunk. The objective is a sum of one term per model,
    so each model's term is backpropagated on its own: x.grad accumulates the same
    gradient while only one model's graph is alive at a time (memory of one reference,
    not of all of them, which matters for ImageNet-size references). A model already sure
    of every point of the chunk (its term at its cap: zero gradient) skips its backward,
    which would add exact zeros: the same points, 10-14 % less time on the digits owner."""
    x = x0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr)
    low = -(config.cap if config.negative_cap is None else config.negative_cap)   # the negatives' cap
    focus = _PositiveFocus(kinds, len(x0), config.positive_focus, config.cap, x0.device)
    # (model, its term to minimise (-objective), where that term has no gradient: the model is
    # sure -- a NaN margin is never sure, so it is backpropagated as it always was --, the
    # positive's index for the focus or None)
    terms = ([(owner, lambda m: config.penalty * torch.relu(config.min_margin - m), lambda m: m >= config.min_margin,
               None)]
             + [(model, lambda m, i=i: focus.weighted(i, -m.clamp(max=config.cap)), lambda m: m > config.cap, i)
                for i, model in enumerate(positives)]
             + [(model, lambda m: weight * m.clamp(min=low) / len(negatives), lambda m: m < low, None)
                for model in negatives])
    draw = _ReferenceDraw(len(positives), len(negatives), config.reference_fraction, chunk)
    for _ in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        active = draw.next()
        for t, (model, loss, sure, positive) in enumerate(terms):
            if t not in active:
                continue
            margins = _margins(model, x, j)
            if positive is not None:
                focus.record(positive, margins.detach())
            # The check reads a value back: on the host only (on a GPU it would stall every step).
            if x.device.type != "cpu" or not bool(sure(margins.detach()).all()):
                term = loss(margins).sum()
                (term if active[t] == 1.0 else term * active[t]).backward()   # no extra op at the full objective
        focus.step()
        if x.grad is None:   # every model sure: Adam still moves on its momentum, as with a zero gradient
            x.grad = torch.zeros_like(x)
        optimizer.step()
        with torch.no_grad():
            x.clamp_(*box)
    return x.detach()


class _ReferenceDraw:
    """Which terms take part in a step and at what scale: {term index: scale}, the owner
    (term 0) always at 1. Without a fraction every term at 1, every step (the full
    objective, to the bit). With one, ceil(f * count) of the positives and ceil(f * count)
    of the negatives (each group's own count) drawn anew each step from a generator seeded
    by the chunk (the same draws on every rank), each at count / drawn, so the expected
    objective is the full one."""

    def __init__(self, positives: int, negatives: int, fraction: float | None, chunk: int):
        self.counts, self.fraction = (positives, negatives), fraction
        self.every = {t: 1.0 for t in range(1 + positives + negatives)}
        self.generator = torch.Generator().manual_seed(0x5EED + chunk)

    def next(self) -> dict[int, float]:
        if self.fraction is None:
            return self.every
        active, offset = {0: 1.0}, 1
        for count in self.counts:
            drawn = max(1, math.ceil(self.fraction * count))
            for i in torch.randperm(count, generator=self.generator)[:drawn].tolist():
                active[offset + i] = count / drawn
            offset += count
        return active


class _PositiveFocus:
    """The weight of each positive reference's term, per point. Without a focus: 1 / the
    number of positives (their mean). With a temperature t: each kind of copy weighs
    softmin_t over the kinds of their capped mean margins at the previous step (equal
    weights at the first), shared evenly by the kind's references; the weights sum to 1
    per point, as the mean's do."""

    def __init__(self, kinds: Sequence[str], points: int, temperature: float | None, cap: float, device):
        self.temperature, self.cap, self.count = temperature, cap, len(kinds)
        names = list(dict.fromkeys(kinds))
        self.kind_of = [names.index(k) for k in kinds]   # host lists: no device read-back per step
        self.sizes = [float(self.kind_of.count(k)) for k in range(len(names))]
        self.current = torch.full((len(names), points), 1.0 / len(names), device=device)   # [kinds, points]
        self.seen = torch.zeros(len(names), points, device=device)

    def weighted(self, i: int, term: torch.Tensor) -> torch.Tensor:
        """Positive i's term at its weight (without a focus, divided by the count: the mean
        as it always was, to the bit)."""
        if self.temperature is None:
            return term / self.count
        k = self.kind_of[i]
        return term * (self.current[k] / self.sizes[k])

    def record(self, i: int, margins: torch.Tensor) -> None:
        if self.temperature is not None:
            k = self.kind_of[i]
            self.seen[k] += torch.nan_to_num(margins.float(), nan=-self.cap).clamp(-self.cap, self.cap) / self.sizes[k]

    def step(self) -> None:
        if self.temperature is not None:
            self.current = torch.softmax(-self.seen / self.temperature, dim=0)
            self.seen = torch.zeros_like(self.seen)


def _margins(model: nn.Module, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """g_j - max_{t != j} g_t of `model` at x, back on x's device."""
    device = module_device(model)
    return owner_label_margin(model(x.to(device)).float(), j.to(device)).to(x.device)


def refined_pool(owner: nn.Module, pool: FingerprintSet, top: torch.Tensor, positives: Sequence[nn.Module],
                 negatives: Sequence[nn.Module], *, negative_weight: float, config: RefineConfig,
                 positive_kinds: Sequence[str] | None = None) -> FingerprintSet:
    """The pool's points at `top` refined, as a pool of their own: labels and source labels
    are the pool's, margins the owner's at the refined images, and meta["pool"] keeps each
    point's k and the parts."""
    lo, hi = float(pool.meta.get("lo", 0.0)), float(pool.meta.get("hi", 1.0))
    labels = pool.labels[top]
    images = refine_points(owner, pool.images[top], labels, positives, negatives, negative_weight=negative_weight,
                           lo=lo, hi=hi, config=config, positive_kinds=positive_kinds)
    with torch.no_grad(), frozen(owner):
        margins = torch.cat([_margins(owner, images[i:i + config.batch_size], labels[i:i + config.batch_size]).cpu()
                             for i in range(0, len(images), config.batch_size)])
    meta = dict(pool.meta)
    point_k = pool.meta.get("pool", {}).get("k")
    if point_k is not None:
        meta["pool"] = {"k": [point_k[i] for i in top.tolist()], "parts": pool.meta["pool"]["parts"]}
    return FingerprintSet(images=images.cpu(), labels=labels.clone(), source_labels=pool.source_labels[top].clone(),
                          margins=margins.float(), steps=pool.steps[top].clone(), meta=meta)


def duplicate_rows(images: torch.Tensor) -> torch.Tensor:
    """[N] bool: True where a row repeats an earlier one exactly (two candidates that
    refined to the same pixels must not both become fingerprints)."""
    flat = images.reshape(len(images), -1)
    _, inverse = torch.unique(flat, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(images), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(images)), reduce="amin")
    return first[inverse] != torch.arange(len(images))
