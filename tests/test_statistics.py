"""Intervals checked against values computed by hand from the textbook formulas."""
import math

import numpy as np
import pytest

from robolearn.eval.statistics import mean_interval, wilson_interval


def test_wilson_half_successes():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3)
    assert high == pytest.approx(0.5962, abs=1e-3)


def test_wilson_edges_are_one_sided():
    # z^2 / (n + z^2) with z = 1.959964, n = 10
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)


def test_wilson_asymmetric_case_and_confidence():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    narrow = wilson_interval(8, 10, confidence=0.5)
    wide = wilson_interval(8, 10, confidence=0.99)
    assert wide[0] < narrow[0] < 0.8 < narrow[1] < wide[1]


@pytest.mark.parametrize(
    "args, message",
    [((0, 0), "at least one trial"), ((11, 10), "successes"), ((-1, 10), "successes")],
)
def test_wilson_rejects_bad_counts(args, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)


def test_wilson_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(5, 10, confidence=1.0)


def test_t_interval_matches_hand_computation():
    # mean 3, s = sqrt(2.5), sem = s / sqrt(5), t_{0.975, 4} = 2.776445
    mean, low, high = mean_interval([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert (low, high) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-5)
    # two values: sem = 0.5, t_{0.975, 1} = 12.706205
    assert mean_interval([0.0, 1.0]) == pytest.approx((0.5, 0.5 - 6.353102, 0.5 + 6.353102), abs=1e-5)


def test_t_interval_degenerate_inputs():
    assert mean_interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))
    mean, low, high = mean_interval([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval([0.1, float("nan")])


def test_bounded_scores_get_an_interval_inside_their_bounds():
    from robolearn.eval.statistics import bootstrap_mean_interval

    lift = [1.0] * 49 + [0.0]  # the main job's max reward: a t interval said 0.980 [0.940, 1.020]
    mean, low, high = bootstrap_mean_interval(lift)
    assert mean == pytest.approx(0.98) and 0.93 <= low < mean and high == 1.0
    coverage = np.clip(np.random.default_rng(0).normal(0.9, 0.2, 100), 0, 1)
    mean, low, high = bootstrap_mean_interval(coverage)
    assert 0.0 <= low < mean < high <= 1.0
    t_mean, t_low, t_high = mean_interval(coverage)
    assert abs((high - low) - (t_high - t_low)) < 0.25 * (t_high - t_low)  # as tight as t where t is valid
    assert bootstrap_mean_interval(coverage) == (mean, low, high)  # seeded: the same report every time
    assert bootstrap_mean_interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))
    assert np.isnan(bootstrap_mean_interval([0.4])[1])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_mean_interval([0.1, float("inf")])


def test_scores_without_spread_get_wilsons_interval_within_their_bounds():
    from robolearn.eval.statistics import bootstrap_mean_interval

    mean, low, high = bootstrap_mean_interval([0.0, 0.0], bounds=(0.0, 1.0))  # was 0 [0, 0]: no spread, no doubt
    assert (mean, low) == (0.0, 0.0) and high == pytest.approx(wilson_interval(0, 2)[1])
    mean, low, high = bootstrap_mean_interval([1.0] * 50, bounds=(0.0, 1.0))
    assert high == 1.0 and low == pytest.approx(wilson_interval(50, 50)[0])
    mean, low, high = bootstrap_mean_interval([0.7] * 3, bounds=(0.0, 1.0))
    assert 0.0 < low < 0.7 < high < 1.0
    assert bootstrap_mean_interval([0.2, 0.9], bounds=(0.0, 1.0)) == bootstrap_mean_interval([0.2, 0.9])  # spread: bootstrap
    with pytest.raises(ValueError, match="outside the bounds"):
        bootstrap_mean_interval([2.0, 2.0], bounds=(0.0, 1.0))
