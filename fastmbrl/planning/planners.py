"""Model-predictive planners on a learned dynamics model: random shooting, CEM, MPPI, iCEM and
a sampled beam search (tree search).

Every planner maximises the H-step return of action sequences under the model: it draws
candidate sequences with its own ``numpy.random.Generator`` (so one seed gives one answer
whatever the number of threads), has them scored by its `Scorer` (``planning.scorer``: one call
of the fused rollout kernel per iteration) and updates its sampling distribution. ``plan(obs)``
returns the (H, A) solution, ``act(obs)`` its first action. With ``warm_start`` the previous
solution, shifted by one step (the tail refilled with the middle of the action box), seeds the
next call. Every planner takes its sample budget as ``num_samples``, defaulting to its class's
`DEFAULT_NUM_SAMPLES`; `DEFAULT_PLANNER` and `DEFAULT_HORIZON` are the defaults of the Controller
and the training configs.

Embedding: no allocation per call
---------------------------------
Every buffer is allocated, and every numba function compiled or loaded from the cache, when the
planner is built (two warm-up plans run then, on a throwaway random generator). After that a
call of ``plan``/``act`` allocates no NumPy array: the arithmetic runs in small numba helpers
(``kernels.planner_ops``) on preallocated buffers, random numbers are drawn with ``out=``, and
the scorer's batches are prepared for every candidate count the planner uses. What remains is a
constant handful of short-lived Python scalars (the statistics below).

The returned array is owned by the planner and **overwritten by the next call**: it is
read-only; copy it (``planner.plan(obs).copy()``) to keep it, or pass ``out=``, a float32
C-contiguous array of shape (H, A) for ``plan`` or (A,) for ``act``, to receive the result in
your own buffer. The zero-allocation path takes ``obs`` as a 1-D float32 or float64 ndarray of
length O (anything else is converted first, which allocates).

Ensembles
---------
With a model of B > 1 members (``DynamicsModel(ensemble_size=B)``) the scorer rolls every
candidate out under each member and scores it by the mean of its B returns, as PETS's trajectory
sampling with one particle per member: a sequence that only some members believe in scores low,
which keeps the planner from exploiting one network's errors. A plan then costs B times the
model steps.

Settings are checked when a planner is built: integers positive, every float finite and in
its range (ValueError naming the setting and the range), and what the buffers will take is
estimated and checked against ``fastmbrl.limits`` before any is allocated (ResourceLimitError
naming the settings and the bytes).

After each call, ``last_best_return`` holds the best return found, ``last_num_diverged`` how many
candidates diverged (the model produced inf/NaN: they score -inf) and ``last_num_evaluated`` how
many were scored. If every candidate diverges the planner still returns a finite in-bounds plan
(the current distribution's mean) and warns once.
"""
from __future__ import annotations

import math
import warnings

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import check_finite_float, check_positive_int
from fastmbrl.kernels import planner_ops as ops
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.kernels.isa import Spec
from fastmbrl.kernels.rollout import PackedModel
from fastmbrl.tasks.task import RewardFn, TerminatedFn
# the base's public names are this module's too (planners.Planner, DEFAULT_PLANNER, ...)
from fastmbrl.planning.base import (DEFAULT_HORIZON, DEFAULT_PLANNER,  # noqa: F401
                                    MAX_ACTION_BOUND, MAX_NOISE_BETA, Planner, check_deadline)
from fastmbrl.planning.base import (_CHECK_ONLY, _ITERATION_BYTES, _NEG_INF, _NO_SMOOTHING, F32,
                                    _elite_count, _num_samples, _setting)

if TYPE_CHECKING:
    from fastmbrl.models.dynamics import DynamicsModel
    from fastmbrl.models.function import FunctionModel
from fastmbrl.planning.beam import BeamSearch


class RandomShooting(Planner):
    """Uniform random sequences within the bounds; the best one wins (Nagabandi et al. 2018).

    num_samples: candidates per plan (1000 for HalfCheetah in MB-MF). With warm start the
    previous best sequence, shifted, is one of them.
    """

    DEFAULT_NUM_SAMPLES = 1000

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 num_samples: int | None = None, seed: int = 0, warm_start: bool = True,
                 rows: int | None = None, isa: str | Spec | None = None) -> None:
        self.num_samples = _num_samples(RandomShooting, num_samples)
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows,
                         isa=isa)

    def _reset_state(self):
        self._have_previous = False

    def _shift_state(self):
        self._have_previous = True

    def _optimize(self):
        batch = self.scorer.batch(self.num_samples)
        cand = batch.actions
        self.rng.random(out=cand, dtype=F32)
        ops.affine_clip(cand, self._low, self._span, self.action_low, self.action_high,
                        _NO_SMOOTHING)
        if self._have_previous:
            ops.put_row(cand, 0, self._mean)
        best = self.scorer.score(batch)
        ops.take_row(cand, best, self._solution)
        return self.scorer.best_return > _NEG_INF


