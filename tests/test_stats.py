"""fastmbrl.stats against direct NumPy computations on known numbers."""
import numpy as np
import pytest

from fastmbrl.errors import FastMBRLError
from fastmbrl.stats import bootstrap_ci, iqm, summarize


def test_iqm_is_the_mean_of_the_middle_half():
    x = np.array([9.0, 1.0, 5.0, 3.0, 100.0, 7.0, -50.0, 2.0])  # sorted: -50 1 2 3 5 7 9 100
    assert iqm(x) == pytest.approx(np.mean([2.0, 3.0, 5.0, 7.0]))
    assert iqm([1.0, 2.0, 30.0]) == pytest.approx(11.0)  # fewer than 4 scores: the mean
    assert iqm([4.0, 1.0, 2.0, 8.0, 100.0]) == pytest.approx(np.mean([2.0, 4.0, 8.0]))
    rows = np.array([[1.0, 2, 3, 4], [10, 0, 5, 5]])
    np.testing.assert_allclose(iqm(rows), [2.5, 5.0])  # along the last axis


def _twin_ci(strata, reps, seed, level=0.95):
    """The stratified bootstrap written out: per replicate, each stratum resampled with
    replacement (the same draws: one (reps, n) matrix per stratum), the IQM of the pool."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(s), size=(reps, len(s))) for s in strata]
    values = []
    for r in range(reps):
        pool = sorted(v for s, d in zip(strata, draws) for v in np.asarray(s)[d[r]])
        cut = len(pool) // 4
        middle = pool[cut:len(pool) - cut]
        values.append(sum(middle) / len(middle))
    return tuple(np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


def test_stratified_bootstrap_matches_its_twin():
    strata = [[1.0, 4.0, 2.0, 8.0, 5.0], [100.0, 120.0, 90.0]]
    lo, hi = bootstrap_ci(strata, reps=300, seed=7)
    assert (lo, hi) == pytest.approx(_twin_ci(strata, 300, 7))
    assert bootstrap_ci(strata, reps=300, seed=7) == (lo, hi)  # seeded
    assert bootstrap_ci(strata, reps=300, seed=8) != (lo, hi)
    single = [3.0, -1.0, 7.0, 2.0, 11.0, 5.0]
    assert bootstrap_ci(np.array(single), reps=200, seed=1) == pytest.approx(
        _twin_ci([single], 200, 1))


def test_bootstrap_interval_of_a_mean_covers_the_normal_one():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_ci(x, statistic=lambda a: a.mean(axis=-1), reps=4000, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.05)
    assert hi == pytest.approx(x.mean() + half, abs=0.05)


def test_summarize_on_known_numbers():
    x = [10.0, 30.0, 20.0, 50.0, 40.0]
    s = summarize(x, reps=500, seed=3)
    assert s["n"] == 5 and s["mean"] == pytest.approx(30.0)
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    assert s["iqm"] == pytest.approx(30.0) and s["median"] == 30.0
    assert (s["min"], s["max"]) == (10.0, 50.0)
    assert tuple(s["ci95"]) == pytest.approx(_twin_ci([x], 500, 3))
    one = summarize([4.0])
    assert one["std"] is None and one["ci95"] == [4.0, 4.0]


def test_bad_scores_are_refused():
    with pytest.raises(FastMBRLError, match="at least one score"):
        summarize([])
    with pytest.raises(FastMBRLError, match="finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(FastMBRLError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)
    with pytest.raises(FastMBRLError, match="reps"):
        bootstrap_ci([1.0, 2.0], reps=0)
