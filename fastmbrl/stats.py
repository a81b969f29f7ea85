"""Statistics over seeds, as Agarwal et al. (2021) advise reporting them: the interquartile mean
and a 95 % stratified-bootstrap confidence interval besides the mean and standard deviation.

A score table is a list of strata (tasks), each a 1-D array of runs' scores (seeds); the
statistic pools them. The bootstrap resamples runs with replacement within each stratum,
so every replicate keeps each task's number of runs, and takes the percentile interval of
the statistic over the replicates. Seeded: the same scores and seed give the same interval.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fastmbrl.errors import FastMBRLError

#: bootstrap replicates by default (rliable's default is 50,000; 2,000 keeps a report quick and
#: its bounds steady to about a hundredth of the spread for a handful of seeds)
REPS = 2000


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis`: the mean of what is left after dropping the lowest and
    the highest floor(n/4) scores (n < 4: the mean)."""
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _strata(scores) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray) and scores.ndim == 1:
        scores = [scores]
    out = [np.asarray(s, dtype=np.float64).ravel() for s in scores]
    if not out or any(s.size == 0 for s in out):
        raise FastMBRLError("scores: every stratum needs at least one score")
    if any(not np.isfinite(s).all() for s in out):
        raise FastMBRLError("scores must be finite")
    return out


def bootstrap_ci(scores: Sequence[Sequence[float]] | np.ndarray,
                 statistic: Callable[[np.ndarray], np.ndarray] = iqm, level: float = 0.95,
                 reps: int = REPS, seed: int = 0) -> tuple[float, float]:
    """The `level` percentile interval of `statistic` (a function of a (reps, n) array along
    its last axis) over `reps` stratified-bootstrap replicates of `scores` (a 1-D array: one
    stratum; else one array per stratum)."""
    if not 0 < level < 1:
        raise FastMBRLError(f"level must be in (0, 1), got {level!r}")
    if type(reps) is not int or reps <= 0:
        raise FastMBRLError(f"reps must be a positive integer, got {reps!r}")
    strata = _strata(scores)
    rng = np.random.default_rng(seed)
    samples = np.concatenate([s[rng.integers(0, s.size, size=(reps, s.size))] for s in strata],
                             axis=1)
    values = statistic(samples)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(scores: Sequence[float] | np.ndarray, reps: int = REPS, seed: int = 0) -> dict:
    """n, mean, std (over seeds: ddof 1, None for one seed), iqm, median, min, max and ci95
    (the 95 % bootstrap interval of the IQM) of one stratum of scores."""
    (x,) = _strata([scores])
    return {"n": int(x.size), "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else None,
            "iqm": float(iqm(x)), "median": float(np.median(x)),
            "min": float(x.min()), "max": float(x.max()),
            "ci95": list(bootstrap_ci(x, iqm, 0.95, reps, seed))}
