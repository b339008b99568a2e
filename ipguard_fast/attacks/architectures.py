"""The architectures an attack trains from scratch: the owner's own (fresh weights), a
generic MLP or a generic conv net for the input shape, or the caller's factory."""
from __future__ import annotations

import copy
from typing import Callable, Union

import torch
from torch import nn

from .._validate import ArgumentError
from ..models.generic import GenericCNN, GenericMLP
from ..nn import reinitialize
from .registry import AttackContext

__all__ = ["Architecture", "factory_for", "fresh_copy_factory"]

# "owner": the owner's architecture re-drawn; "generic": GenericMLP; "generic-cnn":
# GenericCNN for image inputs [C, H, W] (GenericMLP for any other shape); or a factory.
Architecture = Union[str, Callable[[], nn.Module]]


def factory_for(arch: Architecture, context: AttackContext) -> Callable[[], nn.Module]:
    """A factory of untrained models of `arch`."""
    if callable(arch):
        return arch
    if arch == "owner":
        return fresh_copy_factory(context.owner)
    if arch == "generic":
        shape, classes = context.shapes()
        return lambda: GenericMLP(shape, classes)
    if arch == "generic-cnn":
        shape, classes = context.shapes()
        if len(shape) == 3:
            return lambda: GenericCNN(shape, classes)
        return lambda: GenericMLP(shape, classes)
    raise ArgumentError("arch", f"expected 'owner', 'generic', 'generic-cnn' or a model factory, got {arch!r}")


def fresh_copy_factory(owner: nn.Module) -> Callable[[], nn.Module]:
    """The owner's architecture with fresh weights: every layer's reset_parameters under the
    caller's RNG (seeded by `nn.seeded`), and any parameter no reset touched (a custom
    module's, a ViT's class token) re-drawn with the same mean and spread, so nothing
    trained is inherited."""

    def make() -> nn.Module:
        model = copy.deepcopy(owner)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        reinitialize(model, int(torch.randint(0, 2**62, ())))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.numel() > 1 and torch.equal(p, before[name]) and float(p.std()) > 0:
                    p.copy_(torch.randn_like(p) * p.std() + p.mean())
        return model

    return make
