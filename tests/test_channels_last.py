"""modules.channels_last: conv weights in channels_last for a block and the very tensors put
back afterwards (also on an error, and for weights two modules share); the same outputs
up to rounding; and the search's channels_last option leaves the caller's model as it came."""
import pytest
import torch
from torch import nn

from ipguard_fast import extract_fingerprints
from ipguard_fast.models import DigitsCNN, DigitsMLP
from ipguard_fast.modules import channels_last, has_conv_weights
from ipguard_fast.nn import seeded


def _conv_tensors(model):
    return [t for t in [*model.parameters(), *model.buffers()] if t.dim() == 4]


def _same(tensors, before) -> bool:
    """Each tensor holds the very storage and strides it held before."""
    return all(t.data_ptr() == b.data_ptr() and t.stride() == b.stride() for t, b in zip(tensors, before, strict=True))


def test_conv_weights_are_channels_last_inside_and_the_same_tensors_after():
    model = seeded(DigitsCNN, 0)
    before = [t.data for t in _conv_tensors(model)]
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = model(x)
    with channels_last([model, model, DigitsMLP(), lambda images: images]):   # twice, an MLP, a callable
        inside = _conv_tensors(model)   # (a 1-channel conv's weight is both layouts at once)
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in inside)
        assert any(not t.is_contiguous() for t in inside)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert _same(_conv_tensors(model), before)
    assert all(t.is_contiguous() for t in _conv_tensors(model))


def test_restored_after_an_error_and_for_shared_weights():
    first = seeded(DigitsCNN, 0)
    second = nn.Sequential(first.features[0])          # shares the first conv with `first`
    before = [t.data for t in _conv_tensors(first)]
    with pytest.raises(RuntimeError, match="inside"):
        with channels_last([first, second]):
            raise RuntimeError("inside")
    assert _same(_conv_tensors(first), before)


def test_disabled_changes_nothing_and_has_conv_weights():
    model = seeded(DigitsCNN, 0)
    with channels_last([model], enabled=False):
        assert all(t.is_contiguous() for t in _conv_tensors(model))
    assert has_conv_weights(model) and not has_conv_weights(DigitsMLP()) and not has_conv_weights(len)


def test_the_search_in_channels_last_leaves_the_model_as_it_came():
    model = seeded(DigitsCNN, 0)
    before = [t.data for t in _conv_tensors(model)]
    # 300 steps: every candidate of seed 0 lands by 246 (1,000 cost 3x the time for the same points)
    fps = extract_fingerprints(model, 8, k=0.01, input_shape=(1, 8, 8), channels_last=True, seed=0, progress=False,
                               max_steps=300)
    assert len(fps) == 8
    assert _same(_conv_tensors(model), before)


def test_canonical_layout_gives_one_channel_weights_the_contiguous_strides():
    """A 1-channel conv weight is "contiguous" in either layout, so .to(memory_format=...)
    leaves channels_last strides behind; oneDNN rounds by the strides, so a model trained
    channels_last and its copy loaded from a file would differ. Attacks hand out canonical
    models, and their outputs equal those of a copy built from the state dict."""
    from ipguard_fast.attacks import AttackContext, Independent, run_attack
    from ipguard_fast.modules import canonical_layout
    from ipguard_fast.precision import chosen_precision

    model = seeded(DigitsCNN, 0)
    first = model.features[0].weight
    first.data = first.data.clone(memory_format=torch.channels_last)
    assert first.stride() != (9, 9, 3, 1) and first.is_contiguous()
    assert canonical_layout(model) is model and first.stride() == (9, 9, 3, 1)

    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1)))
    context = AttackContext(seeded(DigitsCNN, 0), data, 0, input_shape=(1, 8, 8), num_classes=10)
    with chosen_precision("fp32-cl"):
        snapshot, final = run_attack("independent", Independent("owner", 1e-3, epochs=(1, 2)), context)
    for built in (snapshot, final):
        assert all(t.stride() == torch.empty(t.shape).stride() for t in built.parameters() if t.dim() == 4)
        fresh = DigitsCNN()
        fresh.load_state_dict(built.state_dict())
        with channels_last([built, fresh]):
            assert torch.equal(built.eval()(x), fresh.eval()(x))


class _ViewsItsWeights(nn.Module):
    """A conv net whose forward views a conv weight and a 4-D table: the first fails on a
    channels_last weight (not contiguous), the second would if it were laid out so."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)   # 2 input channels: channels_last is not contiguous
        self.table = nn.Parameter(torch.zeros(1, 4, 8, 8))
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x):
        scale = self.conv.weight.view(-1).abs().mean()
        return self.fc(((self.conv(x) + self.table.view(1, 4, 8, 8)) * scale).flatten(1))


def test_only_convolution_weights_change_layout():
    model = _ViewsItsWeights()
    with channels_last([model]):
        assert model.table.is_contiguous()
        assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_plan_keeps_the_contiguous_layout_for_an_owner_that_cannot_take_the_other():
    from ipguard_fast.selection.plan_costs import measure_unit_costs

    owner = seeded(_ViewsItsWeights, 0)
    images = torch.rand(32, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = owner(images).argmax(1)
    before = [(t.data_ptr(), t.stride()) for t in owner.parameters()]
    costs = measure_unit_costs(owner, images, labels, input_shape=(2, 8, 8), num_classes=10, pilot_k=0.01,
                               search_options={}, seed=0)
    assert costs.channels_last is False
    assert [(t.data_ptr(), t.stride()) for t in owner.parameters()] == before
    with pytest.raises(RuntimeError):   # asked for, it is not silently dropped
        measure_unit_costs(owner, images, labels, input_shape=(2, 8, 8), num_classes=10, pilot_k=0.01,
                           search_options={"channels_last": True}, seed=0)
    assert [(t.data_ptr(), t.stride()) for t in owner.parameters()] == before
