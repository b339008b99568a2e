"""A bed's suspects restricted to some families (Bed.variants / suspects(families=...),
`ipguard evaluate --families`): only those copies, every independent still; unknown or
absent families refused naming the argument, before any training."""
import pytest

from ipguard_fast.cli import main
from ipguard_fast.evaluation import make_bed
from ipguard_fast.evaluation.beds import check_families
from ipguard_fast._validate import ArgumentError


def _bed(name="demo", small=True):
    from ipguard_fast.models import DigitsMLP

    return make_bed(name, digits=True, input_shape=(1, 8, 8), num_classes=10, small_factory=DigitsMLP if small else None)


def test_only_the_named_families_and_every_independent():
    bed = _bed()
    every = bed.variants(0)
    some = bed.variants(0, ["prune", "extract-labels"])
    negatives = [v.name for v in every if v.role == "negative"]
    assert negatives and [v.name for v in some if v.role == "negative"] == negatives
    assert {v.family for v in some if v.role == "positive"} == {"prune", "extract-labels"}
    assert [v.name for v in some if v.role == "positive"] == [v.name for v in every if v.family in ("prune", "extract-labels")]
    assert bed.variants(0, None) == every


def test_unknown_absent_or_empty_families_are_refused():
    for bad in (["prune", "RTAL-x"], [], "prune", [3]):
        with pytest.raises(ArgumentError) as info:
            check_families(bad)
        assert info.value.argument == "families"
    with pytest.raises(ArgumentError, match="distill-small"):
        _bed(small=False).variants(0, ["distill-small"])   # no small student on this bed


def test_the_command_refuses_an_unknown_family_before_any_training(tmp_path, capsys):
    code = main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--data", "digits", "--families", "FTLL,nope",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--families" in err and "nope" in err and not (tmp_path / "out" / "suspects").exists()


def test_the_command_reads_families_as_it_reads_methods(tmp_path, capsys):
    # A trailing comma is dropped, as --methods drops it; nothing but commas is an empty list.
    from ipguard_fast.cli.family_args import listed as _listed
    assert _listed("FTLL,") == ("FTLL",) == _listed(",FTLL,,")
    code = main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--data", "digits", "--families", ",",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--families" in err and "empty" in err and not (tmp_path / "out" / "suspects").exists()
