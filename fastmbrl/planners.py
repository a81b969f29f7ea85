"""Model-predictive planners on the fused rollout kernel: random shooting, CEM, MPPI and iCEM.

Every planner maximises the H-step return of action sequences under a learned dynamics model:
it draws candidate sequences with its own ``numpy.random.Generator`` (so one seed gives one
answer whatever the number of threads), scores them all with one kernel call per iteration and
updates its sampling distribution. ``plan(obs)`` returns the (H, A) solution, ``act(obs)`` its
first action. With ``warm_start`` the previous solution, shifted by one step (the tail refilled
with the middle of the action box), seeds the next call. Candidate buffers are allocated once.

After each call, ``last_best_return`` holds the best return found, ``last_num_diverged`` how many
candidates diverged (the model produced inf/NaN: they score -inf) and ``last_num_evaluated`` how
many were scored. If every candidate diverges the planner still returns a finite in-bounds plan
(the current distribution's mean) and warns once.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ._validate import as_array, check_positive_int
from .kernels.rollout import (DEFAULT_ROWS, PackedModel, Workspace, make_chunks, pack_dynamics,
                              rollout_kernel, run_kernel)

F32 = np.float32


def _check_fraction(value, name, low=0.0, high=1.0, closed_high=False):
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not ok or not (low <= value < high or (closed_high and value == high)):
        raise ValueError(f"{name} must be a number in [{low}, {high}{']' if closed_high else ')'}, "
                         f"got {value!r}")
    return float(value)


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class Planner:
    """Common machinery: model packing, bounds, RNG, buffers, kernel calls, warm start.

    model: a DynamicsModel (re-packed whenever its `version` changes) or a PackedModel.
    reward_fn / terminated_fn: numba functions ``f(obs, act, next_obs, out)`` (see kernels.rollout).
    """

    def __init__(self, model, reward_fn, terminated_fn=None, *, horizon, action_low, action_high,
                 seed=0, warm_start=True, rows=DEFAULT_ROWS):
        if isinstance(model, PackedModel):
            self._model, self.packed = None, model
        else:
            self._model, self.packed = model, pack_dynamics(model)
        a = self.packed.act_dim
        self.horizon = check_positive_int(horizon, "horizon")
        self.action_low = as_array(action_low, "action_low", (a,)).copy()
        self.action_high = as_array(action_high, "action_high", (a,)).copy()
        if not (self.action_low < self.action_high).all():
            raise ValueError("action_low must be below action_high in every dimension")
        self.warm_start = bool(warm_start)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._rows = check_positive_int(rows, "rows")
        self._kernel = rollout_kernel(reward_fn, terminated_fn)
        self._span = self.action_high - self.action_low
        self._middle = np.broadcast_to((self.action_low + self.action_high) / F32(2),
                                       (self.horizon, a)).astype(F32)
        k = self._max_candidates()
        self._cand = np.empty((k, self.horizon, a), F32)
        self._returns = np.empty(k, F32)
        self._chunks = {}
        self._workspace = Workspace(self.packed, -(-k // self._rows), self._rows)
        self._solution = np.empty((self.horizon, a), F32)
        self._warned = False
        self.reset()
        # compile (or load from numba's cache) now, not at the first real call
        self._cand[0] = self._middle
        self._evaluate(np.zeros(self.packed.obs_dim, F32), 1)
        self.reset()

    # --- subclass interface -------------------------------------------------------------
    def _max_candidates(self) -> int:
        raise NotImplementedError

    def _optimize(self, obs) -> bool:
        """Fill self._solution; return False if every candidate diverged."""
        raise NotImplementedError

    def _reset_state(self):
        pass

    def _shift_state(self):
        pass

    # --- public API ----------------------------------------------------------------------
    def reset(self, seed=None):
        """Forget the warm-start state (and reseed if `seed` is given)."""
        if seed is not None:
            self.seed = seed
            self.rng = np.random.default_rng(seed)
        self._mean = self._middle.copy()
        self.last_best_return = -math.inf
        self.last_num_diverged = 0
        self.last_num_evaluated = 0
        self._reset_state()

    def plan(self, obs) -> np.ndarray:
        """Best action sequence (H, A) float32 from observation `obs` (O,)."""
        obs = as_array(obs, "obs", (self.packed.obs_dim,))
        if self._model is not None:
            packed = pack_dynamics(self._model, self.packed)
            if packed is not self.packed:
                if not self._workspace.fits(packed, self._workspace.num_chunks):
                    raise ValueError("model: its shape changed since the planner was built")
                self.packed = packed
        self.last_best_return = -math.inf
        self.last_num_diverged = 0
        self.last_num_evaluated = 0
        if not self._optimize(obs):
            if not self._warned:
                warnings.warn(f"{type(self).__name__}: every candidate diverged (inf/NaN in the "
                              "model's rollouts); returning the sampling mean", RuntimeWarning,
                              stacklevel=2)
                self._warned = True
            self._solution[:] = self._mean
        np.clip(self._solution, self.action_low, self.action_high, out=self._solution)
        result = self._solution.copy()
        if self.warm_start:
            self._mean[:-1] = self._solution[1:]
            self._mean[-1] = self._middle[-1]
            self._shift_state()
        else:
            self._mean[:] = self._middle
            self._reset_state()
        return result

    def act(self, obs) -> np.ndarray:
        """First action (A,) of plan(obs)."""
        return self.plan(obs)[0]

    # --- helpers for subclasses ----------------------------------------------------------
    def _evaluate(self, obs, k) -> np.ndarray:
        """Returns (k,) of the first k candidates; updates the last_* statistics."""
        chunks = self._chunks.get(k)
        if chunks is None:
            chunks = self._chunks[k] = make_chunks(k, self._rows)
        returns = run_kernel(self._kernel, self.packed, obs, self._cand[:k], chunks,
                             self._workspace, self._returns[:k])
        self.last_num_evaluated += k
        self.last_num_diverged += int(np.count_nonzero(returns == -np.inf))
        best = float(returns.max())
        if best > self.last_best_return:
            self.last_best_return = best
        return returns

    def _clip(self, cand):
        np.clip(cand, self.action_low, self.action_high, out=cand)

    def _uniform(self, cand):
        self.rng.random(out=cand, dtype=F32)
        cand *= self._span
        cand += self.action_low

    def _default_std(self, init_std):
        if init_std is None:
            return np.broadcast_to(self._span / F32(4), self._middle.shape).astype(F32)
        std = as_array(np.broadcast_to(np.asarray(init_std, F32), self._middle.shape),
                       "init_std", self._middle.shape).copy()
        if (std <= 0).any():
            raise ValueError("init_std must be positive")
        return std


class RandomShooting(Planner):
    """Uniform random sequences within the bounds; the best one wins (Nagabandi et al. 2018).

    num_samples: candidates per plan (1000 for HalfCheetah in MB-MF). With warm start the
    previous best sequence, shifted, is one of them.
    """

    def __init__(self, model, reward_fn, terminated_fn=None, *, horizon, action_low, action_high,
                 num_samples=1000, seed=0, warm_start=True, rows=DEFAULT_ROWS):
        self.num_samples = check_positive_int(num_samples, "num_samples")
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows)

    def _max_candidates(self):
        return self.num_samples

    def _reset_state(self):
        self._have_previous = False

    def _shift_state(self):
        self._have_previous = True

    def _optimize(self, obs):
        k = self.num_samples
        cand = self._cand[:k]
        self._uniform(cand)
        if self._have_previous:
            cand[0] = self._mean
        returns = self._evaluate(obs, k)
        best = int(np.argmax(returns))
        self._solution[:] = cand[best]
        return returns[best] > -np.inf


def _elites(returns, n, out_idx):
    """Indices of the n best returns, best first, written to out_idx[:n]."""
    idx = np.argpartition(returns, returns.size - n)[returns.size - n:]
    out_idx[:n] = idx[np.argsort(returns[idx])[::-1]]
    return out_idx[:n]


class CEM(Planner):
    """Cross-entropy method (PETS / mbrl-lib defaults).

    population: samples per iteration (500). elites: count, or fraction of the population if
    a float < 1 (0.1, i.e. 50 of 500). iterations (5). alpha: weight of the old distribution in the update (0.1).
    init_std: initial std, scalar or (H, A) (default (high - low) / 4, i.e. variance
    (ub - lb)^2 / 16). sampling: "truncated" (normal truncated at 2 std, std capped at half the
    distance to the bounds, as mbrl-lib) or "clipped" (normal, clipped to the bounds).
    return_mean: return the elite mean (default; the best single sample overfits to model
    error) or the best sample seen.
    """

    def __init__(self, model, reward_fn, terminated_fn=None, *, horizon, action_low, action_high,
                 population=500, elites=0.1, iterations=5, alpha=0.1, init_std=None,
                 sampling="truncated", return_mean=True, seed=0, warm_start=True,
                 rows=DEFAULT_ROWS):
        self.population = check_positive_int(population, "population")
        if isinstance(elites, float) and 0 < elites < 1:
            elites = max(1, int(round(elites * self.population)))
        self.num_elites = check_positive_int(elites, "elites")
        if self.num_elites > self.population:
            raise ValueError(f"elites ({self.num_elites}) must not exceed population "
                             f"({self.population})")
        self.iterations = check_positive_int(iterations, "iterations")
        self.alpha = _check_fraction(alpha, "alpha")
        if sampling not in ("truncated", "clipped"):
            raise ValueError(f"sampling must be 'truncated' or 'clipped', got {sampling!r}")
        self.sampling = sampling
        self.return_mean = bool(return_mean)
        self._init_std_arg = init_std
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows)

    def _max_candidates(self):
        self._init_std = self._default_std(self._init_std_arg)
        self._std = np.empty_like(self._init_std)
        self._tmp = np.empty_like(self._init_std)
        self._best = np.empty_like(self._init_std)
        self._elite_idx = np.empty(self.num_elites, np.intp)
        self._elite_buf = np.empty((self.num_elites,) + self._init_std.shape, F32)
        self._mask = np.empty((self.population,) + self._init_std.shape, np.bool_)
        self._mask2 = np.empty_like(self._mask)
        return self.population

    def _sample_normal(self, cand, mask):
        self.rng.standard_normal(out=cand, dtype=F32)
        if self.sampling == "truncated":
            for _ in range(20):  # each round redraws ~5 % of the entries
                np.greater(cand, 2, out=mask)
                np.less(cand, -2, out=self._mask2)
                np.logical_or(mask, self._mask2, out=mask)
                n_bad = int(np.count_nonzero(mask))
                if not n_bad:
                    break
                cand[mask] = self.rng.standard_normal(n_bad, dtype=F32)
            np.clip(cand, -2, 2, out=cand)

    def _optimize(self, obs):
        mean, std, tmp = self._mean, self._std, self._tmp
        std[:] = self._init_std
        best_return = -np.inf
        k = self.population
        cand = self._cand[:k]
        for _ in range(self.iterations):
            if self.sampling == "truncated":  # keep mean +- 2 std inside the bounds
                np.subtract(mean, self.action_low, out=tmp)
                np.minimum(std, tmp / 2, out=std)
                np.subtract(self.action_high, mean, out=tmp)
                np.minimum(std, tmp / 2, out=std)
            self._sample_normal(cand, self._mask)
            cand *= std
            cand += mean
            self._clip(cand)
            returns = self._evaluate(obs, k)
            idx = _elites(returns, self.num_elites, self._elite_idx)
            if returns[idx[0]] > best_return:
                best_return = returns[idx[0]]
                self._best[:] = cand[idx[0]]
            if returns[idx[0]] == -np.inf:
                continue  # every candidate diverged: keep the distribution
            elites = np.take(cand, idx, axis=0, out=self._elite_buf)
            np.mean(elites, axis=0, out=tmp)
            mean *= self.alpha
            mean += (1 - self.alpha) * tmp
            np.var(elites, axis=0, out=tmp)
            np.multiply(std, std, out=std)
            std *= self.alpha
            std += (1 - self.alpha) * tmp
            np.sqrt(std, out=std)
        if best_return == -np.inf:
            return False
        self._solution[:] = mean if self.return_mean else self._best
        return True


class MPPI(Planner):
    """Model-predictive path integral control (Williams et al.; PDDM-style smoothing).

    num_samples per iteration (1000). temperature lambda of the weights
    w_k ∝ exp((R_k - max R) / lambda) (1.0; scale it with the task's returns). noise_std:
    scalar or (A,) std of the Gaussian perturbations (default (high - low) / 4). iterations (1).
    smoothing: beta of the filter a_t = beta (mu_t + n_t) + (1 - beta) a_{t-1}, or None.
    """

    def __init__(self, model, reward_fn, terminated_fn=None, *, horizon, action_low, action_high,
                 num_samples=1000, temperature=1.0, noise_std=None, iterations=1, smoothing=None,
                 seed=0, warm_start=True, rows=DEFAULT_ROWS):
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.temperature = _check_positive(temperature, "temperature")
        self.iterations = check_positive_int(iterations, "iterations")
        self.smoothing = (None if smoothing is None
                          else _check_fraction(smoothing, "smoothing", 0.0, 1.0, True))
        self._noise_arg = noise_std
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows)

    def _max_candidates(self):
        self._noise = self._default_std(self._noise_arg)
        self._weights = np.empty(self.num_samples, F32)
        self._flat = np.empty((1, self._noise.size), F32)
        return self.num_samples

    def _optimize(self, obs):
        k = self.num_samples
        cand = self._cand[:k]
        w = self._weights
        ok = False
        for _ in range(self.iterations):
            self.rng.standard_normal(out=cand, dtype=F32)
            cand *= self._noise
            cand += self._mean
            if self.smoothing is not None:
                beta = F32(self.smoothing)
                for t in range(1, self.horizon):
                    cand[:, t] *= beta
                    cand[:, t] += (1 - beta) * cand[:, t - 1]
            self._clip(cand)
            returns = self._evaluate(obs, k)
            top = returns.max()
            if top == -np.inf:
                continue
            ok = True
            np.subtract(returns, top, out=w)
            w /= F32(self.temperature)
            np.exp(w, out=w)  # diverged candidates get weight exp(-inf) = 0
            w /= w.sum()
            np.matmul(w[None], cand.reshape(k, -1), out=self._flat)
            self._mean[:] = self._flat.reshape(self._mean.shape)
        self._solution[:] = self._mean
        return ok


def colored_noise_matrix(horizon: int, beta: float) -> np.ndarray:
    """(H, M) matrix L such that L @ z, z ~ N(0, I_M), is Gaussian noise along the horizon with
    power spectrum ∝ 1/f^beta and unit variance per step (beta = 0: white noise)."""
    freqs = np.fft.rfftfreq(horizon)
    freqs[0] = freqs[1] if horizon > 1 else 1.0  # cap the lowest frequency at 1/H
    amp = freqs ** (-beta / 2)
    nf = amp.size
    real_only = np.zeros(nf, bool)
    real_only[0] = True
    if horizon % 2 == 0:
        real_only[-1] = True
    cols = []
    for j in range(nf):
        for part in ((1.0,) if real_only[j] else (1.0, 1j)):
            spec = np.zeros(nf, complex)
            spec[j] = amp[j] * part * (math.sqrt(2.0) if real_only[j] else 1.0)
            cols.append(np.fft.irfft(spec, n=horizon))
    mat = np.stack(cols, axis=1)
    mat /= np.sqrt((mat ** 2).sum(axis=1, keepdims=True))
    return mat.astype(F32)


class ICEM(Planner):
    """Improved CEM (Pinneri et al. 2020).

    population (40) shrinks by `decay` (1.25) per iteration, floored at 2 x elites (10);
    iterations (3); noise_beta: exponent of the colored noise along the horizon (0.25 as for
    HalfCheetah; 2-3.5 for manipulation); keep_fraction (0.3) of the elites carried to the next
    iteration and, shifted one step, to the next call; the mean is added as a candidate in the
    last iteration; alpha (0.1) momentum of the mean/std update; init_std as in CEM.
    return_mean: False (default) returns the best sequence seen, True the final mean.
    """

    def __init__(self, model, reward_fn, terminated_fn=None, *, horizon, action_low, action_high,
                 population=40, elites=10, iterations=3, decay=1.25, noise_beta=0.25,
                 keep_fraction=0.3, alpha=0.1, init_std=None, return_mean=False, seed=0,
                 warm_start=True, rows=DEFAULT_ROWS):
        self.population = check_positive_int(population, "population")
        self.num_elites = check_positive_int(elites, "elites")
        if self.num_elites > self.population:
            raise ValueError(f"elites ({self.num_elites}) must not exceed population "
                             f"({self.population})")
        self.iterations = check_positive_int(iterations, "iterations")
        self.decay = _check_positive(decay, "decay")
        if self.decay < 1:
            raise ValueError(f"decay must be >= 1, got {decay!r}")
        if isinstance(noise_beta, bool) or not isinstance(noise_beta, (int, float)) or noise_beta < 0:
            raise ValueError(f"noise_beta must be a number >= 0, got {noise_beta!r}")
        self.noise_beta = float(noise_beta)
        self.keep_fraction = _check_fraction(keep_fraction, "keep_fraction", 0.0, 1.0, True)
        self.num_keep = int(math.ceil(self.keep_fraction * self.num_elites))
        self.alpha = _check_fraction(alpha, "alpha")
        self.return_mean = bool(return_mean)
        self._init_std_arg = init_std
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows)

    def _sizes(self):
        return [max(int(self.population / self.decay ** i), 2 * self.num_elites)
                if i else self.population for i in range(self.iterations)]

    def _max_candidates(self):
        h, a = self.horizon, self.packed.act_dim
        self._init_std = self._default_std(self._init_std_arg)
        self._std = np.empty_like(self._init_std)
        self._tmp = np.empty_like(self._init_std)
        self._best = np.empty_like(self._init_std)
        self._coloring = colored_noise_matrix(h, self.noise_beta).T.copy()  # (M, H)
        m = self._coloring.shape[0]
        self._white = np.empty((self.population, a, m), F32)
        self._kept = np.empty((self.num_keep, h, a), F32)
        self._elite_idx = np.empty(self.num_elites, np.intp)
        self._elite_buf = np.empty((self.num_elites, h, a), F32)
        return self.population + self.num_keep + 1

    def _reset_state(self):
        self._num_kept = 0

    def _shift_state(self):
        if self._num_kept:
            kept = self._kept[: self._num_kept]
            kept[:, :-1] = kept[:, 1:]
            kept[:, -1] = self._middle[-1]

    def _optimize(self, obs):
        mean, std, tmp = self._mean, self._std, self._tmp
        std[:] = self._init_std
        best_return = -np.inf
        sizes = self._sizes()
        for it, n in enumerate(sizes):
            white = self._white[:n]
            self.rng.standard_normal(out=white, dtype=F32)
            cand = self._cand[:n]
            np.matmul(white, self._coloring, out=cand.transpose(0, 2, 1))
            cand *= std
            cand += mean
            k = n
            if self._num_kept:
                self._cand[k: k + self._num_kept] = self._kept[: self._num_kept]
                k += self._num_kept
            if it == len(sizes) - 1:
                self._cand[k] = mean
                k += 1
            cand = self._cand[:k]
            self._clip(cand)
            returns = self._evaluate(obs, k)
            n_elite = min(self.num_elites, k)
            idx = _elites(returns, n_elite, self._elite_idx)
            if returns[idx[0]] > best_return:
                best_return = returns[idx[0]]
                self._best[:] = cand[idx[0]]
            if returns[idx[0]] == -np.inf:
                continue
            self._num_kept = min(self.num_keep, n_elite)
            np.take(cand, idx[: self._num_kept], axis=0, out=self._kept[: self._num_kept])
            elites = np.take(cand, idx, axis=0, out=self._elite_buf[:n_elite])
            np.mean(elites, axis=0, out=tmp)
            mean *= self.alpha
            mean += (1 - self.alpha) * tmp
            np.std(elites, axis=0, out=tmp)
            std *= self.alpha
            std += (1 - self.alpha) * tmp
        if best_return == -np.inf:
            return False
        self._solution[:] = mean if self.return_mean else self._best
        return True
