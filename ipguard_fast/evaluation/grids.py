"""The evaluation's grids of positive suspects: the paper's families (a short grid that
spans a gentle and an aggressive setting of each attack, and a wider one), and the field's
hard families since (model extraction, adversarial fine-tuning, input preprocessing,
fine-tuning on other data), which work on the attacker's own data."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from ..attacks import AdversarialFineTune, Distill, Extraction, FineTune, Half, Preprocess, Prune, Quantize

if TYPE_CHECKING:
    from .suspects import Variant

__all__ = ["FAMILIES", "FIELD_FAMILIES", "field_variants", "positive_variants"]

FAMILIES = ("FTLL", "FTAL", "RTLL", "RTAL", "prune", "quant-int8", "fp16", "distill", "distill-small")
FIELD_FAMILIES = ("extract-labels", "extract-probabilities", "adversarial-ft", "preprocess", "fine-tune-other-data")

# family -> (last_only, reinit_last)
_FINE_TUNING = {"FTLL": (True, False), "FTAL": (False, False), "RTLL": (True, True), "RTAL": (False, True)}
# (lr, epochs) per fine-tuning family; pruning rates, their fine-tuning epochs; distillation (epochs, lr)
_QUICK = {"FTLL": ((1e-3, 3), (1e-2, 3)), "FTAL": ((1e-4, 3), (1e-3, 3)), "RTLL": ((1e-2, 5),),
          "RTAL": ((1e-3, 5),), "prune": ((0.2, 0.4, 0.6, 0.8), 0), "distill": (10, 1e-3)}
_FULL = {"FTLL": ((1e-4, 10), (1e-3, 10), (1e-2, 10)), "FTAL": ((1e-5, 10), (1e-4, 10), (1e-3, 10)),
         "RTLL": ((1e-3, 10), (1e-2, 10)), "RTAL": ((1e-4, 10), (1e-3, 10)),
         "prune": ((0.2, 0.4, 0.6, 0.8), 2), "distill": (30, 1e-3)}


def positive_variants(quick: bool, student_factory: Callable[[], nn.Module] | None = None,
                      small_factory: Callable[[], nn.Module] | None = None) -> list["Variant"]:
    """The positive suspects of the short (quick) or the wide grid, in the order built."""
    from .suspects import Variant

    grid = _QUICK if quick else _FULL
    out = []
    for family, (last_only, reinit_last) in _FINE_TUNING.items():
        out += [Variant(f"{family}-lr{lr:g}-e{epochs}", family, "fine-tune",
                        FineTune(lr, epochs, last_only=last_only, reinit_last=reinit_last))
                for lr, epochs in grid[family]]
    rates, finetune_epochs = grid["prune"]
    out += [Variant(f"prune-{round(rate * 100)}", "prune", "prune", Prune(rate, finetune_epochs)) for rate in rates]
    out += [Variant("quant-int8", "quant-int8", "quantize", Quantize(8)), Variant("fp16", "fp16", "half", Half())]
    epochs, lr = grid["distill"]
    out.append(Variant("distill", "distill", "distill", Distill(lr, epochs, student_factory or "owner")))
    if small_factory is not None:
        out.append(Variant("distill-small", "distill-small", "distill", Distill(lr, epochs, small_factory)))
    return out


def field_variants(student_factory: Callable[[], nn.Module] | None = None) -> list["Variant"]:
    """The field's hard positives, each built on the attacker's data: label-only extraction
    into another architecture (`student_factory`, default the generic one), probability
    extraction into the owner's, PGD adversarial fine-tuning, the owner behind input
    transformations (noise sigma 0.05, 4-bit pixels, a blur, a 0.75 down-and-up resize),
    and fine-tuning on the attacker's data."""
    from .suspects import Variant

    other = student_factory or "generic"
    preprocess = [Variant(f"{kind}-{strength:g}", "preprocess", "preprocess", Preprocess(kind, strength),
                          data="attacker")
                  for kind, strength in (("noise", 0.05), ("quantize", 4), ("blur", 0.7), ("resize", 0.75))]
    return [Variant("extract-labels", "extract-labels", "extraction", Extraction(1e-3, 20, other, "labels"),
                    data="attacker"),
            Variant("extract-probabilities", "extract-probabilities", "extraction",
                    Extraction(1e-3, 20, "owner", "probabilities"), data="attacker"),
            Variant("adversarial-ft", "adversarial-ft", "adversarial-fine-tune", AdversarialFineTune(1e-3, 3),
                    data="attacker"),
            *preprocess,
            Variant("FTAL-other-data", "fine-tune-other-data", "fine-tune", FineTune(1e-3, 5), data="attacker")]
