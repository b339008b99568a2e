"""torchrun ranks that were not given the same work: refused on every rank with the argument
named, never merged into one file; the shared pilot asks every rank for one count; the
environment's RANK and WORLD_SIZE checked before anything waits for peers (found by audit)."""
import os
import subprocess
import sys

import pytest
import torch

from ipguard_fast.cli import main
from ipguard_fast.io import save_torchscript
from ipguard_fast.models import DigitsCNN, train_digits_model
from ipguard_fast.nn import seeded
from ipguard_fast.search.distributed import Communicator, torchrun_ranks
from ipguard_fast.selection import ProtectConfig
from ipguard_fast.selection.inputs import given_negatives


class OtherRank(Communicator):
    """Rank 1 of 2, whose peer (rank 0) sent `peer` in the exchange."""

    rank, world = 1, 2

    def __init__(self, peer):
        self.peer = peer

    def exchange(self, payload) -> list:
        return [self.peer, payload]


class Recorder(Communicator):
    """Rank 0 of 2, whose peer sent the same: keeps what was exchanged."""

    rank, world = 0, 2

    def exchange(self, payload) -> list:
        self.sent = payload
        return [payload, payload]


def _small_data():
    return torch.utils.data.TensorDataset(torch.rand(16, 1, 8, 8), torch.arange(16) % 10)


def _sent(monkeypatch, module, call):
    recorder = Recorder()
    monkeypatch.setattr(module, "communicator", lambda: recorder)
    call()
    return recorder.sent


def test_agree_names_the_first_setting_that_differs_on_every_rank():
    Communicator().agree({"seed": 1})   # one process: nothing to compare
    OtherRank({"n": 4, "seed": 7}).agree({"n": 4, "seed": 7})
    with pytest.raises(ValueError, match=r"^seed: rank 1 was given 8, rank 0 7: every torchrun rank"):
        OtherRank({"n": 4, "seed": 7}).agree({"n": 4, "seed": 8})
    with pytest.raises(ValueError, match=r"^model: rank 1 was given None, rank 0 'x'"):
        OtherRank({"model": "x"}).agree({})


def test_protect_ranks_given_other_settings_owners_or_data_are_refused(monkeypatch):
    import ipguard_fast.selection.stages as stages

    owner, data = seeded(DigitsCNN, 0), _small_data()
    base = ProtectConfig(n=4, replicas=1)
    negatives = given_negatives([seeded(DigitsCNN, 1), seeded(DigitsCNN, 2)])
    rank0 = _sent(monkeypatch, stages, lambda: stages.agree_between_ranks(owner, data, base, negatives=negatives))
    cases = {"seed": (owner, data, ProtectConfig(n=4, replicas=1, seed=1), negatives),
             "refine": (owner, data, ProtectConfig(n=4, replicas=1, refine=False), negatives),
             "owner": (seeded(DigitsCNN, 5), data, base, negatives),
             "train_data": (owner, _small_data(), base, negatives),
             "negatives": (owner, data, base, negatives[:1])}
    for name, (model, items, config, given) in cases.items():
        monkeypatch.setattr(stages, "communicator", lambda: OtherRank(rank0))
        with pytest.raises(ValueError, match=f"^{name}: rank 1 was given "):
            stages.agree_between_ranks(model, items, config, negatives=given)
    stages.agree_between_ranks(owner, data, base, negatives=negatives)   # the same inputs: agreed


def test_the_shared_pilot_asks_every_rank_for_rank_0s_count(monkeypatch):
    """The warm-up's time decides how many points the pilot asks for under a budget: each
    rank's own clock gave ranks different n and max_candidates in one shared extraction
    (37 and 36 on two gloo ranks here)."""
    import ipguard_fast.selection.plan_costs as plan_costs

    asked = []
    monkeypatch.setattr(plan_costs, "extract_fingerprints", lambda owner, n, **options: asked.append(n) or [0] * n)
    monkeypatch.setattr(plan_costs, "communicator", lambda: OtherRank(10.0))   # rank 0's warm-up took 10 s
    plan_costs._pilot_seconds(seeded(DigitsCNN, 0), torch.rand(4, 1, 8, 8), (1, 8, 8), 1.0, {}, 0, limit=120.0)
    assert asked == [1, 12]


