"""Audit (caller's state): a call leaves the caller's objects and torch's global state as
they were -- the global RNG, a model's frozen parameters -- on small models."""
import copy

import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import Subset, TensorDataset

from ipguard_fast.attacks import AttackContext, Prune, run_attack
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


def test_a_pruned_copy_fine_tunes_an_owner_with_frozen_weights():
    # protect's and evaluate's prune references fine-tune a copy of the owner; an owner with
    # a frozen layer (transfer learning) crashed them: "cannot register a hook on a tensor
    # that doesn't require gradient".
    owner = seeded(DigitsCNN, 0).eval()
    owner.features[0].weight.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in owner.named_parameters()}
    context = AttackContext(owner, _data(), 3)
    (pruned,) = run_attack("prune", Prune(0.5, finetune_epochs=1, lr=1e-2), context)
    weights = [pruned.features[0].weight, pruned.features[2].weight, pruned.hidden[1].weight, pruned.fc.weight]
    assert sum(int((w == 0).sum()) for w in weights) >= sum(w.numel() for w in weights) // 2
    assert not torch.equal(pruned.features[0].weight != 0, owner.features[0].weight != 0)
    flags = lambda model: {name: p.requires_grad for name, p in model.named_parameters()}  # noqa: E731
    assert flags(pruned) == flags(owner)
    assert all(torch.equal(p, before[name]) for name, p in owner.named_parameters())
    assert owner.features[0].weight.requires_grad is False


@pytest.mark.parametrize("finetune_epochs", [0, 1])
def test_prune_model_puts_back_the_frozen_flags(finetune_epochs):
    from ipguard_fast.attacks import prune_model

    model = seeded(DigitsCNN, 0)
    model.fc.weight.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    prune_model(model, 0.3, finetune_set=_data(), finetune_epochs=finetune_epochs)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


def _placed_model() -> nn.Module:
    model = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10)), 0)
    model(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))).sum().backward()
    return model


def _placement(model: nn.Module) -> list:
    return [(name, id(t), t.device, t.data_ptr(), t.detach().clone(), None if t.grad is None else
             (id(t.grad), t.grad.data_ptr(), t.grad.clone())) for name, t in
            [*model.named_parameters(), *model.named_buffers()]]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[:4] == y[:4] and torch.equal(x[4], y[4]) and (x[5] is None) == (y[5] is None)
        and (x[5] is None or (x[5][:2] == y[5][:2] and torch.equal(x[5][2], y[5][2]))) for x, y in zip(a, b))


def test_the_search_device_gives_back_the_models_very_tensors():
    # run_extraction(device=...) moves the model for the search: afterwards its buffers were new
    # tensors (a running mean the caller holds was no longer the model's) and its weights copies.
    from ipguard_fast.search.api import _on_device

    model = _placed_model()
    before = _placement(model)
    with _on_device(model, torch.device("meta")):
        assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert _same(_placement(model), before)


def test_a_move_that_fails_part_way_leaves_the_model_where_it_was():
    # Out of memory half way through model.to(device) left the caller's model split over two devices.
    from ipguard_fast.search.api import _on_device

    class Full(nn.Linear):
        def _apply(self, fn, recurse=True):
            raise RuntimeError("CUDA out of memory (simulated)")

    model = _placed_model()
    model.append(Full(10, 2))
    before = _placement(model)
    with pytest.raises(RuntimeError, match="out of memory"):
        with _on_device(model, torch.device("meta")):
            pass
    assert _same(_placement(model), before)


def test_distillation_never_moves_the_callers_teacher():
    # train_classifier(loss="kd", teacher=..., device="cuda") left a CPU teacher on the GPU:
    # the caller's next teacher(images) failed. The teacher now runs where it is.
    from ipguard_fast.train import train_classifier

    moves = []

    class Teacher(nn.Sequential):
        def _apply(self, fn, recurse=True):
            moves.append(fn)
            return super()._apply(fn, recurse)

    teacher = seeded(lambda: Teacher(nn.Flatten(), nn.Linear(64, 10)), 0).train()
    student = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 1)
    before = [t.detach().clone() for t in teacher.parameters()]
    train_classifier(student, _data(), epochs=1, loss="kd", teacher=teacher)
    assert moves == [] and teacher.training
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), before))
