"""The remaining-time estimate: a line fitted to (wall, misses) of the finished trials."""

from __future__ import annotations

import pytest

from squeezeray.search._eta import estimate_remaining


def test_the_fit_separates_evaluation_from_compression() -> None:
    walls = [(10 + 2 * m, m) for m in (30, 30, 5, 0)]  # 10 s to evaluate, 2 s per compressed layer
    est = estimate_remaining(walls, remaining=6)
    assert est.evaluate_s == pytest.approx(10) and est.per_layer_s == pytest.approx(2)
    assert est.low_s == pytest.approx(60) and est.high_s == pytest.approx(6 * est.mean_s)
    line = est.describe()
    assert "after 4 trial(s)" in line and "10 s to evaluate" in line and "6 remaining: 60 s (every layer cached)" in line


def test_equal_misses_cannot_tell_evaluation_apart_and_say_so() -> None:
    est = estimate_remaining([(100.0, 14), (110.0, 14)], remaining=8)
    assert est.evaluate_s is None and est.low_s is None and est.high_s == pytest.approx(840)
    assert "at most 14.0 min" in est.describe() and "cached layers cost less" in est.describe()


def test_cached_trials_give_one_figure() -> None:
    est = estimate_remaining([(5.0, 0), (7.0, 0)], remaining=60)
    assert est.low_s == est.high_s == pytest.approx(360) and "about 6.0 min" in est.describe()


def test_a_negative_slope_is_not_believed() -> None:
    est = estimate_remaining([(50.0, 0), (10.0, 20)], remaining=2)  # noise: the miss-heavy trial ran faster
    assert est.per_layer_s == 0 and est.evaluate_s == pytest.approx(30)


def test_nothing_finished_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one finished trial"):
        estimate_remaining([], remaining=3)
    with pytest.raises(ValueError, match="remaining=-1"):
        estimate_remaining([(1.0, 0)], remaining=-1)
