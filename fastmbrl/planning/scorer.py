"""Scoring candidate action sequences for the planners: one rollout-kernel call per batch.

A planner asks its `Scorer` for a `Batch` of k candidates, writes the sequences into
``batch.actions`` (k, H, A), and calls ``scorer.score(batch)``, which rolls every candidate out
from the observation given to ``scorer.begin(obs)``, leaves the returns in ``batch.returns`` (k,)
and gives back the index of the best. The scorer owns what that takes: the packed model (re-packed
when a DynamicsModel's `version` changes), the compiled kernel, its scratch Workspace, the chunking
and argument list prepared once per candidate count, and, for an ensemble of B members, the
rollout of every candidate under each member and the mean of its B returns. A probabilistic
model sampled by trajectory sampling (``PackedModel.sampled``: ts1 or tsinf) is rolled out by
the particle kernel instead: P particles per candidate, whose noise and member draws the scorer
makes before each call from its own seeded Generator (the same for any thread count), and a
candidate scores the mean of its particles' returns less `risk` times their std.

A tree search scores branches instead: ``branch(actions, states, live[, earned])`` binds a
planner's own buffers once, rows that each start from their own state (``states`` (B, k, O),
one per ensemble member, member-major as the kernel's rows; for a sampled model one per
particle, with the return each has earned) and receive their end states and alive flags in
place, so that the next depth starts where this one ended.

After ``batch(k)`` has been called once for every count k a planner uses, ``begin`` and
``score`` allocate no NumPy array. What the buffers will take is estimated (``scorer_bytes``)
and checked against ``fastmbrl.limits`` before any is allocated.

A reward or termination function that raises inside the kernel is reported as its own
exception (numba's parallel kernel would surface it as a SystemError), with a note naming it.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import as_array, check_positive_int
from fastmbrl.kernels import planner_ops as ops
from fastmbrl.kernels.isa import Spec, get_spec
from fastmbrl.kernels.rollout import (
    KernelArgs,
    PackedModel,
    ParticleArgs,
    ParticleDraws,
    ParticleWorkspace,
    Workspace,
    chunk_rows,
    draw_particles,
    kernel_args,
    make_chunks,
    particle_args,
    particle_draws,
    particle_workspace_bytes,
    particles_per_member,
    rollout_kernel,
    user_error,
)
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.tasks.task import RewardFn, TerminatedFn

if TYPE_CHECKING:
    from fastmbrl.models.dynamics import DynamicsModel
    from fastmbrl.models.function import FunctionModel

F32 = np.float32
_NEG_INF = -math.inf
_OBS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Batch:
    """k candidates: write ``actions`` (k, H, A) float32, read ``returns`` (k,) float32 after
    ``Scorer.score`` (-inf for a candidate whose rollout diverged). Views into the scorer's
    buffers, shared by every batch of that scorer: one batch holds valid data at a time (a
    branch's states, alive flags and earnings are its planner's own arrays)."""

    __slots__ = ("actions", "returns", "_args", "_call", "_member_returns", "_draws",
                 "__weakref__")

    def __init__(self, actions: np.ndarray, returns: np.ndarray, args: KernelArgs | ParticleArgs,
                 member_returns: np.ndarray | None, draws: ParticleDraws | None = None) -> None:
        self.actions, self.returns = actions, returns
        self._member_returns = member_returns  # (B k,) under each member, or None
        self._draws = draws  # a sampled model's noise (and ts1 sources) for this batch
        self._bind(args)

    def _bind(self, args):
        self._args = args  # KernelArgs of this count
        self._call = tuple(args)  # f(*named_tuple) would copy it on every call

    def __len__(self) -> int:
        return self.returns.shape[0]


def batch_bytes(num_candidates: int, num_members: int, rows: int) -> int:
    """About what one prepared Batch of k candidates holds (its chunk arrays, the objects)."""
    return 24 * (num_members * -(-num_candidates // rows) + 1) + 1024


def scorer_bytes(packed: PackedModel, horizon: int, max_candidates: int, rows: int
                 ) -> dict[str, int]:
    """{part: bytes} of what a Scorer of these sizes allocates (the Workspace's arrays, the
    candidates and their returns, one Batch), from Python ints (no overflow)."""
    k, b, o, a = max_candidates, packed.num_members, packed.obs_dim, packed.act_dim
    if packed.sampled:
        pm = particles_per_member(packed)
        chunks = b * -(-k * pm // rows)
        n_ang = packed.angle_dims.shape[0]
        per_row = 4 * ((o + n_ang + a) + 2 * packed.width + packed.out_width + 2 * o + a + 2) + 2
        return {
            "candidate actions (num_samples x horizon x act_dim)": array_bytes(k, horizon, a),
            "particle workspace (num_samples x particles x horizon x obs_dim)":
                chunks * rows * per_row + particle_workspace_bytes(packed, k, horizon, rows),
            "returns (num_samples)": array_bytes(k),
            "prepared batch": batch_bytes(k, b, rows),
        }
    chunks = b * -(-k // rows)
    n_ang = packed.angle_dims.shape[0]
    per_row = 4 * ((o + n_ang + a) + 2 * packed.width + packed.out_width + 2 * o + a + 2) + 2
    base = 4 * (packed.width if packed.layers.shape[0] > 1 else packed.out_width)
    return {
        "candidate actions (num_samples x horizon x act_dim)": array_bytes(k, horizon, a),
        "rollout workspace (num_samples x ensemble members x network width)":
            chunks * (rows * per_row + base),
        "returns (num_samples x ensemble members)": array_bytes(k) * (1 + (b if b > 1 else 0)),
        "prepared batch": batch_bytes(k, b, rows),
    }


class Scorer:
    """Scores up to `max_candidates` action sequences of `horizon` steps under a model.

    model: a DynamicsModel (anything with ``packed(isa)`` and ``version``; followed when its
    version changes) or a PackedModel. isa: the instruction-set spec (or name) to pack a
    DynamicsModel for (default: the current one; a PackedModel brings its own). rows: candidates
    per parallel chunk (default: the spec's). reward_fn / terminated_fn: numba functions
    ``f(obs, act, next_obs, out)`` (see kernels.rollout).

    Statistics since the last ``begin``: `best_return` (the best score, -inf if none was
    finite), `num_diverged` (candidates that scored -inf), `num_evaluated` (candidates scored).

    owner / extra_bytes: the planner that builds the scorer and its settings (for the
    message), and a function ``extra_bytes(scorer) -> {part: bytes}`` of what the planner will
    allocate besides (called with the sizes set, before any buffer exists): the scorer's
    buffers and these are checked against ``fastmbrl.limits`` together (ResourceLimitError).
    """

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int, max_candidates: int,
                 rows: int | None = None, isa: str | Spec | None = None, owner: str | None = None,
                 extra_bytes: Callable[[Scorer], dict[str, int]] | None = None,
                 seed: int | None = 0) -> None:
        if isinstance(model, PackedModel):
            if isa is not None and get_spec(isa) != model.isa:
                raise ValueError(f"isa: the packed model is laid out for {model.isa.name}, "
                                 f"not {get_spec(isa).name}")
            self._model, self.packed = None, model
        elif hasattr(model, "packed") and hasattr(model, "version"):
            self._model, self._version = model, model.version
            self.packed = model.packed(isa)
        else:
            raise TypeError(f"model: expected a DynamicsModel or a PackedModel, got "
                            f"{type(model).__name__}")
        packed = self.packed
        self.horizon = check_positive_int(horizon, "horizon")
        self.max_candidates = check_positive_int(max_candidates, "max_candidates")
        self.obs_dim, self.act_dim = packed.obs_dim, packed.act_dim
        self.num_members = packed.num_members
        self.rows = chunk_rows(packed, rows)
        need = scorer_bytes(packed, self.horizon, self.max_candidates, self.rows)
        if extra_bytes is not None:
            need.update(extra_bytes(self))
        check_bytes(owner or f"Scorer(horizon={self.horizon}, max_candidates="
                    f"{self.max_candidates}, rows={self.rows}, members={self.num_members})", need)
        self.reward_fn, self.terminated_fn = reward_fn, terminated_fn
        self.sampled = packed.sampled
        #: model rollouts per candidate: its particles, or one per member
        self.rollouts_per_candidate = packed.particles if self.sampled else self.num_members
        self._kernel = rollout_kernel(reward_fn, terminated_fn, packed.isa, packed.dynamics,
                                      self.sampled)
        k, b = self.max_candidates, self.num_members
        self._obs = np.zeros(self.obs_dim, F32)
        self._actions = np.empty((k, self.horizon, self.act_dim), F32)
        self._returns = np.empty(k, F32)
        self.reseed(seed)
        if self.sampled:
            self._pws = ParticleWorkspace(packed, k, self.horizon, self.rows)
            self._member_returns = np.empty(0, F32)
            self._workspace = self._pws.chunks
        else:
            self._member_returns = np.empty(b * k if b > 1 else 0, F32)
            self._workspace = Workspace(packed, b * -(-k // self.rows), self.rows)
        self._batches: dict[int, Batch] = {}
        # branch batches live with their planner; each follows the model as batches do
        self._branches: weakref.WeakSet[Batch] = weakref.WeakSet()
        for dtype in _OBS_DTYPES:  # compile both obs paths now
            ops.load_obs(np.zeros(self.obs_dim, dtype), self._obs)
        self.reset_statistics()

    def batch(self, k: int) -> Batch:
        """The batch of the first k candidates (built on the first request of each k, which
        allocates; later requests return the same object)."""
        batch = self._batches.get(k)
        if batch is None:
            k = check_positive_int(k, "k")
            if k > self.max_candidates:
                raise ValueError(f"k: at most {self.max_candidates} candidates, got {k}")
            b = self.num_members
            actions, returns = self._actions[:k], self._returns[:k]
            if self.sampled:
                draws = particle_draws(self._pws, k, self.horizon)
                args = particle_args(self.packed, self._obs, actions, self._pws, draws=draws)
                batch = self._batches[k] = Batch(actions, returns, args, None, draws)
                return batch
            raw = self._member_returns[:b * k] if b > 1 else None
            chunks = make_chunks(k, self.rows, every_member=b if b > 1 else None)
            args = kernel_args(self.packed, self._obs, actions, chunks, self._workspace,
                               returns if raw is None else raw)
            batch = self._batches[k] = Batch(actions, returns, args, raw)
        return batch

    def branch(self, actions: np.ndarray, states: np.ndarray, live: np.ndarray,
               earned: np.ndarray | None = None) -> Batch:
        """A batch over the planner's own buffers whose k rows start from their own states:
        ``actions`` (k, t, A) float32 of any t >= 1 (at most the horizon for a sampled
        model); for a deterministic model (or the
        expectation) ``states`` (B, k, O) float32 (one state per ensemble member; the
        observation rows, not the model's features) and ``live`` (B, k) bool; for a model
        sampled by trajectory sampling a state per particle, ``states`` (B, k, Pm, O), ``live``
        (B, k, Pm) and ``earned`` (B, k, Pm) float32, the return each particle has earned so
        far (B the elites, Pm = particles / B: particle j of member m is [m, i, j]). All
        C-contiguous and writeable, k at most `max_candidates`. ``score`` rolls row i out from
        its states where live (a dead row earns nothing), fills ``returns`` as for ``batch``
        (for particles: the score of what they have earned in all) and leaves the end states
        and alive flags (and earnings) in place, so that the next depth starts where this one
        ended. The batch keeps the buffers: build it once (it allocates), then write them and
        score it as often as needed."""
        b = self.num_members
        # a sampled model's noise is drawn for at most `horizon` steps
        most = self.horizon if self.sampled else math.inf
        if not (isinstance(actions, np.ndarray) and actions.dtype == F32 and actions.ndim == 3
                and 1 <= actions.shape[1] <= most and actions.shape[2] == self.act_dim
                and actions.flags.c_contiguous):
            raise ValueError(f"actions: expected a C-contiguous float32 array of shape (k, t, "
                             f"{self.act_dim}) with 1 <= t{f' <= {most}' if self.sampled else ''}"
                             f", got {getattr(actions, 'shape', actions)!r}")
        k = check_positive_int(actions.shape[0], "k")
        if k > self.max_candidates:
            raise ValueError(f"actions: at most {self.max_candidates} rows, got {k}")
        rows = (b, k, self._pws.per_member) if self.sampled else (b, k)
        expected: list[tuple[str, np.ndarray | None, type, tuple[int, ...]]] = [
            ("states", states, F32, rows + (self.obs_dim,)), ("live", live, np.bool_, rows)]
        if self.sampled:
            expected.append(("earned", earned, F32, rows))
        elif earned is not None:
            raise ValueError("earned: only for a model sampled by trajectory sampling (its "
                             "particles carry their returns between depths)")
        for name, arr, dtype, shape in expected:
            if not (isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.shape == shape
                    and arr.flags.c_contiguous and arr.flags.writeable):
                raise ValueError(f"{name}: expected a writeable C-contiguous {np.dtype(dtype)} "
                                 f"array of shape {shape}, got "
                                 f"{getattr(arr, 'shape', type(arr).__name__)}")
        returns = self._returns[:k]
        flat_states, flat_live = states.reshape(-1, self.obs_dim), live.reshape(-1)
        if earned is not None:  # sampled: checked above
            draws = particle_draws(self._pws, k, actions.shape[1])
            args = particle_args(self.packed, self._obs, actions, self._pws, flat_states,
                                 flat_live, earned.reshape(-1), draws)
            batch = Batch(actions, returns, args, None, draws)
        else:
            raw = self._member_returns[:b * k] if b > 1 else None
            chunks = make_chunks(k, self.rows, every_member=b if b > 1 else None)
            args = kernel_args(self.packed, self._obs, actions, chunks, self._workspace,
                               returns if raw is None else raw, flat_states, flat_live)
            batch = Batch(actions, returns, args, raw)
        self._branches.add(batch)
        return batch

    @property
    def observation(self) -> np.ndarray:
        """The observation given to the last ``begin`` (O,) float32 (the scorer's buffer: read
        it, do not keep it)."""
        return self._obs

    def begin(self, obs: npt.ArrayLike) -> None:
        """Start scoring from observation `obs` (O,): check and load it, re-pack the model if
        its version changed, zero the statistics. Without a copy for a 1-D float32 or float64
        ndarray; anything else is converted (which allocates) or refused with a ValueError."""
        if not (type(obs) is np.ndarray and obs.ndim == 1 and obs.dtype in _OBS_DTYPES
                and obs.shape[0] == self.obs_dim):
            obs = as_array(obs, "obs", self._obs.shape, finite=False)  # converts, or says why not
        if not ops.load_obs(obs, self._obs):
            raise ValueError("obs: contains NaN or infinite values")
        if self._model is not None and self._model.version != self._version:
            self._repack()
        self.reset_statistics()

    def score(self, batch: Batch) -> int:
        """Roll the batch's candidates out (one kernel call), fill ``batch.returns`` (the members'
        mean for an ensemble), update the statistics; returns the index of the best return
        (the first on ties; 0 if every candidate diverged)."""
        returns = batch.returns
        if batch._draws is not None:  # a sampled model's batch
            draw_particles(self.rng, batch._draws)
        try:  # free unless something raises
            self._kernel(*batch._call)
        except SystemError as exc:
            raise user_error(exc, self.reward_fn, self.terminated_fn) from None
        if self.sampled:
            packed = self.packed
            ops.particle_scores(batch._args.returns, returns.shape[0], self._pws.per_member,
                                self.num_members, packed.risk, returns)
        elif batch._member_returns is not None:
            ops.member_mean(batch._member_returns, returns)
        best, n_inf = ops.score_stats(returns)
        self.num_evaluated += returns.shape[0]
        self.num_diverged += n_inf
        self.best_return = max(self.best_return, returns.item(best))
        return best

    best_return: float
    num_diverged: int
    num_evaluated: int

    def reseed(self, seed: int | None) -> None:
        """Restart the Generator of the particles' noise and member draws from `seed`."""
        self.rng = np.random.default_rng(None if seed is None else [int(seed), 7])

    def reset_statistics(self) -> None:
        self.best_return = _NEG_INF
        self.num_diverged = 0
        self.num_evaluated = 0

    def _repack(self):
        packed = self._model.packed(self.packed.isa)
        old = self.packed
        if (packed.num_members != self.num_members
                or (packed.sampled, packed.particles, packed.propagation)
                != (old.sampled, old.particles, old.propagation)
                or not self._workspace.fits(packed, self._workspace.num_chunks)):
            raise ValueError("model: its shape changed since the planner was built")
        self.packed, self._version = packed, self._model.version
        for batch in (*self._batches.values(), *self._branches):
            batch._bind(batch._args.with_model(packed))


