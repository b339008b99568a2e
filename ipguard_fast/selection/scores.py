"""How reference models treat each pool point, and the score that ranks the points.

A fingerprint is worth keeping when copies of the owner keep its label and independent
models do not. Selection estimates both from reference models: positives (copies the
owner makes: fine-tuned, pruned, distilled...) and negatives (models trained
independently). For reference r and a point p with owner label j, the logit margin

    m_r(p) = g^r_j(p) - max_{t != j} g^r_t(p)        (> 0 exactly when r predicts j)

turns into a soft agreement a_r(p) = sigmoid(m_r(p) / T), T = 1 logit, and

    separation(p) = mean over positives of a_r(p) - mean over negatives of a_r(p).

Why soft: with a few references, the hard indicator [m_r(p) > 0] cannot tell a label
a copy holds by 5 logits from one it holds by 0.01; the margin says how far the
reference is from flipping, so the mean over a handful of references estimates how the
unseen copies and independents behave with less noise (on held-out suspects it beat the
indicator, with T near 1 logit best). A reference that returns labels only (a label-only callable, an
endpoint) has no margin: its a_r(p) is the indicator, so "separation" still covers it.
"agreement" is the indicator for every reference (the plain mean agreement difference),
kept as the documented alternative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..fingerprints import FingerprintSet
from ..search.acceptance import owner_label_margin
from ..suspect_calls import as_output_fn

__all__ = ["SCORES", "TEMPERATURE", "ReferenceOutputs", "owner_label_margin", "reference_outputs", "separation_scores",
           "soft_agreement"]

SCORES = ("separation", "agreement")
TEMPERATURE = 1.0   # logits; the soft agreement's scale


@dataclass
class ReferenceOutputs:
    """Every reference's view of every pool point: ``margins`` [R, P] float32 (NaN for a
    label-only reference) and ``agrees`` [R, P] bool (the reference predicts the owner's label)."""

    margins: torch.Tensor
    agrees: torch.Tensor

    def rows(self, index: Sequence[int]) -> "ReferenceOutputs":
        index = torch.as_tensor(list(index), dtype=torch.int64)
        return ReferenceOutputs(self.margins.index_select(0, index), self.agrees.index_select(0, index))

    def columns(self, index: torch.Tensor) -> "ReferenceOutputs":
        return ReferenceOutputs(self.margins[:, index], self.agrees[:, index])

    def rates(self) -> torch.Tensor:
        """Each reference's matching rate over the points: [R] float64."""
        return self.agrees.double().mean(dim=1)


def reference_outputs(references: Sequence[Any], pool: FingerprintSet, *, batch_size: int = 256,
                      names: Sequence[str] | None = None,
                      progress: Callable[[], None] | None = None) -> ReferenceOutputs:
    """Run every reference on the pool once, in batches. A reference is anything
    ipguard_fast.verdicts accepts (a module, an exported program, a callable returning logits
    or labels); one that fails or returns another number of classes raises ValueError
    naming it (``names[r]``, default ``references[r]``)."""
    labels = pool.labels
    margins, agrees = [], []
    for r, reference in enumerate(references):
        where = names[r] if names is not None else f"references[{r}]"
        try:
            outputs = as_output_fn(reference, num_classes=pool.num_classes)
            m_parts, a_parts = [], []
            for start in range(0, len(pool), batch_size):
                predicted, logits = outputs(pool.images[start:start + batch_size])
                j = labels[start:start + batch_size]
                a_parts.append(predicted == j)
                m_parts.append(owner_label_margin(logits, j) if logits is not None
                               else torch.full((len(j),), float("nan")))
        except ValueError as exc:
            message = str(exc).removeprefix("suspect: ")
            raise ValueError(f"{where}: {message}") from exc
        margins.append(torch.cat(m_parts))
        agrees.append(torch.cat(a_parts))
        if progress is not None:
            progress()
    return ReferenceOutputs(torch.stack(margins), torch.stack(agrees))


def soft_agreement(outputs: ReferenceOutputs, score: str) -> torch.Tensor:
    """a_r(p) [R, P] float64: sigmoid(m / T) where a margin is known and score is
    "separation", else the 0/1 agreement."""
    hard = outputs.agrees.double()
    if score == "agreement":
        return hard
    soft = torch.sigmoid(outputs.margins.double() / TEMPERATURE)
    return torch.where(torch.isnan(outputs.margins), hard, soft)


def separation_scores(positives: ReferenceOutputs, negatives: ReferenceOutputs, score: str = "separation",
                      negative_weight: float = 1.0) -> torch.Tensor:
    """[P] float64: mean soft agreement of the positives minus negative_weight times that of
    the negatives (the weight protect's choice picks, choice.NEGATIVE_WEIGHTS)."""
    if score not in SCORES:
        raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
    return soft_agreement(positives, score).mean(dim=0) - negative_weight * soft_agreement(negatives, score).mean(dim=0)
