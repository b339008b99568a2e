"""What one unit of each of protect()'s kinds of work costs on this machine, measured on the
owner before any of it runs (plan.py turns these into a plan and stage estimates):

* a training step of the owner's architecture and of the generic one (per image, Adam, at
  the references' precision -- see _reference_precision -- or the one
  IPGUARD_FAST_TRAIN_PRECISION forces),
* the layout the pool, scoring and refinement run the conv weights in (a rule, not a timing:
  see _layout), and the autocast the pool searches under (the caller's: see _search_amp),
* a forward of each (per image: scoring the pool with a reference),
* a forward and backward to the input of each (per image: a refinement step against a
  reference),
* one pool point (a pilot extraction of a few points at the grid's middle k, with the
  pool's own options: the engine's real cost, search steps included).

Nothing here changes the owner: training steps run on a copy, the rest under `frozen`.
"""
from __future__ import annotations

import copy
import statistics
import time
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ran_out_of_memory
from ..attacks import AttackContext
from ..attacks.architectures import factory_for
from ..modules import canonical_layout, channels_last, frozen, has_conv_weights, module_device
from ..nn import seeded
from ..search import extract_fingerprints
from ..search.config import AMP_DTYPES
from ..search.distributed import communicator
from ..precision import effective_precision, native_bf16, training_precision

__all__ = ["UnitCosts", "measure_unit_costs", "train_step_seconds"]