class CEM(Planner):
    """Cross-entropy method (PETS / mbrl-lib defaults).

    num_samples: samples per iteration, what the literature calls the population (500;
    `population=` is accepted as a deprecated alias). elites: count, or fraction of the samples
    if a float < 1 (0.1, i.e. 50 of 500). iterations (5). alpha: weight of the old distribution
    in the update (0.1). init_std: initial std, scalar or (H, A) (default (high - low) / 4, i.e.
    variance (ub - lb)^2 / 16). sampling: "truncated" (normal truncated at 2 std, std capped at
    half the distance to the bounds, as mbrl-lib) or "clipped" (normal, clipped to the bounds).
    return_mean: return the elite mean (default; the best single sample overfits to model
    error) or the best sample seen.
    """

    DEFAULT_NUM_SAMPLES = 500

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 num_samples: int | None = None, elites: int | float = 0.1, iterations: int = 5,
                 alpha: float = 0.1, init_std: float | npt.ArrayLike | None = None,
                 sampling: str = "truncated", return_mean: bool = True, seed: int = 0,
                 warm_start: bool = True, rows: int | None = None, isa: str | Spec | None = None,
                 population: int | None = None) -> None:
        self.num_samples = _num_samples(CEM, num_samples, population)
        self.num_elites = _elite_count(elites, self.num_samples)
        self.iterations = check_positive_int(iterations, "iterations")
        self.alpha = check_finite_float(alpha, "alpha", 0, 1, high_open=True)
        if sampling not in ("truncated", "clipped"):
            raise ValueError(f"sampling must be 'truncated' or 'clipped', got {sampling!r}")
        self.sampling = sampling
        self.return_mean = bool(return_mean)
        self._init_std_arg = init_std
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows,
                         isa=isa)

    def _spare_size(self, h, a):
        # replacements for the ~4.6 % of normals beyond 2 std, about twice what one round needs
        return max(64, self.num_samples * h * a // 10)

    def _extra_bytes(self, h, a):
        return {"std and best (horizon x act_dim)": 3 * array_bytes(h, a),
                "elite indices": array_bytes(self.num_elites, itemsize=8),
                "truncation spares (num_samples x horizon x act_dim / 10)":
                    array_bytes(self._spare_size(h, a))}

    def _allocate(self):
        self._init_std = self._default_std(self._init_std_arg)
        self._std = np.empty_like(self._init_std)
        self._best = np.empty_like(self._init_std)
        self._elite_idx = np.empty(self.num_elites, np.intp)
        self._spare = np.empty(self._spare_size(*self._init_std.shape), F32)

    def _sample_normal(self, cand):
        self.rng.standard_normal(out=cand, dtype=F32)
        if self.sampling == "truncated":
            for _ in range(20):  # almost always one round; what is left is clipped at the bounds
                self.rng.standard_normal(out=self._spare, dtype=F32)
                if not ops.truncate_normals(cand, self._spare):
                    break

    def _optimize(self):
        mean, std = self._mean, self._std
        np.copyto(std, self._init_std)
        best_return = _NEG_INF
        batch = self.scorer.batch(self.num_samples)
        cand, returns = batch.actions, batch.returns
        for it in range(self.iterations):
            if it and self._out_of_time():
                break
            if self.sampling == "truncated":  # keep mean +- 2 std inside the bounds
                ops.cap_std(std, mean, self.action_low, self.action_high)
            self._sample_normal(cand)
            ops.affine_clip(cand, mean, std, self.action_low, self.action_high, _NO_SMOOTHING)
            self.scorer.score(batch)
            value = self._rank_elites(cand, returns, self.num_elites, best_return)
            best_return = max(best_return, value)
            if value == _NEG_INF:
                continue  # every candidate diverged: keep the distribution
            ops.elite_update(cand, self._elite_idx, self.num_elites, mean, std, self.alpha, True)
        if best_return == _NEG_INF:
            return False
        np.copyto(self._solution, mean if self.return_mean else self._best)
        return True


class MPPI(Planner):
    """Model-predictive path integral control (Williams et al.; PDDM-style smoothing).

    num_samples per iteration (1000). temperature lambda of the weights
    w_k ∝ exp((R_k - max R) / lambda) (1.0; scale it with the task's returns). noise_std:
    scalar or (A,) std of the Gaussian perturbations (default (high - low) / 4). iterations (1).
    smoothing: beta of the filter a_t = beta (mu_t + n_t) + (1 - beta) a_{t-1}, or None.
    """

    DEFAULT_NUM_SAMPLES = 1000

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 num_samples: int | None = None, temperature: float = 1.0,
                 noise_std: float | npt.ArrayLike | None = None, iterations: int = 1,
                 smoothing: float | None = None, seed: int = 0, warm_start: bool = True,
                 rows: int | None = None, isa: str | Spec | None = None) -> None:
        self.num_samples = _num_samples(MPPI, num_samples)
        self.temperature = check_finite_float(temperature, "temperature", 0, low_open=True)
        self.iterations = check_positive_int(iterations, "iterations")
        self.smoothing = (None if smoothing is None
                          else check_finite_float(smoothing, "smoothing", 0, 1))
        self._noise_arg = noise_std
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows,
                         isa=isa)

    def _extra_bytes(self, h, a):
        return {"noise std (horizon x act_dim)": array_bytes(h, a),
                "weights (num_samples)": array_bytes(self.num_samples)}

    def _allocate(self):
        self._noise = self._default_std(self._noise_arg, "noise_std")
        self._weights = np.empty(self.num_samples, F32)
        self._beta = _NO_SMOOTHING if self.smoothing is None else self.smoothing

    def _optimize(self):
        batch = self.scorer.batch(self.num_samples)
        cand, returns = batch.actions, batch.returns
        ok = False
        for it in range(self.iterations):
            if it and self._out_of_time():
                break
            self.rng.standard_normal(out=cand, dtype=F32)
            ops.affine_clip(cand, self._mean, self._noise, self.action_low, self.action_high,
                            self._beta)
            self.scorer.score(batch)
            # diverged candidates get weight exp(-inf) = 0
            if ops.mppi_update(cand, returns, self.temperature, self._weights, self._mean):
                ok = True
        np.copyto(self._solution, self._mean)
        return ok


