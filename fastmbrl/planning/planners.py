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

import inspect
import math
import time
import warnings

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import as_array, check_finite_float, check_positive_int
from fastmbrl.kernels import planner_ops as ops
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.kernels.isa import Spec
from fastmbrl.kernels.rollout import PackedModel
from fastmbrl.planning.scorer import Scorer, batch_bytes
from fastmbrl.tasks.task import RewardFn, TerminatedFn

if TYPE_CHECKING:
    from fastmbrl.models.dynamics import DynamicsModel
    from fastmbrl.models.function import FunctionModel

F32 = np.float32
_NEG_INF = -math.inf
_NO_SMOOTHING = -1.0
#: largest |action bound|: the planners sample within the box in float32, whose range a
#: wider box loses (at +-3e38 the span itself overflows and every candidate is inf)
MAX_ACTION_BOUND = 1e6
#: largest iCEM noise_beta (the literature uses 0-3.5): the noise's lowest frequency is scaled
#: by horizon^(beta / 2), which a larger beta overflows for long horizons
MAX_NOISE_BETA = 10.0
_ITERATION_BYTES = 256  # iCEM keeps a sample count and a noise view per iteration

#: the planner of a Controller (and of a task without a preset) unless one is named
DEFAULT_PLANNER = "cem"
#: planning horizon H of a Controller (and of a task without a preset)
DEFAULT_HORIZON = 20


def _num_samples(owner, num_samples, population=None):
    """`num_samples` (None: the planner's DEFAULT_NUM_SAMPLES), or its deprecated name
    `population` (CEM, iCEM)."""
    name = owner.__name__
    if population is not None:
        if num_samples is not None:
            raise ValueError(f"{name}: pass num_samples or its old name population, not both")
        warnings.warn(f"{name}(population=...) is deprecated: use num_samples",
                      DeprecationWarning, stacklevel=3)
        return check_positive_int(population, "population")
    if num_samples is None:
        return owner.DEFAULT_NUM_SAMPLES
    return check_positive_int(num_samples, "num_samples")


def _elite_count(elites, num_samples: int) -> int:
    """`elites` as a count, or as a fraction of the samples if a float in (0, 1)."""
    if isinstance(elites, (float, np.floating)):
        if not 0 < elites < 1:  # also NaN
            raise ValueError(f"elites must be a count (a positive integer) or a fraction in "
                             f"(0, 1), got {elites!r}")
        elites = max(1, int(round(elites * num_samples)))
    elites = check_positive_int(elites, "elites")
    if elites > num_samples:
        raise ValueError(f"elites ({elites}) must not exceed num_samples ({num_samples})")
    return elites


def _setting(cls, options, name, absent=None):
    """Option `name` from `options`, else the default of `cls`'s constructor (`absent` if it
    takes no such option)."""
    if name in options:
        return options[name]
    param = inspect.signature(cls.__init__).parameters.get(name)
    return absent if param is None else param.default


def _check_bounds(low, high, a):
    low, high = as_array(low, "action_low", (a,)).copy(), as_array(high, "action_high", (a,)).copy()
    for name, bound in (("action_low", low), ("action_high", high)):
        if (np.abs(bound) > MAX_ACTION_BOUND).any():
            raise ValueError(f"{name} must be finite and within [-{MAX_ACTION_BOUND:g}, "
                             f"{MAX_ACTION_BOUND:g}], got {bound.tolist()}")
    if not (low < high).all():
        raise ValueError("action_low must be below action_high in every dimension")
    return low, high


def check_deadline(ms: float) -> float:
    """A plan's time budget in milliseconds: a positive finite number."""
    return check_finite_float(ms, "deadline_ms", 0, 3.6e6, low_open=True)


