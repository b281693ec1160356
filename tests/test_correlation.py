"""Correlation metrics between real and proxy (simulated / imagined) evaluations, checked by hand."""
import math

import numpy as np
import pytest
from scipy import stats

from robolearn.eval.correlation import agreement, average_ranks, mmrv, pearson_r, spearman_rho


def test_perfect_ranking_agrees_fully():
    real, proxy = [0.1, 0.5, 0.9], [1.0, 2.0, 3.0]
    assert pearson_r(real, proxy) == pytest.approx(1.0)
    assert spearman_rho(real, proxy) == pytest.approx(1.0)
    assert mmrv(real, proxy) == 0.0


def test_inverted_ranking():
    real, proxy = [0.1, 0.5, 0.9], [3.0, 2.0, 1.0]
    assert pearson_r(real, proxy) == pytest.approx(-1.0)
    assert spearman_rho(real, proxy) == pytest.approx(-1.0)
    # policy 0 is misordered against 1 (gap 0.4) and 2 (0.8): 0.8; policy 1: 0.4; policy 2: 0.8
    assert mmrv(real, proxy) == pytest.approx((0.8 + 0.4 + 0.8) / 3)


def test_pearson_by_hand():
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): dot 4, norms^2 5 and 5
    assert pearson_r([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    np.testing.assert_array_equal(average_ranks([5, 5, 5]), [2, 2, 2])
    np.testing.assert_array_equal(average_ranks([3, 1, 2, 1]), [4, 1.5, 3, 1.5])


def test_spearman_with_ties_by_hand():
    # proxy ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): dot 4.5, norms^2 5 and 4.5 -> sqrt(0.9)
    assert spearman_rho([1, 2, 3, 4], [0, 1, 1, 2]) == pytest.approx(math.sqrt(0.9))


def test_matches_scipy_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        real = rng.integers(0, 5, 8) / 4
        proxy = rng.integers(0, 4, 8) / 3
        if np.ptp(real) == 0 or np.ptp(proxy) == 0:
            continue
        assert pearson_r(real, proxy) == pytest.approx(stats.pearsonr(real, proxy)[0])
        assert spearman_rho(real, proxy) == pytest.approx(stats.spearmanr(real, proxy)[0])


def test_mmrv_with_ties_by_hand():
    # the proxy ties two policies that differ by 0.6 in reality: charged to the worse one (i=0), once
    assert mmrv([0.2, 0.8], [0.5, 0.5]) == pytest.approx(0.3)
    # a tie in reality costs nothing, whatever the proxy says
    assert mmrv([0.5, 0.5], [0.1, 0.9]) == 0.0
    # five policies with ties on both sides; per-policy maxima 0.75, 0.75, 0.5, 0.5, 0.25
    real = [0.0, 0.75, 0.5, 0.25, 0.5]
    proxy = [1 / 3, 0.0, 0.0, 2 / 3, 1 / 3]
    assert mmrv(real, proxy) == pytest.approx(0.55)


def test_mmrv_ignores_scale_but_weights_misorder_by_real_gap():
    real = [0.1, 0.2, 0.9]
    assert mmrv(real, [5.0, 50.0, 500.0]) == 0.0  # any monotone distortion keeps the order
    small_swap = mmrv(real, [2.0, 1.0, 3.0])  # swaps two close policies
    big_swap = mmrv(real, [1.0, 3.0, 2.0])  # swaps a close one with the best
    assert small_swap == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    assert big_swap == pytest.approx((0.0 + 0.7 + 0.7) / 3)


def test_agreement_reports_constant_proxy_as_nan_with_a_note():
    result = agreement([0.2, 0.4, 0.9], [0.0, 0.0, 0.0])
    assert math.isnan(result.pearson) and math.isnan(result.spearman)
    assert "proxy values are all equal" in result.note
    assert result.mmrv == pytest.approx((0.7 + 0.5 + 0.0) / 3)
    ok = agreement([0.1, 0.5, 0.9], [1, 2, 3])
    assert (ok.n_policies, ok.pearson, ok.spearman, ok.mmrv, ok.note) == (3, pytest.approx(1.0), pytest.approx(1.0), 0.0, "")


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="same policies: got 3 and 2"):
        mmrv([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 policies"):
        pearson_r([1.0], [1.0])
    with pytest.raises(ValueError, match="NaN or infinite values at positions \\[1\\]"):
        spearman_rho([0.1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="real values are all equal"):
        pearson_r([0.5, 0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match="flat sequence"):
        mmrv([[1, 2]], [[1, 2]])
