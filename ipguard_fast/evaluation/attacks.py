"""The post-processing a model thief applies to a stolen model, one function each:
magnitude pruning, int8 and float16 quantisation. (Fine-tuning, retraining and
distillation are training runs; suspects.py builds them with ipguard_fast.train.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import Dataset

from ..train import train_classifier

__all__ = ["WEIGHT_LAYERS", "HalfPrecision", "prune_model", "quantize_int8", "quantize_weights", "weight_sparsity"]

# Layers whose weights pruning and int8 quantisation act on.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)



def prune_model(
    model: nn.Module,
    amount: float,
    *,
    finetune_set: Dataset | None = None,
    finetune_epochs: int = 0,
    lr: float = 1e-4,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Global unstructured L1 (magnitude) pruning of all conv/linear weights, in place.

    The smallest ``amount`` fraction of weights across the whole network is
    zeroed (global, so layers with many small weights lose more). If
    ``finetune_set`` is given the model is fine-tuned with the masks still
    attached, so pruned weights stay zero; the masks are then folded in
    (``prune.remove``) and a plain module is returned.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount: must be in [0, 1), got {amount!r}")
    targets = [(m, "weight") for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not targets:
        raise ValueError(f"model: ({type(model).__name__}) has no conv/linear weights to prune")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    if finetune_set is not None and finetune_epochs > 0:
        train_classifier(
            model,
            finetune_set,
            epochs=finetune_epochs,
            lr=lr,
            seed=seed,
            batch_size=batch_size,
            device=device,
        )
    for module, param_name in targets:
        prune.remove(module, param_name)
    return model.eval()


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all conv/linear weights."""
    weights = [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not weights:
        raise ValueError(f"model: ({type(model).__name__}) has no conv/linear weights")
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def quantize_int8(model: nn.Module, layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS) -> nn.Module:
    """Emulated int8 weight quantisation, in place: symmetric, per output channel.

    Each output channel's weights are rounded to one of 255 levels
    (scale = max|w| / 127) and stored back as float ("fake quantisation").
    ``torch.ao.quantization.quantize_dynamic`` is deprecated in this torch
    (it warns it will be removed, as do the quantized tensor types it
    relies on), so we emulate it instead. Two differences from it: conv
    layers are quantised too (by default), and activations stay float --
    dynamic quantisation would also round each batch's inputs to uint8,
    which makes outputs depend on the batch. The result is a plain float
    module, so it runs (and back-propagates) everywhere.
    """
    return quantize_weights(model, 8, layer_types)


@torch.no_grad()
def quantize_weights(model: nn.Module, bits: int,
                     layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS) -> nn.Module:
    """Emulated symmetric per-output-channel weight quantisation to ``bits`` bits, in place:
    each channel's weights rounded to 2 * (2**(bits-1) - 1) + 1 levels (int8: 255)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits: must be an int from 2 to 16, got {bits!r}")
    top = 2 ** (bits - 1) - 1
    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    if not layers:
        raise ValueError(f"layer_types: model ({type(model).__name__}) has no layers of layer_types to quantise")
    for layer in layers:
        w = layer.weight
        flat = w.reshape(w.shape[0], -1)
        scale = flat.abs().amax(dim=1).clamp_min(torch.finfo(w.dtype).tiny) / float(top)
        q = torch.round(flat / scale[:, None]).clamp_(-top, top)
        w.copy_((q * scale[:, None]).reshape_as(w))
    return model.eval()


class HalfPrecision(nn.Module):
    """A float16 copy of a model behind a float32 interface.

    Inputs are cast to half and logits back to float, so callers need not
    know. float16 conv/linear/batch-norm run on CPU in this torch (checked),
    so no weight-rounding emulation is needed. The wrapped model is a deep
    copy; the original is untouched. Calling ``.float()`` on the wrapper would
    undo the quantisation, so don't.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