def _check_out(out, shape):
    if not (isinstance(out, np.ndarray) and out.dtype == F32 and out.shape == shape
            and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out: expected a writeable C-contiguous float32 array of shape {shape}, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")


class Planner:
    """Common machinery: bounds, RNG, buffers, warm start, the scorer.

    model: a DynamicsModel (re-packed whenever its `version` changes) or a PackedModel.
    isa: instruction-set spec (or name) to pack a DynamicsModel for (default: the current one;
    a PackedModel brings its own). rows: candidates per parallel chunk (default: the spec's).
    reward_fn / terminated_fn: numba functions ``f(obs, act, next_obs, out)`` (see kernels.rollout).
    `scorer` is the planner's Scorer; `packed` the PackedModel it plans with.
    """

    # set by the subclasses (num_samples before this __init__), or by a plan
    num_samples: int
    _elite_idx: np.ndarray
    _best: np.ndarray
    _last_t: float
    _deadline: float | None

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 seed: int = 0, warm_start: bool = True, rows: int | None = None,
                 isa: str | Spec | None = None) -> None:
        self.horizon = check_positive_int(horizon, "horizon")
        if model is _CHECK_ONLY:  # check_settings: the subclass has checked its own settings
            _check_bounds(action_low, action_high, np.shape(action_low)[0])
            return
        self.scorer = Scorer(model, reward_fn, terminated_fn, horizon=self.horizon,
                             max_candidates=self._max_candidates(), rows=rows, isa=isa,
                             owner=self._describe(model), extra_bytes=self._buffer_bytes,
                             seed=seed)
        a = self.scorer.act_dim
        self.num_members = self.scorer.num_members
        self.action_low, self.action_high = _check_bounds(action_low, action_high, a)
        self.warm_start = bool(warm_start)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        shape = (self.horizon, a)
        self._low = np.ascontiguousarray(np.broadcast_to(self.action_low, shape))
        self._span = np.ascontiguousarray(np.broadcast_to(self.action_high - self.action_low, shape))
        self._middle = np.ascontiguousarray(
            np.broadcast_to((self.action_low + self.action_high) / F32(2), shape))
        self._middle_last = self._middle[-1]
        self._mean = self._middle.copy()
        self._solution = np.empty(shape, F32)
        self._mean3, self._solution3 = self._mean[None], self._solution[None]
        self._result = self._solution.view()
        self._result.flags.writeable = False
        self._first_action = self._result[0]
        self._allocate()
        self._warned = False
        self.reset()
        self._warm_up()

    # --- subclass interface -------------------------------------------------------------
    def _max_candidates(self) -> int:
        """The most candidates one kernel call scores (from the settings alone)."""
        return self.num_samples

    def _size_settings(self) -> dict[str, int]:
        """The settings that size the buffers, for a ResourceLimitError's message."""
        return {"num_samples": self.num_samples, "horizon": self.horizon}

    def _extra_bytes(self, h: int, a: int) -> dict[str, int]:
        """{part: bytes} of the subclass's buffers for horizon h and act_dim a."""
        return {}

    def _num_counts(self) -> int:
        """How many candidate counts (prepared batches) the planner uses, at most."""
        return 1

    @classmethod
    def candidates_per_call(cls, num_samples: int | None = None, **options: Any) -> int:
        """Candidates one plan scores with these settings once an episode is under way and no
        deadline cuts it short: a plan costs this x horizon x ensemble members model steps
        (x particles instead of members for a probabilistic model rolled out by ts1/tsinf).
        `options`: the planner's, and ``horizon=`` (BeamSearch's cost depends on it)."""
        return cls._candidates(_num_samples(cls, num_samples), **options)

    @classmethod
    def _candidates(cls, num_samples, **options) -> int:
        return num_samples * _setting(cls, options, "iterations", 1)

    def _describe(self, model) -> str:
        sizes = {**self._size_settings(), "act_dim": getattr(model, "act_dim", "?")}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in sizes.items())})"

    def _buffer_bytes(self, scorer: Scorer) -> dict[str, int]:
        """What the planner allocates besides the scorer's buffers (see Scorer)."""
        h, a = scorer.horizon, scorer.act_dim
        return {"bounds and plans (horizon x act_dim)": 8 * array_bytes(h, a),
                "prepared batches": (self._num_counts() - 1) * batch_bytes(
                    scorer.max_candidates, scorer.num_members, scorer.rows),
                **self._extra_bytes(h, a)}

    def _allocate(self):
        """Allocate the subclass's buffers (the scorer and the bounds are set)."""

    def _candidate_counts(self):
        """Every number of candidates one kernel call may score."""
        return (self.scorer.max_candidates,)

    def _optimize(self) -> bool:
        """Fill self._solution (the scorer has the observation); return False if every
        candidate diverged."""
        raise NotImplementedError

    def _reset_state(self):
        pass

    def _shift_state(self):
        pass

    # --- public API ----------------------------------------------------------------------
    @property
    def reward_fn(self) -> RewardFn:
        """The objective the planner maximises (the scorer's reward function)."""
        return self.scorer.reward_fn

    @property
    def terminated_fn(self) -> TerminatedFn | None:
        return self.scorer.terminated_fn

    @property
    def packed(self) -> PackedModel:
        """The PackedModel the planner plans with (follows the model's version)."""
        return self.scorer.packed

    @property
    def last_best_return(self) -> float:
        """Best return of the last call (-inf before the first, or if every candidate diverged)."""
        return self.scorer.best_return

    @property
    def last_num_diverged(self) -> int:
        """Candidates of the last call whose rollout diverged (inf/NaN)."""
        return self.scorer.num_diverged

    @property
    def last_num_evaluated(self) -> int:
        """Candidates scored by the last call."""
        return self.scorer.num_evaluated

    def reset(self, seed: int | None = None) -> None:
        """Forget the warm-start state (and reseed if `seed` is given)."""
        if seed is not None:
            self.seed = seed
            self.rng = np.random.default_rng(seed)
            self.scorer.reseed(seed)
        np.copyto(self._mean, self._middle)
        self.scorer.reset_statistics()
        self._reset_state()

    _deadline_ms: float | None = None

    @property
    def deadline_ms(self) -> float | None:
        """Default time budget of a plan in milliseconds (None: run every iteration)."""
        return self._deadline_ms

    @deadline_ms.setter
    def deadline_ms(self, ms: float | None) -> None:
        self._deadline_ms = None if ms is None else check_deadline(ms)

    def plan(self, obs: npt.ArrayLike, out: npt.NDArray[np.float32] | None = None,
             deadline_ms: float | None = None) -> npt.NDArray[np.float32]:
        """Best action sequence (H, A) float32 from observation `obs` (O,).

        Returns `out` if given, else a read-only array that the next call overwrites.
        `deadline_ms` (default: the planner's `deadline_ms`): stop refining before an
        iteration that would end past it (judged by the last one) and return the best so far;
        the first iteration always runs (random shooting has only that one), so a plan is
        always a finite in-bounds action and may exceed a budget shorter than one iteration."""
        if out is not None:
            _check_out(out, self._solution.shape)
        self._run(obs, self._solution if out is None else out, deadline_ms)
        return self._result if out is None else out

    def act(self, obs: npt.ArrayLike, out: npt.NDArray[np.float32] | None = None,
            deadline_ms: float | None = None) -> npt.NDArray[np.float32]:
        """First action (A,) of plan(obs); `out`, `deadline_ms` and the returned array as
        in `plan`."""
        if out is not None:
            _check_out(out, self._first_action.shape)
        self._run(obs, self._solution if out is None else out, deadline_ms)
        return self._first_action if out is None else out

    def _out_of_time(self) -> bool:
        """Whether another iteration, as long as the last one, would end past this plan's
        deadline (asked before each iteration after the first)."""
        if self._deadline is None:
            return False
        now = time.perf_counter()
        step, self._last_t = now - self._last_t, now
        return now + step > self._deadline

    # --- helpers for subclasses ----------------------------------------------------------
    def _rank_elites(self, cand, returns, n_elite, best_return) -> float:
        """Put the top `n_elite` indices in self._elite_idx; keep the best row seen in
        self._best when it beats `best_return`. Returns the top return."""
        ops.top_k(returns, n_elite, self._elite_idx)
        first = self._elite_idx.item(0)
        value = returns.item(first)
        if value > best_return:
            ops.take_row(cand, first, self._best)
        return value

    def _run(self, obs, out, deadline_ms=None):
        ms = self._deadline_ms if deadline_ms is None else check_deadline(deadline_ms)
        if ms is None:
            self._deadline = None
        else:
            self._last_t = time.perf_counter()
            self._deadline = self._last_t + ms / 1e3
        self.scorer.begin(obs)
        if not self._optimize():
            if not self._warned:
                warnings.warn(f"{type(self).__name__}: every candidate diverged (inf/NaN in the "
                              "model's rollouts); returning the sampling mean", RuntimeWarning,
                              stacklevel=3)
                self._warned = True
            np.copyto(self._solution, self._mean)
        ops.finish_plan(self._solution, self.action_low, self.action_high, out)
        if self.warm_start:
            ops.shift_rows(self._solution3, self._mean3, 1, self._middle_last)
            self._shift_state()
        else:
            np.copyto(self._mean, self._middle)
            self._reset_state()

    def _warm_up(self):
        """Prepare the scorer's batch of every candidate count and compile (or load) every
        numba function now: two plans with a throwaway random generator, so that the first
        real call is like any other."""
        for k in self._candidate_counts():
            self.scorer.batch(k)
        rng, self.rng = self.rng, np.random.default_rng(0)
        obs = np.zeros(self.scorer.obs_dim, F32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for _ in range(2):  # the second call takes the warm-start paths
                self.act(obs)
        ops.finish_plan(self._solution, self.action_low, self.action_high,
                        np.empty_like(self._first_action))  # act(obs, out) writes one row
        self.rng, self._warned = rng, False
        self.reset()

    def _default_std(self, value, name="init_std", fraction=4):
        """`value` (a scalar or an array broadcasting to (H, A)) as a float32 (H, A) std, or
        (high - low) / fraction if None."""
        if value is None:
            return np.ascontiguousarray(self._span / F32(fraction))
        raw = as_array(value, name, np.shape(value), np.float64)  # real and finite
        if not ((raw > 0) & (raw <= np.finfo(F32).max)).all():
            raise ValueError(f"{name} must be positive and finite in float32, got "
                             f"{raw.min() if (raw <= 0).any() else raw.max()!r}")
        try:
            return np.ascontiguousarray(np.broadcast_to(raw.astype(F32), self._middle.shape))
        except ValueError:
            raise ValueError(f"{name}: expected a scalar or an array broadcasting to "
                             f"{self._middle.shape}, got shape {raw.shape}") from None


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


_TAIL_POLICIES = ("mean", "random")
#: the beam's default noise std is the action range / this: a child changes one step of the
#: plan, and on a learned HalfCheetah model (3 members, 12,000 model steps per action) stds 0.5,
#: 0.2, 0.1 and 0.05 of a range of 2 gave returns -8, 281, 503 and 768; known Pendulum (range
#: 4) keeps -145 down to std 0.1 and falls to -197 at 0.05 (znver3, 2026-12-04)
_BEAM_NOISE_FRACTION = 40
#: the beam's default noise std is the action range / this: a child changes one step of the
#: plan, and on a learned HalfCheetah model (3 members, 12,000 model steps per action) std 0.5,
#: 0.2, 0.1 and 0.05 of a range of 2 gave returns -8, 281, 503 and 768; known Pendulum (range 4)
#: keeps -145 down to std 0.1 and falls to -197 at 0.05


def _beam_sizes(cls, num_samples, options, horizon=None):
    """(beams, tail) of a BeamSearch with these settings; beams None (the default) gives each
    beam 10 children; a tail of None (the default) is the rest of the horizon, which `horizon`
    (or options["horizon"]) then gives."""
    beams = _setting(cls, options, "beams")
    beams = max(1, num_samples // 10) if beams is None else check_positive_int(beams, "beams")
    if beams > num_samples:
        raise ValueError(f"beams ({beams}) must not exceed num_samples ({num_samples}): each "
                         f"beam needs a child per depth")
    tail = _setting(cls, options, "tail")
    if tail is None:
        horizon = options.get("horizon") if horizon is None else horizon
        if horizon is None:
            raise ValueError("BeamSearch.candidates_per_call: pass horizon= (the tail's cost "
                             "depends on it)")
        tail = check_positive_int(horizon, "horizon") - 1
    if isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or tail < 0:
        raise ValueError(f"tail must be a non-negative integer or None (the rest of the "
                         f"horizon), got {tail!r}")
    return beams, int(tail)


def _tail_lengths(horizon, tail):
    """Steps of the tail rollout after each depth: what is left of the horizon, at most tail."""
    return [min(tail, horizon - 1 - d) for d in range(horizon)]


class BeamSearch(Planner):
    """Sampled beam search: tree search over action sequences, one depth per step.

    The tree's root is the observation. At each of the H depths every one of `beams` W
    partial sequences (with the state each ensemble member reached at its end) is expanded
    with about num_samples / W actions drawn around the nominal sequence u (warm start: the
    previous plan, shifted; else the middle of the box) with std noise_std (default
    (high - low) / 40: a child changes one step of a whole plan, so small steps pay), the
    first child of each beam taking u's action itself; the num_samples children are scored by the return of their branch so far plus the return of the next
    min(tail, steps left) steps of a rollout from the child under `tail_policy` ("mean": u's
    actions; "random": uniform in the box), and the best W survive. The first
    depth expands the root alone into all the children. The plan is the best final branch.

    num_samples: children per depth (100). beams (None: num_samples // 10, so that each beam
    has 10 children; with one child per beam only the nominal grows). tail (None: the rest of
    the horizon,
    so that every child is scored by a whole H-step return; 0: by its branch alone, which is
    greedy and measures poorly). A depth costs each child one model step plus its tail, so a
    plan costs num_samples x (H + sum of the tails) model steps (x members): with the whole
    tail, num_samples x H (H + 1) / 2. A deadline ends the
    search early with the best branch so far completed by u. Every branch keeps its states
    per ensemble member, so a model sampled by trajectory sampling (ts1/tsinf) is refused.
    """

    DEFAULT_NUM_SAMPLES = 100

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 num_samples: int | None = None, beams: int | None = None,
                 tail: int | None = None,
                 tail_policy: str = "mean", noise_std: float | npt.ArrayLike | None = None,
                 iterations: int = 1, seed: int = 0, warm_start: bool = True,
                 rows: int | None = None, isa: str | Spec | None = None) -> None:
        self.num_samples = _num_samples(BeamSearch, num_samples)
        self.iterations = check_positive_int(iterations, "iterations")
        self.beams, self.tail = _beam_sizes(
            BeamSearch, self.num_samples, {"beams": beams, "tail": tail},
            check_positive_int(horizon, "horizon"))
        if tail_policy not in _TAIL_POLICIES:
            raise ValueError(f"tail_policy must be one of {', '.join(_TAIL_POLICIES)}, got "
                             f"{tail_policy!r}")
        self.tail_policy = tail_policy
        self._noise_arg = noise_std
        self._best_value = _NEG_INF
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows,
                         isa=isa)

    @classmethod
    def _candidates(cls, num_samples, **options):
        _, tail = _beam_sizes(cls, num_samples, options)
        k = num_samples
        if tail == 0:
            return k * check_positive_int(_setting(cls, options, "iterations"), "iterations")
        horizon = options.get("horizon")
        if horizon is None:
            raise ValueError("BeamSearch.candidates_per_call: pass horizon= (the tail's cost "
                             "depends on it)")
        horizon = check_positive_int(horizon, "horizon")
        steps = sum(k * (1 + t) for t in _tail_lengths(horizon, tail))
        iterations = check_positive_int(_setting(cls, options, "iterations"), "iterations")
        return -(-iterations * steps // horizon)  # model steps per plan / horizon, rounded up

    def _max_candidates(self):
        return self.num_samples

    def _size_settings(self):
        return {**super()._size_settings(), "beams": self.beams, "tail": self.tail,
                "iterations": self.iterations}

    def _tails(self):
        return sorted({t for t in _tail_lengths(self.horizon, self.tail) if t})

    def _num_counts(self):
        return 1 + len(self._tails())  # the expansion's batch and one per tail length

    def _buffer_bytes(self, scorer):
        b, o, h, a = scorer.num_members, scorer.obs_dim, scorer.horizon, scorer.act_dim
        k, w = self.num_samples, self.beams
        tails = self._tails()
        parts = super()._buffer_bytes(scorer)
        parts.update({
            "branch prefixes (2 x beams x horizon x act_dim)": 2 * array_bytes(w, h, a),
            "branch states (ensemble members x (beams + 2 x num_samples) x obs_dim)":
                array_bytes(b, w + 2 * k, o) + b * (w + 2 * k),
            "children's actions, returns and values (num_samples x act_dim)":
                array_bytes(k, a) + 3 * array_bytes(k) + array_bytes(w, itemsize=8),
            "tail actions (num_samples x tail x act_dim)":
                array_bytes(k, max(tails, default=0), a),
            "noise std (horizon x act_dim)": array_bytes(h, a)})
        return parts

    def _candidate_counts(self):
        return ()  # its batches are branches, built in _allocate

    def _allocate(self):
        h, a = self.horizon, self.scorer.act_dim
        b, o, k, w = self.num_members, self.scorer.obs_dim, self.num_samples, self.beams
        self._noise = self._default_std(self._noise_arg, "noise_std", _BEAM_NOISE_FRACTION)
        self._prefixes = (np.zeros((w, h, a), F32), np.zeros((w, h, a), F32))
        self._beam_states = np.zeros((b, w, o), F32)
        self._beam_live = np.zeros((b, w), np.bool_)
        self._beam_ret = np.zeros(w, F32)
        self._children = np.zeros((k, 1, a), F32)
        self._states = np.zeros((b, k, o), F32)
        self._live = np.zeros((b, k), np.bool_)
        self._child_ret = np.zeros(k, F32)
        self._value = np.zeros(k, F32)
        self._idx = np.zeros(w, np.intp)
        self._expand = self.scorer.branch(self._children, self._states, self._live)
        tails = self._tails()
        flat = np.zeros(k * max(tails, default=0) * a, F32)
        self._tail_states = np.zeros_like(self._states)
        self._tail_live = np.zeros_like(self._live)
        self._tail_batches = {t: self.scorer.branch(flat[:k * t * a].reshape(k, t, a),
                                                    self._tail_states, self._tail_live)
                              for t in tails}
        # per-depth views, made once (a slice in the call path would be a new object)
        self._depths = [(self._mean[d:d + 1], self._noise[d:d + 1], self._mean[d])
                        for d in range(h)]
        self._tail_at = [self._tail_batches.get(t) for t in _tail_lengths(h, self.tail)]

    @property
    def noise(self) -> np.ndarray:
        """The (H, A) std of the children's actions around the nominal (read-only)."""
        view = self._noise.view()
        view.flags.writeable = False
        return view

    @property
    def last_best_return(self) -> float:
        """Model return of the last plan's branch (-inf before the first, or if every
        candidate diverged)."""
        return self._best_value

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._best_value = _NEG_INF

    def _optimize(self):
        self._best_value = _NEG_INF
        for it in range(self.iterations):
            if it:
                if self._out_of_time():
                    break
                np.copyto(self._mean, self._solution)  # the next tree grows around the best
            before = self._best_value
            if not self._grow():
                np.copyto(self._solution, self._mean)
                self._best_value = before
                return it > 0
            if self._best_value < before:  # a shorter tail can score below its nominal
                np.copyto(self._solution, self._mean)
                self._best_value = before
        return True

    def _grow(self):
        """One tree around the nominal self._mean: its best branch into self._solution."""
        scorer, expand = self.scorer, self._expand
        low, high, w = self.action_low, self.action_high, self.beams
        ops.beam_root(scorer.observation, self._beam_states, self._beam_live, self._beam_ret)
        prefix, new_prefix = self._prefixes
        parents = 1
        for d in range(self.horizon):
            if d and self._out_of_time():
                ops.finish_prefix(prefix, 0, d, self._mean, self._solution)
                self._best_value = self._beam_ret.item(0)
                return True
            mean_d, noise_d, nominal = self._depths[d]
            self.rng.standard_normal(out=self._children, dtype=F32)
            ops.affine_clip(self._children, mean_d, noise_d, low, high, _NO_SMOOTHING)
            ops.beam_children(self._beam_states, self._beam_live, parents, self._states,
                              self._live, self._children, nominal)
            if expand.returns.item(scorer.score(expand)) == _NEG_INF:
                return False  # every child diverged
            ops.beam_values(self._beam_ret, parents, expand.returns, self._child_ret,
                            self._value)
            tail = self._tail_at[d]
            if tail is not None:
                np.copyto(self._tail_states, self._states)
                np.copyto(self._tail_live, self._live)
                if self.tail_policy == "mean":
                    ops.tile_rows(self._mean, d + 1, tail.actions)
                else:
                    self.rng.random(out=tail.actions, dtype=F32)
                    ops.affine_clip(tail.actions, self._low, self._span, low, high,
                                    _NO_SMOOTHING)
                scorer.score(tail)
                ops.add_returns(self._value, tail.returns)
            ops.top_k(self._value, w, self._idx)
            if self._value.item(self._idx.item(0)) == _NEG_INF:
                return False
            ops.beam_select(self._idx, w, parents, d, self._children, self._states, self._live,
                            self._child_ret, prefix, new_prefix, self._beam_states,
                            self._beam_live, self._beam_ret)
            prefix, new_prefix = new_prefix, prefix
            parents = w
        np.copyto(self._solution, prefix[0])
        self._best_value = self._beam_ret.item(0)
        return True


_CHECK_ONLY: Any = object()  # the model of a planner built only to check its settings


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
