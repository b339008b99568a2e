"""Audit (caller's state): a call leaves the caller's objects and torch's global state as
they were -- the global RNG, a model's frozen parameters -- on small models."""
import copy

import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import Subset, TensorDataset

from ipguard_fast.models import DigitsCNN
from ipguard_fast.nn import seeded
from ipguard_fast.selection.cache import _model_from
from ipguard_fast.selection.mistakes import mistakes_fingerprints
from ipguard_fast.selection.plan_costs import train_step_seconds
from ipguard_fast.train import accuracy, mean_loss


def _data(count: int = 48, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(count, 1, 8, 8, generator=generator),
                         torch.randint(0, 10, (count,), generator=generator))


def _leaves_rng(call) -> None:
    before = torch.get_rng_state()
    call()
    assert torch.equal(torch.get_rng_state(), before), "the caller's global RNG was drawn from"


def test_mistakes_and_accuracy_leave_the_global_rng():
    # A DataLoader without a generator of its own draws its base seed from the global RNG:
    # mistakes_fingerprints (protect's held_out_data, evaluate's "mistakes") and accuracy /
    # mean_loss on a data set that is no TensorDataset (evaluate's test_set) did.
    owner = seeded(DigitsCNN, 0).eval()
    data = _data()
    _leaves_rng(lambda: mistakes_fingerprints(owner, data, 10))
    _leaves_rng(lambda: accuracy(owner, Subset(data, range(30))))
    _leaves_rng(lambda: mean_loss(owner, Subset(data, range(30))))


def test_protect_plan_and_cached_references_leave_the_global_rng():
    # The plan times a training step of a copy of the owner: its dropout drew from the
    # caller's RNG. A cached reference loads into a skeleton whose fresh weights drew too.
    owner = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10)), 0)
    data = _data()
    _leaves_rng(lambda: train_step_seconds(copy.deepcopy(owner), data.tensors[0], data.tensors[1], "cpu"))
    weights = save_safetensors({k: v.contiguous() for k, v in owner.state_dict().items()})
    skeleton = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10))  # noqa: E731
    _leaves_rng(lambda: _model_from(weights, skeleton))
