"""The stored threshold adds the fingerprints' sampling noise to protect's calibrated level:
the smallest count k of n that a model agreeing at the level reaches with probability at
most the significance (an exact one-sided binomial test)."""
import math

import pytest
from cli_refusals import assert_refused_before_any_work

from ipguard_fast.selection import ProtectConfig
from ipguard_fast.selection.significance import SIGNIFICANCE, binomial_tail, significant_threshold
from ipguard_fast._validate import ArgumentError


def _tail_by_definition(n, p, k):
    return sum(math.comb(n, c) * p ** c * (1 - p) ** (n - c) for c in range(k, n + 1))


@pytest.mark.parametrize("n,p", [(1, 0.5), (10, 0.3), (100, 0.865), (100, 0.58), (37, 0.99), (200, 0.02)])
def test_the_tail_is_the_binomial_one(n, p):
    for k in range(0, n + 2):
        assert binomial_tail(n, p, k) == pytest.approx(_tail_by_definition(n, p, k) if k <= n else 0.0, abs=1e-12)


@pytest.mark.parametrize("n", [10, 100, 300, 5000])
@pytest.mark.parametrize("level", [0.01, 0.3, 0.58, 0.765, 0.865, 0.9])
@pytest.mark.parametrize("significance", [0.01, SIGNIFICANCE, 0.2])
def test_the_threshold_is_the_smallest_count_that_chance_reaches_rarely(n, level, significance):
    threshold, shown = significant_threshold(level, n, significance)
    if not shown:   # not even n of n is rare enough: only possible when level ** n > significance
        assert threshold == 1.0 and level ** n > significance
        return
    k = round(threshold * n)
    assert threshold == k / n and k / n > level
    assert binomial_tail(n, level, k) <= significance < binomial_tail(n, level, k - 1)


def test_the_margin_shrinks_with_more_fingerprints_and_a_looser_significance():
    margins = [significant_threshold(0.6, n)[0] - 0.6 for n in (50, 100, 1000, 10000)]
    assert margins == sorted(margins, reverse=True) and margins[-1] < 0.01
    assert significant_threshold(0.6, 100, 0.01)[0] > significant_threshold(0.6, 100, 0.2)[0]


def test_extreme_levels():
    assert significant_threshold(0.0, 100) == (0.01, True)      # never agrees: one match shows it
    assert significant_threshold(1.0, 100) == (1.0, False)
    assert significant_threshold(0.98, 100) == (1.0, False)     # 0.98 ** 100 = 0.13: n of n is not rare
    assert significant_threshold(0.97, 100) == (1.0, True)      # 0.97 ** 100 = 0.048


@pytest.mark.parametrize("args,name", [((0.5, 0), "n"), ((0.5, 10, 0.0), "significance"),
                                       ((0.5, 10, 1.0), "significance"), ((1.5, 10), "level"),
                                       ((-0.1, 10), "level")])
def test_bad_arguments_name_themselves(args, name):
    with pytest.raises(ValueError, match=name):
        significant_threshold(*args)


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, True, "0.05", float("nan")])
def test_protect_config_checks_the_significance(value):
    with pytest.raises(ArgumentError, match="threshold_significance"):
        ProtectConfig(threshold_significance=value)
    assert ProtectConfig(threshold_significance=None).threshold_significance is None
    assert ProtectConfig().threshold_significance == SIGNIFICANCE


@pytest.mark.parametrize("command", ["protect", "evaluate", "demo"])
@pytest.mark.parametrize("value", ["0", "1", "often", "nan", "-0.5"])
def test_a_bad_significance_on_the_command_line_is_refused_before_any_work(command, value, tmp_path, capsys,
                                                                          monkeypatch):
    assert_refused_before_any_work(command, ["--threshold-significance", value],
                                   "--threshold-significance: expected a probability in (0, 0.5) or 'none'",
                                   tmp_path, capsys, monkeypatch)


def test_the_significance_argument_reads_none_and_probabilities():
    from types import SimpleNamespace

    from ipguard_fast.cli.common import significance_arg

    assert significance_arg(SimpleNamespace(threshold_significance="none")) is None
    assert significance_arg(SimpleNamespace(threshold_significance=" None ")) is None
    assert significance_arg(SimpleNamespace(threshold_significance="0.01")) == 0.01
