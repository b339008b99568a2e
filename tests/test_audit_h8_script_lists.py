"""A list or dict the TorchScript forward makes may be appended to, assigned into or
reordered although it holds the forward's input (``feats = [x]; feats.append(conv(x))``, a
loop building a list of features from the input): a generic list or dict operator changes
the container the graph made, never an element's data. What is taken out of such a
container still is not the graph's own, so writes laundered through it stay refused."""
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ipguard_fast.io.formats import load_model
from ipguard_fast.io.weights import ModelLoadError


class FeaturesFromTheInput(nn.Module):
    """A loop building a list of features that starts with the input (DenseNet, U-Net skips)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        feats = [x]
        for conv in self.convs:
            feats.append(F.relu(conv(feats[-1])))
        return self.fc(torch.cat(feats, 1).mean((2, 3)))


class DictFromTheInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        parts: Dict[str, torch.Tensor] = {"input": x}
        parts["conv"] = self.conv(x)
        return self.fc(torch.cat([parts["input"], parts["conv"]], 1).mean((2, 3)))


class AppendsThenWritesTheInput(nn.Module):
    def forward(self, x):
        held = [x]
        held.append(x * 2)
        held[0].add_(1)
        return held[1].flatten(1)[:, :10]


class AssignsThenWritesTheInput(nn.Module):
    def forward(self, x):
        held = [x * 2, x]
        held[0] = x * 3
        held[1].mul_(0)
        return held[0].flatten(1)[:, :10]


class AssignsIntoADictThenWritesItsBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("memory", torch.zeros(10))

    def forward(self, x):
        held: Dict[str, torch.Tensor] = {"memory": self.memory}
        held["out"] = x.flatten(1)[:, :10]
        held["memory"].add_(1)
        return held["out"] + held["memory"]


class AppendsThenWritesItsBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("memory", torch.zeros(10))

    def forward(self, x):
        held: List[torch.Tensor] = [self.memory]
        held.append(x.flatten(1)[:, :10])
        out = held[0]
        out.add_(1)
        return held[0] + out


def saved(module: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


@pytest.mark.parametrize("cls", [FeaturesFromTheInput, DictFromTheInput])
def test_a_list_or_dict_the_forward_makes_from_its_input_loads(cls, tmp_path):
    module = cls().eval()
    loaded = load_model(saved(module, tmp_path / "honest.pt"))
    images = torch.rand(2, 3, 8, 8)
    kept = images.clone()
    assert torch.equal(loaded(images), module(images)) and torch.equal(images, kept)


@pytest.mark.parametrize("cls", [AppendsThenWritesTheInput, AssignsThenWritesTheInput, AssignsIntoADictThenWritesItsBuffer,
                                 AppendsThenWritesItsBuffer])
def test_a_write_through_such_a_container_stays_refused(cls, tmp_path):
    with pytest.raises(ModelLoadError, match="refused: .* writes into"):
        load_model(saved(cls(), tmp_path / "laundered.pt"))
