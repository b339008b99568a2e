"""Global magnitude pruning of a copy, optionally fine-tuned with the masks held."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import Dataset

from .._validate import ArgumentError, finite_number, non_negative_int
from ..train import train_classifier
from .registry import Attack, AttackContext

__all__ = ["PRUNE", "Prune", "WEIGHT_LAYERS", "prune_model", "weight_sparsity"]

# Layers whose weights pruning and quantisation act on.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Prune:
    """Zero the smallest `rate` of all conv/linear weights; then `finetune_epochs` of Adam at `lr`."""

    rate: float
    finetune_epochs: int = 0
    lr: float = 1e-4

    def __post_init__(self):
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 <= self.rate < 1.0:
            raise ArgumentError("rate", f"must be in [0, 1), got {self.rate!r}")
        non_negative_int("finetune_epochs", self.finetune_epochs)
        finite_number("lr", self.lr, positive=True)


def prune_model(model: nn.Module, amount: float, *, finetune_set: Dataset | None = None, finetune_epochs: int = 0,
                lr: float = 1e-4, seed: int = 0, batch_size: int = 64, device: str | torch.device = "cpu") -> nn.Module:
    """Global unstructured L1 (magnitude) pruning of all conv/linear weights, in place.

    The smallest ``amount`` fraction of weights across the whole network is zeroed
    (global, so layers with many small weights lose more). With ``finetune_set`` the
    model is fine-tuned with the masks attached, so pruned weights stay zero; the masks
    are then folded in (``prune.remove``) and a plain module is returned.
    """
    if not 0.0 <= amount < 1.0:
        raise ArgumentError("amount", f"must be in [0, 1), got {amount!r}")
    targets = [(m, "weight") for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not targets:
        raise ArgumentError("model", f"({type(model).__name__}) has no conv/linear weights to prune")
    flags = [module.weight.requires_grad for module, _ in targets]   # torch's pruning leaves every one True
    model.to(memory_format=torch.contiguous_format)   # torch's global pruning flattens weights with view()
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    masks = [module.weight_mask.detach().clone() for module, _ in targets]
    # Folded at once: torch's re-parametrisation recomputes `weight` in the layer's forward
    # pre-hook, which a model that reads a layer's weight without calling the layer never
    # runs (nn.MultiheadAttention's out_proj in every transformer): its one `weight` would be
    # backpropagated through at every step. Masking the gradients keeps the pruned weights
    # at zero under any optimizer (Adam's moments of a zero gradient stay zero), the same
    # arithmetic as the re-parametrisation, and the masks are applied once more at the end.
    for module, param_name in targets:
        prune.remove(module, param_name)
    if finetune_set is not None and finetune_epochs > 0:
        # The fine-tuning trains every weight, a frozen one too (train_classifier's params=None),
        # and a hook can only be put on a weight that requires gradients.
        handles = [module.weight.requires_grad_(True).register_hook(lambda grad, mask=mask: grad * mask)
                   for (module, _), mask in zip(targets, masks)]
        try:
            train_classifier(model, finetune_set, epochs=finetune_epochs, lr=lr, seed=seed, batch_size=batch_size,
                             device=device)
        finally:
            for handle in handles:
                handle.remove()
        with torch.no_grad():
            for (module, _), mask in zip(targets, masks):
                module.weight.mul_(mask)
    for (module, _), flag in zip(targets, flags):
        module.weight.requires_grad_(flag)
    return model.eval()


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all conv/linear weights."""
    weights = [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not weights:
        raise ArgumentError("model", f"({type(model).__name__}) has no conv/linear weights")
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def _build(ctx: AttackContext, s: Prune) -> list[nn.Module]:
    return [prune_model(ctx.owner_copy(), s.rate, finetune_set=ctx.data if s.finetune_epochs else None,
                        finetune_epochs=s.finetune_epochs, lr=s.lr, seed=ctx.seed, batch_size=ctx.batch_size,
                        device=ctx.device)]


PRUNE = Attack("prune", Prune, _build, needs=("weights",))
