"""What every planner shares: the `Planner` base class (bounds, seeding, warm start, the
scorer, deadlines, the allocation-free call path) and the checks of its settings. The
planners themselves and their registry are in ``planning.planners``, which documents the
contract."""
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
from fastmbrl.limits import array_bytes
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
        # throwaway generators: the first real plan draws what the seed alone says
        rng, self.rng = self.rng, np.random.default_rng(0)
        particle_rng, self.scorer.rng = self.scorer.rng, np.random.default_rng(0)
        obs = np.zeros(self.scorer.obs_dim, F32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for _ in range(2):  # the second call takes the warm-start paths
                self.act(obs)
        ops.finish_plan(self._solution, self.action_low, self.action_high,
                        np.empty_like(self._first_action))  # act(obs, out) writes one row
        self.rng, self.scorer.rng, self._warned = rng, particle_rng, False
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


_CHECK_ONLY: Any = object()  # the model of a planner built only to check its settings
