"""The tree search of the lecture: a sampled beam search over action sequences, on the same
kernel and interface as the other planners (registered as "beam" in ``planning.planners``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import check_positive_int
from fastmbrl.kernels import planner_ops as ops
from fastmbrl.kernels.isa import Spec
from fastmbrl.kernels.rollout import PackedModel, particles_per_member
from fastmbrl.limits import array_bytes
from fastmbrl.planning.base import (_NEG_INF, _NO_SMOOTHING, F32, Planner, _num_samples,
                                    _setting)
from fastmbrl.tasks.task import RewardFn, TerminatedFn

if TYPE_CHECKING:
    from fastmbrl.models.dynamics import DynamicsModel
    from fastmbrl.models.function import FunctionModel

_TAIL_POLICIES = ("mean", "random")
#: the beam's default noise std is the action range / this: a child changes one step of the
#: plan, and on a learned HalfCheetah model (3 members, 12,000 model steps per action) stds 0.5,
#: 0.2, 0.1 and 0.05 of a range of 2 gave returns -8, 281, 503 and 768; known Pendulum (range
#: 4) keeps -145 down to std 0.1 and falls to -197 at 0.05 (znver3, 2026-12-04)
_BEAM_NOISE_FRACTION = 40
_NEEDS_HORIZON = "BeamSearch.candidates_per_call: pass horizon= (the tail's cost depends on it)"


def _beam_sizes(cls, num_samples, options, horizon=None):
    """(beams, tail) of a BeamSearch with these settings; beams None (the default) gives each
    beam 10 children; a tail of None (the default) is the rest of `horizon`."""
    beams = _setting(cls, options, "beams")
    beams = max(1, num_samples // 10) if beams is None else check_positive_int(beams, "beams")
    if beams > num_samples:
        raise ValueError(f"beams ({beams}) must not exceed num_samples ({num_samples}): each "
                         f"beam needs a child per depth")
    tail = _setting(cls, options, "tail")
    if tail is None:
        if horizon is None:
            raise ValueError(_NEEDS_HORIZON)
        tail = check_positive_int(horizon, "horizon") - 1
    if isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or tail < 0:
        raise ValueError(f"tail must be a non-negative integer or None (the rest of the "
                         f"horizon), got {tail!r}")
    return beams, int(tail)


def _rows_per_branch(scorer):
    """A branch's rows per ensemble member: its particles per member when sampled, else 1."""
    return particles_per_member(scorer.packed) if scorer.packed.sampled else 1


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
    first child of each beam taking u's action itself. The num_samples children are scored by
    the return of their branch so far plus that of the next min(tail, steps left) steps of a
    rollout from the child under `tail_policy` ("mean": u's actions; "random": uniform in the
    box), and the best W survive. The first depth expands the root alone into all the
    children. The plan is the best final branch; with iterations > 1 the tree is grown again
    around it (it becomes u).

    With the mean tail over the rest of the horizon and a deterministic model the search never
    ends below u: the branch that follows u is always among the children, scored by u's own
    return, and the best value can only grow from one depth to the next (each best child's
    first child continues along its tail). Each plan is an improvement step of the warm-start
    plan, which is why one iteration per step does well in closed loop.

    num_samples: children per depth (100). beams (None: num_samples // 10, so that each beam
    has 10 children; with one child per beam only the nominal grows). tail (None: the rest of
    the horizon, so that every child is scored by a whole H-step return; 0: by its branch
    alone, which is greedy and measures poorly). A depth costs each child one model step plus
    its tail, so a plan costs num_samples x (H + sum of the tails) model steps (x members):
    with the whole tail, num_samples x H (H + 1) / 2. A deadline ends the search early with the
    best branch so far completed by u. Every branch keeps its state per ensemble member; under
    trajectory sampling (ts1/tsinf) it keeps its P particles instead, each with its state and
    what it has earned, so that a child is scored as the other planners score a candidate:
    mean - risk x std of its particles' returns over the prefix and tail (with fresh noise at
    every depth, a sampled search has no never-below-u guarantee).
    """

    DEFAULT_NUM_SAMPLES = 100

    def __init__(self, model: DynamicsModel | FunctionModel | PackedModel, reward_fn: RewardFn,
                 terminated_fn: TerminatedFn | None = None, *, horizon: int,
                 action_low: npt.ArrayLike, action_high: npt.ArrayLike,
                 num_samples: int | None = None, beams: int | None = None,
                 tail: int | None = None, tail_policy: str = "mean",
                 noise_std: float | npt.ArrayLike | None = None, iterations: int = 1,
                 seed: int = 0, warm_start: bool = True,
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
        self._mean_tail = tail_policy == "mean"
        self._noise_arg = noise_std
        self._best_value = _NEG_INF
        super().__init__(model, reward_fn, terminated_fn, horizon=horizon, action_low=action_low,
                         action_high=action_high, seed=seed, warm_start=warm_start, rows=rows,
                         isa=isa)

    @classmethod
    def _candidates(cls, num_samples, **options):
        horizon = options.get("horizon")
        _, tail = _beam_sizes(cls, num_samples, options, horizon)
        iterations = check_positive_int(_setting(cls, options, "iterations"), "iterations")
        if tail == 0:
            return num_samples * iterations
        if horizon is None:
            raise ValueError(_NEEDS_HORIZON)
        horizon = check_positive_int(horizon, "horizon")
        steps = sum(num_samples * (1 + t) for t in _tail_lengths(horizon, tail))
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
        k, w, r = self.num_samples, self.beams, _rows_per_branch(scorer)
        flags = 5 if scorer.packed.sampled else 1  # an alive flag (and earnings) per row
        tails = self._tails()
        parts = super()._buffer_bytes(scorer)
        parts.update({
            "branch prefixes (2 x beams x horizon x act_dim)": 2 * array_bytes(w, h, a),
            "branch states (ensemble members x (beams + 2 x num_samples) x particles per "
            "member x obs_dim)": array_bytes(b, w + 2 * k, r, o) + flags * b * (w + 2 * k) * r,
            "children's actions, returns and values (num_samples x act_dim)":
                array_bytes(k, a) + 3 * array_bytes(k) + array_bytes(w, itemsize=8),
            "tail actions (num_samples x tail x act_dim)":
                array_bytes(k, max(tails, default=0), a),
            "noise std (horizon x act_dim)": array_bytes(h, a)})
        return parts

    def _candidate_counts(self):
        return ()  # its batches are branches, built in _allocate

    def _allocate(self):
        scorer = self.scorer
        h, a = self.horizon, scorer.act_dim
        b, o, k, w = self.num_members, scorer.obs_dim, self.num_samples, self.beams
        # a branch's rows per member: its particles under trajectory sampling, which also
        # carry what they have earned (the kernel adds to it as a particle moves)
        r = _rows_per_branch(scorer)
        self._sampled = sampled = scorer.packed.sampled
        earned = r if sampled else 0
        self._noise = self._default_std(self._noise_arg, "noise_std", _BEAM_NOISE_FRACTION)
        self._prefixes = (np.zeros((w, h, a), F32), np.zeros((w, h, a), F32))
        self._beam_states = np.zeros((b, w, r * o), F32)
        self._beam_live = np.zeros((b, w, r), np.bool_)
        self._beam_earned = np.zeros((b, w, earned), F32)
        self._beam_ret = np.zeros(w, F32)
        self._children = np.zeros((k, 1, a), F32)
        self._states = np.zeros((b, k, r * o), F32)
        self._live = np.zeros((b, k, r), np.bool_)
        self._earned = np.zeros((b, k, earned), F32)
        self._child_ret = np.zeros(k, F32)
        self._value = np.zeros(k, F32)
        self._idx = np.zeros(w, np.intp)

        def bind(actions, states, live, earned):
            if sampled:
                return scorer.branch(actions, states.reshape(b, k, r, o), live, earned)
            return scorer.branch(actions, states, live.reshape(b, k))

        self._expand = bind(self._children, self._states, self._live, self._earned)
        tails = self._tails()
        flat = np.zeros(k * max(tails, default=0) * a, F32)
        self._tail_states = np.zeros_like(self._states)
        self._tail_live = np.zeros_like(self._live)
        self._tail_earned = np.zeros_like(self._earned)
        self._tail_batches = {t: bind(flat[:k * t * a].reshape(k, t, a), self._tail_states,
                                      self._tail_live, self._tail_earned)
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
        sampled = self._sampled
        ops.beam_root(scorer.observation, self._beam_states, self._beam_live, self._beam_earned,
                      self._beam_ret)
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
            ops.beam_children(self._beam_states, self._beam_live, self._beam_earned, parents,
                              self._states, self._live, self._earned, self._children, nominal)
            if expand.returns.item(scorer.score(expand)) == _NEG_INF:
                return False  # every child diverged
            if sampled:  # the particles carry their earnings: scores are of the whole prefix
                np.copyto(self._child_ret, expand.returns)
                np.copyto(self._value, expand.returns)
            else:
                ops.beam_values(self._beam_ret, parents, expand.returns, self._child_ret,
                                self._value)
            tail = self._tail_at[d]
            if tail is not None:
                np.copyto(self._tail_states, self._states)
                np.copyto(self._tail_live, self._live)
                np.copyto(self._tail_earned, self._earned)
                if self._mean_tail:
                    ops.tile_rows(self._mean, d + 1, tail.actions)
                else:
                    self.rng.random(out=tail.actions, dtype=F32)
                    ops.affine_clip(tail.actions, self._low, self._span, low, high,
                                    _NO_SMOOTHING)
                scorer.score(tail)
                if sampled:
                    np.copyto(self._value, tail.returns)
                else:
                    ops.add_returns(self._value, tail.returns)
            ops.top_k(self._value, w, self._idx)
            if self._value.item(self._idx.item(0)) == _NEG_INF:
                return False
            ops.beam_select(self._idx, w, parents, d, self._children, self._states, self._live,
                            self._earned, self._child_ret, prefix, new_prefix,
                            self._beam_states, self._beam_live, self._beam_earned,
                            self._beam_ret)
            prefix, new_prefix = new_prefix, prefix
            parents = w
        np.copyto(self._solution, prefix[0])
        self._best_value = self._beam_ret.item(0)
        return True