_TRAIN_BATCH = 64     # the references' default batch (AttackContext.batch_size)
_SCORE_BATCH = 256
_REFINE_BATCH = 64    # refinement runs its candidates in at least four chunks: 75 for the default 3 x 100
_PILOT_POINTS = 256
_PILOT_TRIES = 2      # candidates the pilot may try per point it asks for
_PILOT_MIN_POINTS = 8   # the fewest points a pilot cut short by its time limit asks for
_REPEATS = 3


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per image of each kind of work (see the module docstring), and per pool point."""

    owner_train: float
    generic_train: float
    owner_forward: float
    generic_forward: float
    owner_input_grad: float
    generic_input_grad: float
    pool_point: float
    device: str
    precision: str = "fp32"       # what the references train at unless the environment forces another
    channels_last: bool = False   # the pool, scoring and refinement run conv weights channels_last
    amp: str | None = None        # the pool searches under this autocast (None: float32)

    def to_meta(self) -> dict:
        return {key: (value if value is None or isinstance(value, (str, bool)) else float(f"{value:.4g}"))
                for key, value in asdict(self).items()}


def measure_unit_costs(owner: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, input_shape, num_classes: int,
                       pilot_k: float, search_options: dict, seed: int, pilot_limit: float | None = None) -> UnitCosts:
    """The unit costs on `images` (a batch of the owner's training images, at least one) and
    their `labels`; the pilot extraction starts from them at k = `pilot_k`, and asks for fewer
    points when it would otherwise take more than `pilot_limit` seconds (_pilot_seconds)."""
    device = module_device(owner)
    context = AttackContext(owner, None, seed, input_shape=tuple(input_shape), num_classes=num_classes, device=device)
    train_x = _batch(images, _TRAIN_BATCH).to(device)
    train_y = _batch(labels, _TRAIN_BATCH).to(device)
    owner_copy = seeded(lambda: copy.deepcopy(owner), seed)
    generic = seeded(factory_for("generic", context), seed).to(device)
    score_x = _batch(images, _SCORE_BATCH).to(device)
    refine_x = _batch(images, _REFINE_BATCH).to(device)
    layout, inference = _layout(owner, generic, score_x, refine_x, device, input_shape, search_options)
    amp = _search_amp(search_options)
    options = {**search_options, "channels_last": layout, "amp": amp}
    pilot = _pilot_seconds(owner, images, input_shape, pilot_k, options, seed, pilot_limit)
    bf16 = AMP_DTYPES.get(amp) == torch.bfloat16 and layout and device.type == "cpu" and native_bf16(device)
    precision, owner_train = _reference_precision(owner_copy, train_x, train_y, device, layout, bf16)
    return UnitCosts(owner_train=owner_train,
                     generic_train=train_step_seconds(generic, train_x, train_y, device, effective_precision(precision)),
                     pool_point=pilot, device=str(device), precision=precision, channels_last=layout, amp=amp,
                     **inference)


def _search_amp(search_options: dict) -> str | None:
    """The autocast the pool searches under: the caller's search option "amp" (None:
    float32, the default). The search accepts a point at float32 whatever it steps at, and
    scoring and refinement run at float32, so a point's label and every agreement are what a
    float32 suspect gives. bf16 asked for a conv owner run channels_last on a CPU that
    multiplies it natively also trains the references at bf16 (_reference_precision;
    `ipguard protect --bf16`). Not the default: on an AMX Xeon it made the digits owner's
    protect 1.18x faster (117 s against 138 s), but over the three beds at owner seeds 0-5
    its draws accused 5 innocents against 3 for the same ARUC (benchmarks/results/bf16-cpu-2026-12-06)."""
    return search_options.get("amp")


def _reference_precision(owner_copy: nn.Module, x, y, device, layout: bool, bf16: bool = False
                         ) -> tuple[str, float]:
    """The precision the references train at, and the owner's training step at it (per
    image): bf16 when the caller asked the pool for it on a CPU that multiplies it natively
    (`bf16`, see _search_amp; AMX: the digits CNN 1.5-2.1x faster than fp32-cl), else
    float32 in the layout the pool, scoring and refinement run the conv weights in --
    "fp32-cl" when that is channels_last (on CPU oneDNN's channels_last kernels trained the
    digits CNN 1.5-2.1x faster on an AVX-512 Xeon, 1.1-1.3x on an AVX2 EPYC), else "fp32" --
    unless the owner's code cannot train so.

    A rule, not a timing: a reference trained at another precision is another draw of its
    recipe (every step's rounding differs), and two runs of protect on one machine must
    build the same references (ResNet-50's bf16 ratio on the H200 was 0.64 in one run and
    0.85 in the next, protect-costs-2026-12-04: no margin keeps a timed choice stable).
    Another draw is not a worse one: on the three beds x three owner seeds the fp32-cl
    references gave the float32 ones' ARUC and verdicts within the seeds' spread
    (benchmarks/results/three-beds-fp32-cl-references-2026-12-05). bf16 only when the caller
    asks for a bf16 pool (above) or the environment for bf16 (IPGUARD_FAST_TRAIN_PRECISION,
    which also overrides this)."""
    if bf16:
        try:
            return "bf16", train_step_seconds(owner_copy, x, y, device, effective_precision("bf16"))
        except RuntimeError as exc:   # an owner whose code cannot train under autocast or in that layout
            if ran_out_of_memory(exc):
                raise
            canonical_layout(owner_copy)
    if layout:
        try:
            return "fp32-cl", train_step_seconds(owner_copy, x, y, device, effective_precision("fp32-cl"))
        except RuntimeError as exc:   # an owner whose code cannot train in that layout: float32 as given
            if ran_out_of_memory(exc):
                raise
            canonical_layout(owner_copy)
    return "fp32", train_step_seconds(owner_copy, x, y, device, effective_precision("fp32"))


def _layout(owner, generic, score_x, refine_x, device, input_shape, search_options: dict) -> tuple[bool, dict]:
    """Whether the pool, scoring and refinement run channels_last, and the inference costs in
    that layout: the caller's search option, else channels_last for a conv owner on images on
    CPU, where oneDNN's channels_last kernels ran every conv net measured 1.1-2.5x faster
    (benchmarks/results/channels-last-cpu-2026-12-05), unless the owner's code fails in it.
    A rule, not a timing: the layout changes the float rounding, and two runs of protect on
    one machine must give the same fingerprints (a timed choice flipped between two runs of
    a small owner, whose two layouts cost about the same)."""
    given = search_options.get("channels_last")
    if given is not None:
        return bool(given), _inference_seconds(owner, generic, score_x, refine_x, device, bool(given))
    if device.type == "cpu" and has_conv_weights(owner) and len(input_shape) == 3:
        try:
            return True, _inference_seconds(owner, generic, score_x, refine_x, device, True)
        except RuntimeError as exc:   # an owner whose code cannot take that layout: the one it was given
            if ran_out_of_memory(exc):
                raise
    return False, _inference_seconds(owner, generic, score_x, refine_x, device, False)


def _inference_seconds(owner: nn.Module, generic: nn.Module, score_x, refine_x, device, layout: bool) -> dict:
    """Per image: a forward and an input gradient of the owner and of the generic model,
    their conv weights channels_last when `layout`."""
    out = {}
    for name, model in (("owner", owner), ("generic", generic)):
        with frozen(model), channels_last([model], layout):
            out[f"{name}_forward"] = _per_image(lambda: model(score_x), len(score_x), device)
            out[f"{name}_input_grad"] = _per_image(lambda: _input_grad(model, refine_x), len(refine_x), device)
    return out


def _batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """`size` rows of `tensor`, repeated when it has fewer."""
    repeats = -(-size // len(tensor))
    return tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:size]


def train_step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, precision: str = "fp32") -> float:
    """Seconds per image of an Adam step of `model` (a private copy) on (x, y) at `precision`."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    precision = training_precision(model, torch.device(device), precision)
    x = precision.images(x)

    def step():
        with precision.autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    device = torch.device(device)   # forked: a dropout layer's draws leave the caller's RNG as it was
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        return _per_image(step, len(x), device)


def _input_grad(model: nn.Module, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    model(x).float().logsumexp(1).sum().backward()


def _per_image(call, count: int, device) -> float:
    """The median of _REPEATS timed calls after one warm-up, per image."""
    call()
    times = []
    for _ in range(_REPEATS):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / count


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _pilot_seconds(owner: nn.Module, images: torch.Tensor, input_shape, k: float, options: dict, seed: int,
                   limit: float | None = None) -> float:
    """Seconds per accepted pool point: a small extraction like the pool's (one batch of
    the engine's default size, the pool's options), after a one-point warm-up. It tries at
    most _PILOT_TRIES candidates per point asked: an owner on which few searches succeed (an
    untrained one: `ipguard protect` without --weights) would otherwise run the engine's
    default of ten tries per point for minutes before the plan is printed; its estimate is
    then as large as the pool would really be. With a `limit` (seconds; a share of the
    budget), when the warm-up's time times the batch, as if batching gained nothing, would
    pass it, the pilot asks for as many points as that rate fits (at least
    _PILOT_MIN_POINTS): a large owner under a small budget was refused only after minutes of
    pilot (a MobileNet at 32x32: 244 s for a budget of 90 s). Under torchrun the ranks share
    the pilot, so all ask for the count rank 0's warm-up gives."""
    starts = _batch(images, _PILOT_POINTS).float()
    run = lambda count: extract_fingerprints(owner, count, k=float(k), input_shape=tuple(input_shape),  # noqa: E731
                                             init=starts[:count].clone(), labels="predicted", seed=seed,
                                             progress=False, **{**options, "max_candidates": _PILOT_TRIES * count})
    with warnings.catch_warnings():   # a pilot that accepts few points is an estimate, not the user's result
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        run(1)
        first = communicator().exchange(time.perf_counter() - start)[0]   # rank 0's: one count on every rank
        count = len(starts)
        if limit is not None and first * count > limit:
            count = min(count, max(_PILOT_MIN_POINTS, int(limit / max(first, 1e-9))))
        start = time.perf_counter()
        found = run(count)
        return (time.perf_counter() - start) / max(len(found), 1)