def colored_noise_bytes(horizon: int) -> int:
    """Peak bytes of building colored_noise_matrix(horizon, ...): M = H columns, three float64
    (H, M) arrays at once and the float32 result."""
    return 3 * array_bytes(horizon, horizon, itemsize=8) + array_bytes(horizon, horizon)


def colored_noise_matrix(horizon: int, beta: float) -> np.ndarray:
    """(H, M) matrix L such that L @ z, z ~ N(0, I_M), is Gaussian noise along the horizon with
    power spectrum ∝ 1/f^beta and unit variance per step (beta = 0: white noise).
    beta in [0, MAX_NOISE_BETA]; M = H."""
    horizon = check_positive_int(horizon, "horizon")
    beta = check_finite_float(beta, "noise_beta", 0, MAX_NOISE_BETA)
    check_bytes(f"colored_noise_matrix(horizon={horizon})",
                {"colored noise (horizon x horizon)": colored_noise_bytes(horizon)}, "horizon")
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


def _icem_sizes(num_samples, num_elites, iterations, decay) -> list:
    """Samples of each iCEM iteration: num_samples shrunk by `decay` per iteration, floored at
    twice the elites."""
    sizes = [num_samples]
    for i in range(1, iterations):
        # past ~1e300 the division gives 0 and the floor wins; decay ** i would overflow
        shrink = decay ** i if i * math.log(decay) < 690 else math.inf
        sizes.append(max(int(num_samples / shrink), 2 * num_elites))
    return sizes


