"""protect()'s student part (selection/students.py): the paired score, the pairs in the
recipe, and a small protect run that makes the part and calibrates its threshold on
innocents held out of its choice."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

import ipguard_fast as ig
from ipguard_fast._validate import ArgumentError
from ipguard_fast.data import load_digits
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.models import train_digits_model
from ipguard_fast.selection import ProtectConfig, run_protect
from ipguard_fast.selection.recipe import RECIPE, STUDENT_PAIRS, capped_recipe, check_recipe
from ipguard_fast.selection.significance import significant_threshold
from ipguard_fast.selection.students import PART, kind_left_out_floor, paired_scores
from ipguard_fast.train import TrainRecipe


def test_paired_score_is_students_minus_twins_minus_the_close_innocents():
    students = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 1]], dtype=torch.bool)
    twins = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)
    close = torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)
    assert paired_scores(students, twins, close).tolist() == [1.0, -0.5, -1.0, -0.5]


def test_paired_score_refuses_rows_that_do_not_cover_the_same_points():
    with pytest.raises(ValueError, match="different points"):
        paired_scores(torch.ones(2, 3), torch.ones(2, 4), torch.ones(1, 3))
    with pytest.raises(ValueError, match="twins"):
        paired_scores(torch.ones(2, 3), torch.ones(0, 3), torch.ones(1, 3))


def test_the_floor_is_what_a_close_kind_keeps_of_points_chosen_without_it():
    # points 0-3; the students keep 0 and 1, kind "a" keeps 0 and kind "b" keeps 1: each kind
    # alone pushes the choice to the point the other keeps, and keeps none of it
    agrees = torch.tensor([[1, 1, 0, 0],    # student
                           [0, 0, 0, 0],    # twin
                           [1, 0, 0, 0],    # close, kind a
                           [0, 1, 0, 0],    # close, kind b
                           [1, 1, 1, 1]],   # not close: never in the floor
                          dtype=torch.bool)
    kinds = ["student", "twin", "a", "b", "other"]
    take_one = lambda scores: torch.argsort(-scores, stable=True)[:1]  # noqa: E731
    # without "a": b's penalty leaves point 0, which a keeps; without "b": point 1, which b keeps
    assert kind_left_out_floor(agrees, [0], [1], [2, 3], kinds, take_one) == (1.0, "a")
    assert kind_left_out_floor(agrees, [0], [1], [2], kinds, take_one) == (1.0, "a")   # alone: no close term left
    assert kind_left_out_floor(agrees, [0], [1], [], kinds, take_one) == (0.0, None)


def test_each_student_has_a_twin_of_its_architecture_seed_and_training():
    students = {k.kind: k for k in STUDENT_PAIRS if k.role == "student"}
    twins = [k for k in STUDENT_PAIRS if k.role == "twin"]
    assert len(students) == len(twins) == 2
    for twin in twins:
        student = students[twin.seed_name]   # the same seed: the same draw of weights and batch order
        assert student.settings.student == twin.settings.arch
        assert (student.settings.lr, student.settings.epochs) == (twin.settings.lr, twin.settings.epochs)
        assert student.settings.answers == "probabilities" and not twin.settings.match_owner


def test_the_config_adds_the_pairs_only_when_asked_and_keeps_them_through_the_owner_recipe():
    assert not any(k.role == "student" for k in ProtectConfig().effective_recipe)
    config = ProtectConfig(students=50, train_recipe=TrainRecipe(epochs=7, lr=0.01))
    kinds = {k.kind for k in config.effective_recipe}
    assert {k.kind for k in STUDENT_PAIRS} <= kinds and "independent-owner-owner-recipe" in kinds
    with pytest.raises(ArgumentError) as error:
        ProtectConfig(students=-1)
    assert error.value.argument == "students"
    with pytest.raises(ArgumentError, match="twin"):
        check_recipe(RECIPE + tuple(k for k in STUDENT_PAIRS if k.role == "student"))


def test_a_cap_keeps_students_and_twins_at_the_same_epochs():
    capped = capped_recipe(STUDENT_PAIRS, 3)
    assert {k.settings.epochs for k in capped} == {3}


@pytest.fixture(scope="module")
def parted():
    """protect with a student part of 12 points on 200 digits (references capped at 2 epochs)."""
    train = load_digits("train")
    data = TensorDataset(train.tensors[0][:200], train.tensors[1][:200])
    owner = train_digits_model("cnn", seed=0)
    config = ProtectConfig(n=8, pool_factor=2, replicas=1, validation_replicas=1, epoch_cap=2, students=12)
    with warnings.catch_warnings():   # 8 points at 2 epochs: a part may be unable to show a copy, and says so
        warnings.simplefilter("ignore")
        result = run_protect(owner, data, config, progress=False)
    return owner, result


def test_protect_makes_a_student_part_with_a_threshold_over_every_innocent_reference(parted):
    owner, result = parted
    part = result.students
    assert isinstance(part, FingerprintSet) and len(part) == 12 and part.meta["part"] == PART
    recorded = part.meta["student_part"]
    innocents = recorded["innocent_rates"]
    # every twin and negative of every split sets the level (the selecting ones can only raise it); no student
    assert {name for name in innocents if "twin-" in name} == {r.name for r in result.references if r.role == "twin"}
    assert {r.name for r in result.references if r.role == "negative"} <= set(innocents)
    assert not any("student-" in name for name in innocents)
    assert recorded["held_out"] and all("/r1" in name for name in recorded["held_out"])   # the validation replica
    assert recorded["level"] == pytest.approx(max([*innocents.values(), recorded["chance"], recorded["floor"]]),
                                              abs=1e-4)
    assert recorded["floor_kind"].startswith("independent-owner-")   # an owner-like kind, chosen without
    threshold, shown = significant_threshold(recorded["level"], 12, 0.025)   # half of the default 0.05
    assert part.meta["threshold"] == threshold and part.meta["threshold_shown"] == shown
    selection = part.meta["selection"]
    assert selection["students"] == ["protect/student-owner/r0", "protect/student-generic/r0"]
    assert all(name.startswith("protect/independent-owner-") for name in selection["close"])
    # the part's points are the pool's own, and the owner gives every one its label
    assert ig.matching_rate(owner, part) == 1.0
    # both parts at half the significance; the main file says where its student part is
    assert result.report.threshold_significance == 0.025
    assert result.fingerprints.meta["student_part"] == {"points": 12, "threshold": threshold}


def test_the_student_part_round_trips_and_verifies_as_any_file(parted, tmp_path):
    owner, result = parted
    path = result.students.save(tmp_path / "fp.students.safetensors")
    loaded = FingerprintSet.load(path)
    assert torch.equal(loaded.images, result.students.images) and loaded.meta["part"] == PART
    assert ig.verify(owner, loaded).matching_rate == 1.0



def test_a_suspect_is_a_copy_when_either_part_shows_it(parted):
    owner, result = parted
    parts = {"main": result.fingerprints, "students": result.students}
    verdict = ig.verify_parts(owner, parts)
    assert list(verdict.parts) == ["main", "students"]
    assert verdict.parts["students"].matching_rate == 1.0   # the owner keeps its own points
    assert verdict.parts["students"].pirated == result.students.meta["threshold_shown"]
    assert verdict.pirated == any(v.pirated for v in verdict.parts.values())
    assert verdict.shown_by == [name for name, v in verdict.parts.items() if v.pirated]
    assert verdict.to_dict()["parts"]["students"]["threshold"] == result.students.meta["threshold"]
    with pytest.raises(ValueError, match="parts"):
        ig.verify_parts(owner, {"main": result.fingerprints, "students": "fp.safetensors"})
    with pytest.raises(ValueError, match="parts"):
        ig.verify_parts(owner, {})


def test_the_command_verifies_both_files_and_refuses_a_main_file_as_the_student_part(parted, tmp_path, capsys):
    from safetensors.torch import save_file

    from ipguard_fast.cli import main

    owner, result = parted
    weights = tmp_path / "owner.safetensors"
    save_file(owner.state_dict(), weights)
    main_file = result.fingerprints.save(tmp_path / "fp.safetensors")
    part_file = result.students.save(tmp_path / "fp.students.safetensors")
    argv = ["verify", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--no-isolate",
            "--fingerprints", str(main_file)]
    assert main(argv + ["--student-part", str(part_file), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["parts"]) == {"main", "students"} and printed["parts"]["students"]["matching_rate"] == 1.0
    assert main(argv + ["--student-part", str(part_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("main part: ") and lines[1].startswith("student part: ")
    assert lines[2].startswith("PIRATED" if printed["pirated"] else "not pirated")
    assert main(argv + ["--student-part", str(main_file)]) == 2
    assert "--student-part" in capsys.readouterr().err
    assert main(argv + ["--student-part", str(part_file), "--threshold", "0.5"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_evaluate_judges_the_student_part_and_both_parts_together(parted):
    from ipguard_fast.evaluation.report import summary_table
    from ipguard_fast.evaluation.suspects import negative_suspects, positive_suspects
    from ipguard_fast.models import DigitsMLP

    owner, result = parted
    train = load_digits("train")
    small = TensorDataset(train.tensors[0][:200], train.tensors[1][:200])
    suspects = positive_suspects(owner, small, quick=True, families=("FTLL", "prune"))
    suspects += negative_suspects(small, {"mlp": DigitsMLP}, seeds=(1, 2), epochs=1)
    judged = ig.evaluate(owner, input_shape=(1, 8, 8), suspects=suspects, n=8, methods=("selected",),
                         selected=result.fingerprints, student_part=result.students, log=lambda *a: None)
    assert [r.method for r in judged.runs] == ["selected", "students"]
    part = judged.run("students")
    assert part.threshold == result.students.meta["threshold"] and part.n_fingerprints == 12
    combined = judged.combined_verdicts()
    main = judged.run("selected").verdicts
    assert combined["false_accusations"] == sorted(set(main["false_accusations"]) |
                                                   set(part.verdicts["false_accusations"]))
    assert set(combined["missed"]) == set(main["missed"]) & set(part.verdicts["missed"])
    assert judged.to_dict()["combined_verdicts"] == combined
    assert "student part together" in summary_table(judged)
    with pytest.raises(ValueError, match="student_part"):   # a student part judged alone, or a main file as one
        ig.evaluate(owner, input_shape=(1, 8, 8), suspects=suspects, ks=(2.0,), n=8, student_part=result.students,
                    log=lambda *a: None)
    with pytest.raises(ValueError, match="student_part"):
        ig.evaluate(owner, input_shape=(1, 8, 8), suspects=suspects, n=8, methods=("selected",),
                    selected=result.fingerprints, student_part=result.fingerprints, log=lambda *a: None)


def test_bad_parts_are_refused_before_a_worker_starts_for_a_file(monkeypatch, tmp_path):
    import ipguard_fast.io.suspects as suspects

    monkeypatch.setattr(suspects, "IsolatedSuspect", lambda *a, **k: pytest.fail("a worker started"))
    for parts in ({}, {"main": "fp.safetensors"}, ["fp.safetensors"]):
        with pytest.raises(ValueError, match="parts"):
            ig.verify_parts(tmp_path / "suspect.pt", parts)

    def fingerprints(classes, shape):
        labels = torch.arange(4) % classes
        return FingerprintSet(images=torch.rand(4, *shape), labels=labels, source_labels=(labels + 1) % classes,
                              margins=torch.ones(4), steps=torch.zeros(4, dtype=torch.int64),
                              meta={"num_classes": classes})

    main = fingerprints(10, (1, 8, 8))
    ig.verdicts.check_parts({"main": main, "students": fingerprints(10, (1, 8, 8))})
    for other, what in ((fingerprints(3, (1, 8, 8)), "classes 3"), (fingerprints(10, (1, 4, 4)), "input shape")):
        with pytest.raises(ValueError, match=f"parts: 'students' has {what}"):
            ig.verify_parts(tmp_path / "suspect.pt", {"main": main, "students": other})


def test_protect_parts_returns_both_files_from_protects_keywords(monkeypatch):
    import importlib

    protect_module = importlib.import_module("ipguard_fast.selection.protect")   # the package's `protect` is the function

    owner = train_digits_model("cnn", seed=0, epochs=1)
    train = load_digits("train")
    data = TensorDataset(train.tensors[0][:40], train.tensors[1][:40])
    seen = {}

    def run(owner, data, config, **keywords):   # the run itself is the fixture's: here, what it is asked
        seen.update(config=config, **keywords)
        return protect_module.ProtectResult("main file", None, [], "student part")

    monkeypatch.setattr(protect_module, "run_protect", run)
    parts = ig.protect_parts(owner, data, 8, students=12, seed=3, epoch_cap=2, negatives=["model.pt"], progress=False)
    assert parts == {"main": "main file", "students": "student part"}
    config = seen["config"]
    assert (config.n, config.students, config.seed, config.epoch_cap) == (8, 12, 3, 2)
    assert seen["negatives"] == ["model.pt"] and seen["progress"] is False
    assert ig.protect(owner, data, 8, progress=False) == "main file" and seen["config"].students == 0
    for keywords, named in (({"students": 0}, "students"), ({"references": {"positives": []}}, "references"),
                            ({"student": 12}, "student")):
        with pytest.raises(ArgumentError, match=f"^{named}:"):
            ig.protect_parts(owner, data, 8, **keywords)