def test_evaluation_ranks_given_other_suspects_are_refused(monkeypatch):
    import ipguard_fast.evaluation.pipeline as pipeline
    from ipguard_fast.evaluation.config import EvaluationConfig
    from ipguard_fast.evaluation.suspects import Suspect

    owner, config = seeded(DigitsCNN, 0), EvaluationConfig(ks=(2.0,), n=4)
    suspects = [Suspect("copy", "FTLL", "positive", seeded(DigitsCNN, 0)),
                Suspect("other", "independent-cnn", "negative", seeded(DigitsCNN, 1))]
    recorder = Recorder()
    pipeline._agree(recorder, owner, suspects, config, None, None)
    retrained = suspects[:1] + [Suspect("other", "independent-cnn", "negative", seeded(DigitsCNN, 2))]
    with pytest.raises(ValueError, match="^suspects: rank 1 was given "):
        pipeline._agree(OtherRank(recorder.sent), owner, retrained, config, None, None)


@pytest.mark.parametrize("env, problem", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE: expected an int"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK: expected a rank in [0, WORLD_SIZE=2), got 2"),
    ({"RANK": "3"}, "RANK: expected a rank in [0, WORLD_SIZE=1), got 3"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE: expected a positive int")])
def test_a_bad_torchrun_environment_is_refused_naming_the_variable(monkeypatch, env, problem):
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_ranks() == (0, 1)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as caught:
        torchrun_ranks()
    assert str(caught.value).startswith(problem)


def test_a_rank_outside_the_world_is_a_usage_error_not_a_silent_success(monkeypatch, tmp_path, capsys):
    """RANK=3 with no WORLD_SIZE made the command a non-main rank of one: it exited 0 and
    wrote nothing."""
    model = tmp_path / "owner.pt"
    save_torchscript(seeded(DigitsCNN, 0), torch.rand(2, 1, 8, 8), model)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")
    out = tmp_path / "fps.safetensors"
    code = main(["extract", "--model", str(model), "--input-shape", "1,8,8", "-n", "2", "--k", "1", "--max-steps", "50",
                 "--no-progress", "--no-isolate", "--out", str(out)])
    assert code == 2 and "RANK: expected a rank in [0, WORLD_SIZE=1), got 3" in capsys.readouterr().err
    assert not out.exists()


_RANK_ARGS = """import os, sys
from ipguard_fast.cli import main
extra = os.environ.get("RANK%s_ARGS" % os.environ["RANK"], "")
sys.exit(main(sys.argv[1:] + extra.split()))
"""


def test_torchrun_ranks_given_different_seeds_write_no_file(tmp_path):
    """Rank 1 searched seed 8's candidates, rank 0 seed 7's, and rank 0 wrote the mix as seed 7
    (exit 0); with another model on rank 1, a file of which the owner's own model kept 62 %."""
    model = tmp_path / "owner.pt"
    save_torchscript(train_digits_model("cnn", seed=0, epochs=1), torch.rand(2, 1, 8, 8), model)
    script = tmp_path / "rank_args.py"
    script.write_text(_RANK_ARGS)
    out = tmp_path / "fps.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", RANK1_ARGS="--seed 8")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), "extract", "--model", str(model), "--input-shape", "1,8,8", "-n", "4",
                           "--k", "1", "--seed", "7", "--max-steps", "100", "--no-progress", "--no-isolate",
                           "--out", str(out)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert proc.stderr.count("ipguard extract: error: --seed: rank 1 was given 8, rank 0 7") == 2, proc.stderr
    assert not out.exists()