class ICEM(Planner):
    """Improved CEM (Pinneri et al. 2020).

    num_samples: samples of the first iteration, what the literature calls the population (40;
    `population=` is accepted as a deprecated alias); it shrinks by `decay` (1.25) per
    iteration, floored at 2 x elites (10); iterations (3); noise_beta: exponent of the colored
    noise along the horizon (0.25 as for HalfCheetah; 2-3.5 for manipulation); keep_fraction
    (0.3) of the elites carried to the next iteration and, shifted one step, to the next call;
    the mean is added as a candidate in the last iteration; alpha (0.1) momentum of the mean/std
    update; init_std as in CEM. return_mean: False (default) returns the best sequence seen,
    True the final mean.
    """

    DEFAULT_NUM_SAMPLES = 40

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 num_samples: int | None = None, elites: int | float = 10, iterations: int = 3,
                 decay: float = 1.25, noise_beta: float = 0.25, keep_fraction: float = 0.3,
                 alpha: float = 0.1, init_std: float | npt.ArrayLike | None = None,
                 return_mean: bool = False, seed: int = 0, warm_start: bool = True,
                 rows: int | None = None, isa: str | Spec | None = None,
                 population: int | None = None) -> None:
        self.num_samples = _num_samples(ICEM, num_samples, population)
        self.num_elites = _elite_count(elites, self.num_samples)
        self.iterations = check_positive_int(iterations, "iterations")
        self.decay = check_finite_float(decay, "decay", 1)
        self.noise_beta = check_finite_float(noise_beta, "noise_beta", 0, MAX_NOISE_BETA)
        self.keep_fraction = check_finite_float(keep_fraction, "keep_fraction", 0, 1)
        self.num_keep = int(math.ceil(self.keep_fraction * self.num_elites))
        self.alpha = check_finite_float(alpha, "alpha", 0, 1, high_open=True)
        self.return_mean = bool(return_mean)
        self._init_std_arg = init_std
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows,
                         isa=isa)

    @classmethod
    def _candidates(cls, num_samples, **options):
        get = lambda name: _setting(cls, options, name)  # noqa: E731
        elites = _elite_count(get("elites"), num_samples)
        iterations = check_positive_int(get("iterations"), "iterations")
        keep = int(math.ceil(get("keep_fraction") * elites))
        sizes = _icem_sizes(num_samples, elites, iterations, get("decay"))
        # each iteration adds the kept elites (the first from the previous call, with warm
        # start), the last one the mean
        kept = keep * (iterations - (0 if get("warm_start") else 1))
        return sum(sizes) + kept + 1

    def _largest_size(self):
        # the first size, or the floor of the later ones (each later size is at most the first)
        return self.num_samples if self.iterations == 1 else max(self.num_samples,
                                                                   2 * self.num_elites)

    def _iteration_sizes(self):
        return _icem_sizes(self.num_samples, self.num_elites, self.iterations, self.decay)

    def _max_candidates(self):
        return self._largest_size() + self.num_keep + 1

    def _size_settings(self):
        return {**super()._size_settings(), "iterations": self.iterations}

    def _num_counts(self):
        # sizes shrink by `decay` until floored at 2 x elites; each size is scored with 0 or
        # num_keep kept candidates (+1 in the last iteration)
        floor = 2 * self.num_elites
        if self.decay == 1 or self.num_samples <= floor:
            distinct = 2
        else:
            distinct = int(math.log(self.num_samples / floor) / math.log(self.decay)) + 2
        return 2 * min(self.iterations, distinct) + 2

    def _extra_bytes(self, h, a):
        return {"colored noise (horizon x horizon)": colored_noise_bytes(h),
                "white noise (num_samples x act_dim x horizon)":
                    array_bytes(self._largest_size(), a, h),
                "std, best and kept elites (horizon x act_dim)":
                    (3 + self.num_keep) * array_bytes(h, a),
                "per-iteration state (iterations)": self.iterations * _ITERATION_BYTES}

    def _allocate(self):
        h, a = self.horizon, self.scorer.act_dim
        self._sizes = self._iteration_sizes()
        self._init_std = self._default_std(self._init_std_arg)
        self._std = np.empty_like(self._init_std)
        self._best = np.empty_like(self._init_std)
        self._coloring = colored_noise_matrix(h, self.noise_beta).T.copy()  # (M, H)
        if not np.isfinite(self._coloring).all():  # a safeguard: the checked beta keeps it finite
            raise ValueError(f"noise_beta={self.noise_beta} gives non-finite noise over "
                             f"horizon {h}")
        white = np.empty((max(self._sizes), a, self._coloring.shape[0]), F32)
        self._white = [white[:n] for n in self._sizes]
        self.num_samplesept = np.empty((self.num_keep, h, a), F32)
        self._elite_idx = np.empty(self.num_elites, np.intp)
        self._rank = np.arange(self.num_keep, dtype=np.intp)

    def _candidate_counts(self):
        # elites are never more than the candidates (sizes >= 2 x elites after the first), so
        # after the first call the kept count is always num_keep
        last = len(self._sizes) - 1
        return {n + kept + (i == last) for i, n in enumerate(self._sizes)
                for kept in (0, self.num_keep)}

    def _reset_state(self):
        self._num_kept = 0

    def _shift_state(self):
        ops.shift_rows(self.num_samplesept, self.num_samplesept, self._num_kept, self._middle_last)

    def _optimize(self):
        mean, std = self._mean, self._std
        np.copyto(std, self._init_std)
        best_return = _NEG_INF
        last = len(self._sizes) - 1
        for it in range(last + 1):
            if it and self._out_of_time():
                break
            n, white = self._sizes[it], self._white[it]
            self.rng.standard_normal(out=white, dtype=F32)
            batch = self.scorer.batch(n + self._num_kept + (it == last))
            cand, returns = batch.actions, batch.returns
            ops.color_clip(cand, white, self._coloring, mean, std, self.action_low,
                           self.action_high)
            ops.gather_rows(self.num_samplesept, self._rank, self._num_kept, cand, n)
            if it == last:
                ops.put_row(cand, n + self._num_kept, mean)
            self.scorer.score(batch)
            n_elite = min(self.num_elites, returns.shape[0])
            value = self._rank_elites(cand, returns, n_elite, best_return)
            best_return = max(best_return, value)
            if value == _NEG_INF:
                continue
            self._num_kept = min(self.num_keep, n_elite)
            ops.gather_rows(cand, self._elite_idx, self._num_kept, self.num_samplesept, 0)
            ops.elite_update(cand, self._elite_idx, n_elite, mean, std, self.alpha, False)
        if best_return == _NEG_INF:
            return False
        np.copyto(self._solution, mean if self.return_mean else self._best)
        return True



