"""The engine on a GPU: CUDA-graph replay equals eager, mixed precision keeps float32 acceptance.

Skipped without a GPU; benchmarks/gpu_check.sh runs them on the device."""
import pytest
import torch

from conftest import requires_cuda, requires_extension
from ipguard_fast import reference
from ipguard_fast.models import train_digits_model
from ipguard_fast.search import extract_fingerprints

pytestmark = [requires_extension, requires_cuda]


@pytest.fixture(scope="module")
def owner():
    return train_digits_model("cnn", seed=0).cuda()


def run(model, **kw):
    opts = dict(k=3.0, input_shape=(1, 8, 8), batch_size=32, seed=0, progress=False, max_steps=400, device="cuda")
    opts.update(kw)
    return extract_fingerprints(model, 48, **opts)


def test_cuda_graph_engine_equals_eager(owner):
    eager = run(owner, cuda_graph=False)
    graph = run(owner, cuda_graph=True)
    assert torch.equal(eager.labels, graph.labels) and torch.equal(eager.steps, graph.steps)
    # Measured on the H200: equal labels and steps, images within 2e-7 (cuDNN may pick
    # other algorithms while capturing than in eager mode).
    torch.testing.assert_close(eager.images, graph.images, rtol=0, atol=1e-6)


@pytest.mark.parametrize("check_every", [1, 8])
def test_harvest_period_does_not_change_results(owner, check_every):
    base = run(owner, check_every=4)
    other = run(owner, check_every=check_every)
    assert torch.equal(base.labels, other.labels) and torch.equal(base.steps, other.steps)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_search_is_accepted_in_float32(owner, amp):
    fps = run(owner, amp=amp, cuda_graph=True, channels_last=True)
    assert len(fps) == 48
    with torch.no_grad():
        logits = owner.float()(fps.images.cuda()).float().cpu()
    loss, _ = reference.logit_gap_loss(logits, fps.source_labels, fps.labels, 3.0)
    assert (loss == 0).all() and torch.equal(logits.argmax(1), fps.labels)


@pytest.mark.parametrize("labels", ["predicted", "least_likely"])
def test_gpu_candidates_match_cpu_candidates(owner, labels):
    """Label modes that run the model on the start points pick the same (i, j) on either device.

    (With labels="random" everything is drawn on the CPU and only moved, so that mode cannot differ.)"""
    import copy

    from ipguard_fast.search.instruments import candidate_batch
    cpu_owner = copy.deepcopy(owner).cpu()
    x_gpu, i_gpu, j_gpu = candidate_batch(owner, (1, 8, 8), 10, range(64), device=torch.device("cuda"), seed=5,
                                          labels=labels)
    x_cpu, i_cpu, j_cpu = candidate_batch(cpu_owner, (1, 8, 8), 10, range(64), device=torch.device("cpu"), seed=5,
                                          labels=labels)
    assert torch.equal(x_gpu.cpu(), x_cpu)
    assert torch.equal(i_gpu.cpu(), i_cpu) and torch.equal(j_gpu.cpu(), j_cpu)


def test_extract_on_another_device_moves_the_model_back():
    """device='cuda' for a CPU model: the search runs on the GPU, the caller's model stays on the CPU."""
    cpu_owner = train_digits_model("cnn", seed=0, epochs=1)
    fps = extract_fingerprints(cpu_owner, 4, k=1.0, input_shape=(1, 8, 8), device="cuda", progress=False,
                               max_steps=200)
    assert len(fps) == 4
    assert all(p.device.type == "cpu" for p in cpu_owner.parameters())
    assert all(b.device.type == "cpu" for b in cpu_owner.buffers())
