"""Robustness, uniqueness, ARUC and ROC AUC on hand-worked cases."""

import numpy as np
import pytest

from ipguard_fast.metrics import aruc, robustness, roc_auc, ru_curve, uniqueness


def test_robustness_counts_rates_at_or_above_t():
    positives = [0.2, 0.5, 0.5, 0.9]
    assert robustness(positives, 0.5) == 0.75  # 0.5 itself counts as flagged
    assert isinstance(robustness(positives, 0.5), float)
    np.testing.assert_array_equal(robustness(positives, [0.0, 0.5, 0.95]), [1.0, 0.75, 0.0])


def test_uniqueness_counts_rates_strictly_below_t():
    negatives = [0.1, 0.5]
    assert uniqueness(negatives, 0.5) == 0.5  # a negative at exactly t is a false positive
    assert uniqueness(negatives, 0.51) == 1.0
    np.testing.assert_array_equal(uniqueness(negatives, np.array([0.0, 0.3])), [0.0, 0.5])


def test_ru_curve_grid():
    t, r, u = ru_curve([1.0, 0.8], [0.1, 0.5], num=3)
    np.testing.assert_array_equal(t, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(r, [1.0, 1.0, 0.5])
    np.testing.assert_array_equal(u, [0.0, 0.5, 1.0])
    assert len(ru_curve([1.0], [0.0])[0]) == 1001


def test_aruc_worked_example():
    """positives [1.0, 0.8], negatives [0.1, 0.5]; breakpoints 0, 0.1, 0.5, 0.8, 1:

    t in (0, 0.1):   R = 1,   U = 0    -> min 0,   width 0.1 -> 0
    t in (0.1, 0.5): R = 1,   U = 1/2  -> min 1/2, width 0.4 -> 0.2
    t in (0.5, 0.8): R = 1,   U = 1    -> min 1,   width 0.3 -> 0.3
    t in (0.8, 1):   R = 1/2, U = 1    -> min 1/2, width 0.2 -> 0.1
    ARUC = 0.6.
    """
    assert aruc([1.0, 0.8], [0.1, 0.5]) == pytest.approx(0.6, abs=1e-12)


def test_aruc_overlapping_example():
    """positives [0.6, 0.2], negatives [0.4]; breakpoints 0, 0.2, 0.4, 0.6, 1:

    (0, 0.2): R = 1,   U = 0 -> 0
    (0.2, 0.4): R = 1/2, U = 0 -> 0
    (0.4, 0.6): R = 1/2, U = 1 -> 1/2 * 0.2 = 0.1
    (0.6, 1): R = 0,   U = 1 -> 0
    ARUC = 0.1.
    """
    assert aruc([0.6, 0.2], [0.4]) == pytest.approx(0.1, abs=1e-12)


def test_aruc_extremes():
    assert aruc([1.0, 1.0], [0.0, 0.0]) == 1.0  # min(R, U) = 1 on all of (0, 1]
    assert aruc([0.5], [0.5]) == 0.0  # R = 1 only where U = 0, and vice versa
    assert aruc([0.0], [1.0]) == 0.0


def test_aruc_matches_dense_numerical_integration():
    rng = np.random.default_rng(0)
    positives = rng.uniform(0.3, 1.0, 40).round(2)
    negatives = rng.uniform(0.0, 0.6, 30).round(2)
    t, r, u = ru_curve(positives, negatives, num=200_001)
    numeric = np.trapezoid(np.minimum(r, u), t)
    assert aruc(positives, negatives) == pytest.approx(numeric, abs=1e-4)
    assert 0.0 < aruc(positives, negatives) < 1.0


def test_roc_auc_hand_cases():
    assert roc_auc([1.0, 0.8], [0.1, 0.5]) == 1.0
    assert roc_auc([0.6, 0.2], [0.4]) == 0.5  # one win, one loss
    assert roc_auc([0.5], [0.5]) == 0.5  # a tie counts 1/2
    assert roc_auc([0.5, 0.7], [0.5, 0.9, 0.1]) == pytest.approx((1.5 + 2) / 6)


def test_roc_auc_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    positives = rng.integers(0, 11, 25) / 10  # coarse values, so many ties
    negatives = rng.integers(0, 8, 20) / 10
    labels = np.r_[np.ones(25), np.zeros(20)]
    expected = sklearn_metrics.roc_auc_score(labels, np.r_[positives, negatives])
    assert roc_auc(positives, negatives) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "positives, negatives, message",
    [
        ([], [0.1], "positive_rates: is empty"),
        ([0.5], [], "negative_rates: is empty"),
        ([0.5, float("nan")], [0.1], "positive_rates: contains NaN"),
        ([0.5], [1.2], "negative_rates: must lie in \\[0, 1\\]"),
        ([-0.1], [0.2], "positive_rates: must lie in \\[0, 1\\]"),
        ([[0.5]], [0.2], "positive_rates: must be a list or 1-D array"),
        (["high"], [0.2], "positive_rates: must be a list"),
    ],
)
@pytest.mark.parametrize("metric", [aruc, roc_auc])
def test_validation_names_the_argument(metric, positives, negatives, message):
    with pytest.raises(ValueError, match=message):
        metric(positives, negatives)


def test_threshold_and_grid_validation():
    with pytest.raises(ValueError, match="t: contains NaN"):
        robustness([0.5], float("nan"))
    with pytest.raises(ValueError, match="num: must be an int >= 2"):
        ru_curve([0.5], [0.5], num=1)