def check_settings(name: str, horizon: int, num_samples: int | None, options: dict[str, Any],
                   action_low: npt.ArrayLike, action_high: npt.ArrayLike) -> None:
    """The checks that building the planner called `name` makes of these settings (ValueError
    or TypeError naming the bad one), without a model, a kernel or a buffer: a configuration can
    refuse them before it starts a run."""
    kwargs = dict(options)
    if num_samples is not None:  # over the deprecated name if the options use it (as built)
        kwargs["population" if "population" in kwargs else "num_samples"] = num_samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the build will warn
        PLANNERS[name](_CHECK_ONLY, None, horizon=horizon,  # type: ignore[arg-type]
                       action_low=action_low, action_high=action_high, **kwargs)


def num_samples_for(name: str, candidates: int, **options: Any) -> int:
    """The largest num_samples with which the planner called `name` scores at most
    `candidates` per plan (candidates_per_call), or the least it accepts if even that scores
    more."""
    cls = PLANNERS[name]
    elites = _setting(cls, options, "elites", 1)
    low = 1 if isinstance(elites, (float, np.floating)) else max(1, int(elites))  # a count
    low = max(low, int(_setting(cls, options, "beams", 1) or 1))  # a child per beam
    if cls.candidates_per_call(low, **options) > candidates:
        return low
    high = max(low, int(candidates))
    while low < high:  # candidates_per_call grows with num_samples
        mid = (low + high + 1) // 2
        if cls.candidates_per_call(mid, **options) <= candidates:
            low = mid
        else:
            high = mid - 1
    return low


#: planner names used by tasks, configs and the CLI
PLANNERS: dict[str, type[Planner]] = {"rs": RandomShooting, "cem": CEM, "mppi": MPPI, "icem": ICEM,
                                      "beam": BeamSearch}

#: what each planner option means, in a line (the `fastmbrl train` option's help); which
#: planners take it and their defaults come from the constructors
OPTION_HELP = {
    "elites": "samples that refit the distribution: a count, or a fraction of num_samples if "
              "below 1",
    "iterations": "sampling rounds per plan (beam: trees, each grown around the last one's "
                  "best)",
    "alpha": "weight of the old distribution in each update, in [0, 1)",
    "init_std": "initial sampling std (default: a quarter of the action range)",
    "sampling": "how samples keep within the action bounds: truncated (a normal cut at 2 std) "
                "or clipped",
    "return_mean": "act on the final mean, not on the best sequence seen",
    "warm_start": "start each plan from the previous one, shifted by a step",
    "temperature": "lambda of the weights exp((R - max R) / lambda), positive; scale it with "
                   "the task's returns",
    "noise_std": "std of the Gaussian perturbations (default: the action range / 4, beam / 40)",
    "smoothing": "beta of the action filter a_t = beta (mu_t + n_t) + (1 - beta) a_t-1, in "
                 "[0, 1] (default: none)",
    "decay": "factor, >= 1, by which the sample count shrinks per iteration",
    "noise_beta": f"exponent of the colored noise along the horizon, in [0, {MAX_NOISE_BETA:g}] "
                  "(0: white noise)",
    "keep_fraction": "share of the elites kept for the next iteration and the next plan, in "
                     "[0, 1]",
    "beams": "branches kept at each depth of the tree (num_samples is the children per depth; "
             "default: num_samples // 10)",
    "tail": "steps of the rollout that scores each child beyond its branch (default: the rest "
            "of the horizon; 0: none)",
    "tail_policy": "actions of that rollout: mean (the warm-start plan) or random",
}
