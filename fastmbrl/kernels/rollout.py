"""The fused rollout kernel: K candidate action sequences x H model steps, the task's reward and
termination, and the return of every candidate, in one `numba.njit(parallel=True)` call.

Data path
---------
``pack_model`` lays the dynamics MLP out once for the kernel (``DynamicsModel.packed()`` calls it
and keeps the result until the model's version changes): the input normalisation is folded into
the first layer, the delta de-normalisation into the last one (so the kernel computes
``next_obs = obs + MLP'(concat(obs, act))``), and each layer's weights are cut into column panels
one vector register wide (``isa.py``, ``dense.py``).
Candidates are processed in chunks of ``rows`` (a multiple of the spec's tile rows) per parallel
task; each chunk steps its rows through the horizon with
scratch arrays from a preallocated ``Workspace``, so nothing is allocated in the time loop.

Reward and termination functions
--------------------------------
Write them as ``@numba.njit`` functions over a batch of rows, usable from NumPy too::

    @numba.njit(cache=True, fastmath=FASTMATH)
    def reward(obs, act, next_obs, out):      # (N, O), (N, A), (N, O) float32; out (N,) float32
        for i in range(obs.shape[0]):
            out[i] = -(next_obs[i, 0] ** 2) - np.float32(0.1) * act[i, 0] ** 2

    @numba.njit(cache=True, fastmath=FASTMATH)
    def terminated(obs, act, next_obs, out):  # out (N,) np.bool_
        for i in range(obs.shape[0]):
            out[i] = abs(next_obs[i, 1]) > np.float32(0.2)

They must write every row of ``out`` and nothing else. The kernel calls them once per step and
chunk on its scratch arrays (including padding rows, whose results it ignores). A rollout earns the
reward of the transition on which it terminates and nothing after it. A candidate whose state or
return becomes inf/NaN scores -inf.

The kernel is specialised to the reward/termination pair (they are compile-time globals, which
keeps numba's on-disk cache usable); ``rollout_kernel`` builds and memoises one per pair. The
cache file's name carries a hash of the function's bytecode, the values its closure captured and
the globals it reads, helpers followed, so an edited constant or helper, or two rewards made by
one factory, each get their own compiled kernel.
"""
from __future__ import annotations

import hashlib
import marshal
import re
import types
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from .._validate import as_array, check_positive_int
from . import FASTMATH
from .dense import ACTIVATIONS, activate, dense_kernel, pack_panels, specialise
from .isa import Spec, get_spec
from .planner_ops import ts1_sources


#: trajectory sampling: each particle re-draws its member every step (ts1), keeps one member for
#: the whole horizon (tsinf), or every member propagates its mean, without sampling (expectation)
PROPAGATIONS = ("ts1", "tsinf", "expectation")


@dataclass(frozen=True)
class PackedModel:
    """A dynamics model (or a stack of `num_members` models) laid out for the rollout kernel."""

    weights: np.ndarray  # (B, n_w) float32: every layer's panels, layer after layer
    biases: np.ndarray  # (B, n_b) float32: padded biases
    layers: np.ndarray  # (L, 4) int64: fan_in, n_panels, weight offset, bias offset
    obs_dim: int
    act_dim: int
    activation: int  # code from dense.ACTIVATIONS
    version: int = 0  # the DynamicsModel's version it was packed from
    #: observation entries that are angles: the network sees their sine in place and their
    #: cosine after the observation (inputs: obs', cos(angles), act)
    angle_dims: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: the instruction-set spec the panels are laid out for (their width) and the kernel runs
    isa: Spec = field(default_factory=get_spec)
    #: (O,) float32: 1 where the network predicts a delta (next = obs + out), 0 where it
    #: predicts the next value itself (a learned reward column); default all 1
    carry: np.ndarray | None = None
    #: a probabilistic model's (B, 2, O) float32 log-variance bounds (upper, lower): the last
    #: layer's outputs O..2O are then its raw log-variances; None for a deterministic model
    logvar_bounds: np.ndarray | None = None
    #: (B, O) float32: the delta's std, by which a normalised sample's std is scaled
    noise_scale: np.ndarray | None = None
    #: trajectory sampling of a probabilistic model (see ``particle_rollout``)
    particles: int = 1
    propagation: str = "expectation"
    risk: float = 0.0
    #: known dynamics (a FunctionModel's numba step function) that the kernel calls in place of
    #: the network, whose arrays are then placeholders; None for a network
    dynamics: object = None

    def __post_init__(self):
        if self.carry is None:
            object.__setattr__(self, "carry", np.ones(self.obs_dim, np.float32))

    @property
    def probabilistic(self) -> bool:
        return self.logvar_bounds is not None

    @property
    def sampled(self) -> bool:
        """Whether planners roll it out by trajectory sampling (particles with noise)."""
        return self.probabilistic and self.propagation != "expectation"

    @property
    def num_members(self) -> int:
        return self.weights.shape[0]

    @property
    def width(self) -> int:
        """Widest padded hidden layer (at least one vector)."""
        lanes = self.isa.lanes
        return int(max([lanes] + [lanes * p for p in self.layers[:-1, 1]]))

    @property
    def out_width(self) -> int:
        return int(self.isa.lanes * self.layers[-1, 1])

    def flops_per_step(self) -> int:
        """Multiply-adds x 2 of one model step (unpadded sizes)."""
        fan_in = [int(f) for f in self.layers[:, 0]] + [self.obs_dim]
        return 2 * sum(a * b for a, b in zip(fan_in[:-1], fan_in[1:]))


def _stat(x, name, dim, members):
    arr = as_array(x, name, (None,) * np.ndim(x), dtype=np.float64)
    if arr.shape == (dim,):
        return np.broadcast_to(arr, (members, dim))
    if arr.shape == (members, dim):
        return arr
    raise ValueError(f"{name}: expected shape ({dim},) or ({members}, {dim}), got {arr.shape}")


def pack_model(weights, biases, activation, input_mean, input_scale, delta_mean, delta_std,
               version: int = 0, angle_dims=(), isa=None, absolute_dims=(), logvar_bounds=None,
               particles: int = 1, propagation: str = "expectation", risk: float = 0.0
               ) -> PackedModel:
    """Lay out an MLP delta model for the kernel.

    `weights`/`biases`: one member's lists (W[i] of shape (fan_in, fan_out), b[i] of (fan_out,)),
    or a list of such lists for an ensemble. The model maps concat(obs, act) of length O + A to
    O outputs: next_obs = obs + delta_mean + delta_std * net((concat(obs, act) - input_mean) * input_scale).
    Statistics are (D,) or one row per member, (B, D). Non-finite weights are accepted (the
    rollouts then score -inf). `angle_dims`: observation entries fed to the network as (sine in
    place, cosine appended): the network input is then concat(obs', cos(obs[angle_dims]), act)
    and the input statistics have that length. `isa`: the spec (or its name) to lay the
    panels out for; default the current one (``isa.current()``). `absolute_dims`: outputs that
    are the next value itself, not a delta (next_obs[d] = delta_mean + delta_std * net(...)).
    `logvar_bounds` ((2, O) or (B, 2, O): upper, lower) makes the model probabilistic: the
    network has 2 O outputs, the mean of the normalised delta then its raw log-variance
    (``models.mlp.GaussianHead``); `particles`, `propagation` and `risk` say how planners
    sample it.
    """
    spec = get_spec(isa)
    lanes = spec.lanes
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        code = ACTIVATIONS[activation.lower()]
    else:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError("weights: expected a non-empty list of arrays (or of per-member lists)")
    ensemble = isinstance(weights[0], (list, tuple))
    members_w = list(weights) if ensemble else [weights]
    members_b = list(biases) if ensemble else [biases]
    if len(members_b) != len(members_w):
        raise ValueError(f"biases: expected {len(members_w)} members, got {len(members_b)}")
    n_members = len(members_w)
    first = [np.shape(w) for w in members_w[0]]
    for m, (ws, bs) in enumerate(zip(members_w, members_b)):
        if len(ws) != len(bs) or len(ws) != len(first):
            raise ValueError(f"weights/biases of member {m}: expected {len(first)} layers each, "
                             f"got {len(ws)} weights and {len(bs)} biases")
        for i, w in enumerate(ws):
            if np.shape(w) != first[i]:
                raise ValueError(f"weights[{m}][{i}]: expected shape {first[i]}, got {np.shape(w)}")
    for i, shp in enumerate(first):
        if len(shp) != 2 or min(shp) < 1 or (i and shp[0] != first[i - 1][1]):
            raise ValueError(f"weights[{i}]: shape {shp} does not chain with the previous layer")
    obs_dim = first[-1][1]
    if logvar_bounds is not None:
        if obs_dim % 2:
            raise ValueError(f"weights: a probabilistic model has 2 O outputs, got {obs_dim}")
        obs_dim //= 2
        lvb = as_array(logvar_bounds, "logvar_bounds", (None,) * np.ndim(logvar_bounds),
                       np.float32)
        if lvb.shape == (2, obs_dim):
            lvb = np.broadcast_to(lvb, (n_members, 2, obs_dim))
        if lvb.shape != (n_members, 2, obs_dim):
            raise ValueError(f"logvar_bounds: expected shape (2, {obs_dim}) or ({n_members}, 2, "
                             f"{obs_dim}), got {lvb.shape}")
        lvb = np.ascontiguousarray(lvb)
    angles = np.asarray(angle_dims, np.int64).reshape(-1)
    if (np.unique(angles).size != angles.size
            or ((angles < 0) | (angles >= obs_dim)).any()):
        raise ValueError(f"angle_dims: expected distinct indices in [0, {obs_dim}), "
                         f"got {tuple(angle_dims)!r}")
    absolute = np.asarray(absolute_dims, np.int64).reshape(-1)
    if (np.unique(absolute).size != absolute.size
            or ((absolute < 0) | (absolute >= obs_dim)).any()):
        raise ValueError(f"absolute_dims: expected distinct indices in [0, {obs_dim}), "
                         f"got {tuple(absolute_dims)!r}")
    carry = np.ones(obs_dim, np.float32)
    carry[absolute] = 0
    n_in = obs_dim + angles.size
    act_dim = first[0][0] - n_in
    if act_dim < 1:
        raise ValueError(f"weights[0]: fan-in {first[0][0]} must exceed the observation inputs "
                         f"{n_in} (inputs are concat(obs, cos(angles), act))")
    in_mean = _stat(input_mean, "input_mean", n_in + act_dim, n_members)
    in_scale = _stat(input_scale, "input_scale", n_in + act_dim, n_members)
    d_mean = _stat(delta_mean, "delta_mean", obs_dim, n_members)
    d_std = _stat(delta_std, "delta_std", obs_dim, n_members)

    n_layers = len(first)
    layers = np.zeros((n_layers, 4), np.int64)
    w_size = b_size = 0
    for i, (fan_in, fan_out) in enumerate(first):
        panels = -(-fan_out // lanes)
        layers[i] = fan_in, panels, w_size, b_size
        w_size += panels * fan_in * lanes
        b_size += panels * lanes
    packed_w = np.zeros((n_members, w_size), np.float32)
    packed_b = np.zeros((n_members, b_size), np.float32)
    for m in range(n_members):
        for i in range(n_layers):
            w = as_array(members_w[m][i], f"weights[{i}]", first[i], np.float64, finite=False)
            b = as_array(members_b[m][i], f"biases[{i}]", (first[i][1],), np.float64, finite=False)
            if i == 0:  # (x - mean) * scale @ W  ==  x @ (scale * W) - (mean * scale) @ W
                b = b - (in_mean[m] * in_scale[m]) @ w
                w = in_scale[m][:, None] * w
            if i == n_layers - 1:  # delta_mean + delta_std * (h @ W + b); log-variances raw
                w, b = w.copy(), b.copy()
                w[:, :obs_dim] *= d_std[m]
                b[:obs_dim] = b[:obs_dim] * d_std[m] + d_mean[m]
            w_off, b_off = int(layers[i, 2]), int(layers[i, 3])
            flat_w, flat_b = pack_panels(w, b, lanes)
            packed_w[m, w_off: w_off + flat_w.size] = flat_w
            packed_b[m, b_off: b_off + flat_b.size] = flat_b
    extra = {}
    if logvar_bounds is not None:
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation: expected one of {', '.join(PROPAGATIONS)}, got "
                             f"{propagation!r}")
        extra = dict(logvar_bounds=lvb, noise_scale=np.ascontiguousarray(d_std, np.float32),
                     particles=check_positive_int(particles, "particles"),
                     propagation=str(propagation), risk=float(risk))
    return PackedModel(packed_w, packed_b, layers, obs_dim, act_dim, code, int(version),
                       angle_dims=angles.copy(), isa=spec, carry=carry, **extra)


def pack_dynamics(dynamics, obs_dim: int, act_dim: int, isa=None) -> PackedModel:
    """A PackedModel that steps with known dynamics ``dynamics(obs, act, next_obs)`` (a numba
    function over a batch of rows) instead of a network: one member, placeholder arrays."""
    _check_numba_function(dynamics, "dynamics")
    spec = get_spec(isa)
    lanes = spec.lanes
    return PackedModel(np.zeros((1, lanes), np.float32), np.zeros((1, lanes), np.float32),
                       np.array([[1, 1, 0, 0]], np.int64), check_positive_int(obs_dim, "obs_dim"),
                       check_positive_int(act_dim, "act_dim"), 0, isa=spec, dynamics=dynamics)


def chunk_rows(packed: PackedModel, rows=None) -> int:
    """`rows` checked against the model's spec (a multiple of its tile rows), or its default."""
    spec = packed.isa
    if rows is None:
        return spec.chunk_rows
    rows = check_positive_int(rows, "rows")
    if rows % spec.tile_rows:
        raise ValueError(f"rows must be a multiple of {spec.tile_rows} (the {spec.name} tile), "
                         f"got {rows}")
    return rows


class Chunks(NamedTuple):
    """The kernel's split of candidates into parallel chunks (int64 arrays, n chunks)."""

    chunk_start: np.ndarray  # (n + 1,) first return row of each chunk, then the total
    chunk_member: np.ndarray  # (n,) ensemble member of each chunk
    chunk_source: np.ndarray  # (n,) first candidate row of each chunk


def make_chunks(num_candidates: int, rows: int, members=None, every_member=None) -> Chunks:
    """Split candidates into chunks of at most `rows`, never mixing ensemble members.

    `members` (optional, (K,) ints, non-decreasing): the model member of each candidate; order
    candidates by member before calling. `every_member` (optional int B): score every candidate
    on each of members 0..B-1 instead; return m * K + k then holds candidate k under member m
    (the caller's returns array has B * K rows).
    """
    num_candidates = check_positive_int(num_candidates, "num_candidates")
    rows = check_positive_int(rows, "rows")
    if every_member is not None:
        if members is not None:
            raise ValueError("pass members or every_member, not both")
        b = check_positive_int(every_member, "every_member")
        starts, owners, sources = [], [], []
        for m in range(b):
            for s in range(0, num_candidates, rows):
                starts.append(m * num_candidates + s)
                owners.append(m)
                sources.append(s)
        return Chunks(np.array(starts + [b * num_candidates], np.int64),
                      np.array(owners, np.int64), np.array(sources, np.int64))
    if members is None:
        members = np.zeros(num_candidates, np.int64)
    members = np.asarray(members)
    if members.shape != (num_candidates,) or members.dtype.kind not in "iu":
        raise ValueError(f"members: expected ({num_candidates},) integers, got "
                         f"{members.shape} {members.dtype}")
    if num_candidates > 1 and (np.diff(members) < 0).any():
        raise ValueError("members: must be sorted (group candidates by ensemble member)")
    starts, owners = [], []
    bounds = np.flatnonzero(np.diff(members)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, num_candidates]):
        for s in range(int(lo), int(hi), rows):
            starts.append(s)
            owners.append(int(members[lo]))
    return Chunks(np.array(starts + [num_candidates], np.int64), np.array(owners, np.int64),
                  np.array(starts, np.int64))


class WorkspaceArrays(NamedTuple):
    """The kernel's scratch arrays, one (rows, ...) slab per chunk; named as its parameters."""

    x_ws: np.ndarray  # network input
    ha_ws: np.ndarray  # hidden ping
    hb_ws: np.ndarray  # hidden pong
    out_ws: np.ndarray  # network output (delta)
    obs_ws: np.ndarray  # obs
    nxt_ws: np.ndarray  # next obs
    act_ws: np.ndarray  # actions of this step
    rew_ws: np.ndarray  # rewards
    done_ws: np.ndarray  # terminated
    alive_ws: np.ndarray  # alive
    ret_ws: np.ndarray  # returns so far
    base_ws: np.ndarray  # first step's layer-0 share from obs0


class Workspace:
    """Scratch arrays of the kernel for `num_chunks` chunks of `rows` rows (allocated once)."""

    def __init__(self, packed: PackedModel, num_chunks: int, rows: int | None = None):
        rows = chunk_rows(packed, rows)
        n, o, a = check_positive_int(num_chunks, "num_chunks"), packed.obs_dim, packed.act_dim
        self.rows, self.num_chunks = rows, n
        n_ang = packed.angle_dims.shape[0]
        self.shape_key = (o, a, n_ang, packed.width, packed.out_width, packed.isa)
        f = np.float32
        self.arrays = WorkspaceArrays(
            x_ws=np.zeros((n, rows, o + n_ang + a), f),
            ha_ws=np.zeros((n, rows, packed.width), f),
            hb_ws=np.zeros((n, rows, packed.width), f),
            out_ws=np.zeros((n, rows, packed.out_width), f),
            obs_ws=np.zeros((n, rows, o), f),
            nxt_ws=np.zeros((n, rows, o), f),
            act_ws=np.zeros((n, rows, a), f),
            rew_ws=np.zeros((n, rows), f),
            done_ws=np.zeros((n, rows), np.bool_),
            alive_ws=np.zeros((n, rows), np.bool_),
            ret_ws=np.zeros((n, rows), f),
            base_ws=np.zeros((n, packed.width if packed.layers.shape[0] > 1
                              else packed.out_width), f),
        )

    def fits(self, packed: PackedModel, num_chunks: int) -> bool:
        return (num_chunks <= self.num_chunks
                and self.shape_key == (packed.obs_dim, packed.act_dim,
                                       packed.angle_dims.shape[0], packed.width,
                                       packed.out_width, packed.isa))


@njit(cache=True, fastmath=FASTMATH)
def never_terminated(obs, act, next_obs, out):
    """Termination function of tasks without terminal states."""
    out[:] = False


@njit(cache=True)
def _no_dynamics(obs, act, next_obs):
    """The kernel's placeholder for known dynamics when a network is the model (never called)."""


_NEG_INF = np.float32(-np.inf)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _features(obs, r, x, n_obs, angle_dims):
    """Network input features of row r of `obs` into x[r, :n_obs + len(angle_dims)]: the
    observation with each angle replaced by its sine, then the angles' cosines. Indexes rows
    instead of taking a row view, so the time loop creates no array per row."""
    for o in range(n_obs):
        x[r, o] = obs[r, o]
    for j in range(angle_dims.shape[0]):
        d = angle_dims[j]
        x[r, d] = np.sin(obs[r, d])
        x[r, n_obs + j] = np.cos(obs[r, d])


def _rollout(obs0, actions, weights, biases, layers, act_code, angle_dims, carry, chunk_start,
             chunk_member, chunk_source, x_ws, ha_ws, hb_ws, out_ws, obs_ws, nxt_ws, act_ws,
             rew_ws, done_ws, alive_ws, ret_ws, base_ws, returns, states, live):
    # Template: rollout_kernel() compiles a copy whose globals bind _reward, _terminated, the
    # spec's LANES and dense, and _KNOWN/_dynamics: with known dynamics (a FunctionModel) a
    # step is _dynamics(obs, act, nxt) and the network's arguments are placeholders.
    # Branching (tree search): with `states` (rows as `returns`, O) the rollout of return row j
    # starts from states[j] instead of obs0, and only if live[j]; states[j] and live[j] then
    # receive its end state and whether it is still running. Empty arrays: every row from obs0.
    n_obs = obs0.shape[0]
    n_feat = n_obs + angle_dims.shape[0]  # the network's observation inputs
    horizon = actions.shape[1]
    n_act = actions.shape[2]
    n_layers = layers.shape[0]
    rows = x_ws.shape[1]
    in_ld = x_ws.shape[2]
    fan0 = layers[0, 0]
    panels0 = layers[0, 1]
    w_off0 = layers[0, 2]
    b_off0 = layers[0, 3]
    branched = states.shape[0] > 0
    for c in prange(chunk_member.shape[0]):
        k0 = chunk_start[c]
        n = chunk_start[c + 1] - k0
        a0 = chunk_source[c]
        w = weights[chunk_member[c]]
        b = biases[chunk_member[c]]
        x, ha, hb, out = x_ws[c], ha_ws[c], hb_ws[c], out_ws[c]
        obs, nxt, act = obs_ws[c], nxt_ws[c], act_ws[c]
        rew, done, alive, ret, base = rew_ws[c], done_ws[c], alive_ws[c], ret_ws[c], base_ws[c]
        first = out if n_layers == 1 else ha
        for r in range(rows):
            own = branched and r < n
            for o in range(n_obs):
                obs[r, o] = states[k0 + r, o] if own else obs0[o]
            for a in range(n_act):
                act[r, a] = 0
                x[r, n_feat + a] = 0
            alive[r] = r < n and (live[k0 + r] if branched else True)
            ret[r] = 0
        # The first step starts from obs0 for every row: its share of layer 0 is computed once
        # (from obs0's features, put in row 0 of x, which step 0 reads only the actions of;
        # every row of obs holds obs0 now).
        if not _KNOWN and not branched:
            _features(obs, 0, x, n_obs, angle_dims)
            for j in range(LANES * panels0):
                v, lane = j // LANES, j % LANES
                s = b[b_off0 + j]
                for i in range(n_feat):
                    s += x[0, i] * w[w_off0 + (v * fan0 + i) * LANES + lane]
                base[j] = s
        for t in range(horizon):
            for r in range(n):
                for a in range(n_act):
                    u = actions[a0 + r, t, a]
                    act[r, a] = u
                    x[r, n_feat + a] = u
            if _KNOWN:
                _dynamics(obs, act, nxt)
            else:
                if t == 0 and not branched:
                    dense(first, first.shape[1], x, n_feat, in_ld, rows, w,
                          w_off0 + n_feat * LANES, fan0 * LANES, n_act, base, 0, panels0)
                else:
                    for r in range(rows):
                        _features(obs, r, x, n_obs, angle_dims)
                    dense(first, first.shape[1], x, 0, in_ld, rows, w, w_off0, fan0 * LANES, fan0,
                          b, b_off0, panels0)
                src = first
                for layer in range(1, n_layers):
                    activate(src, rows, LANES * layers[layer - 1, 1], act_code)
                    dst = out if layer == n_layers - 1 else (hb if layer % 2 == 1 else ha)
                    dense(dst, dst.shape[1], src, 0, src.shape[1], rows, w, layers[layer, 2],
                          layers[layer, 0] * LANES, layers[layer, 0], b, layers[layer, 3],
                          layers[layer, 1])
                    src = dst
                for r in range(rows):
                    for o in range(n_obs):
                        nxt[r, o] = carry[o] * obs[r, o] + out[r, o]
            _reward(obs, act, nxt, rew)
            _terminated(obs, act, nxt, done)
            for r in range(n):
                if alive[r]:
                    s = np.float32(0)
                    for o in range(n_obs):
                        s += nxt[r, o]
                    if not np.isfinite(s):
                        alive[r] = False
                        ret[r] = _NEG_INF
                    else:
                        ret[r] += rew[r]
                        if done[r]:
                            alive[r] = False
            obs, nxt = nxt, obs
        for r in range(n):
            v = ret[r]
            returns[k0 + r] = v if np.isfinite(v) else _NEG_INF
            if branched:
                for o in range(n_obs):
                    states[k0 + r, o] = obs[r, o]
                live[k0 + r] = alive[r]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _softplus(x):
    return max(x, np.float32(0)) + np.log1p(np.exp(-abs(x)))


def _particle_rollout(obs0, actions, weights, biases, layers, act_code, angle_dims, carry,
                      logvar_bounds, noise_scale, per_member, noise, sources, chunk_start,
                      chunk_member, chunk_source, x_ws, ha_ws, hb_ws, out_ws, obs_ws, nxt_ws,
                      act_ws, rew_ws, done_ws, state_a, state_b, ret_a, ret_b, alive_a, alive_b,
                      returns, states, live):
    """Trajectory sampling (PETS): every row is a particle in a slot; the slots of member m
    are m * K Pm + k Pm + j for candidate k and j < Pm = `per_member`, one chunk one member.
    A step moves slot s's particle in from slot sources[s, t] (ts1: a permutation within
    the candidate; `sources` empty: stay, tsinf), predicts mean and bounded log-variance, and
    samples next = carry obs + mean + noise_scale exp(lv / 2) noise[s, t]. The time loop is
    outside the parallel loop so that particles can change member between steps; the states
    live in the ping-pong arrays state_*, ret_*, alive_*. returns[s] is slot s's return.
    Branching (tree search): with `states` (slots, O) slot s starts from states[s], alive if
    live[s], with returns[s] already earned (so that a particle's return follows it when ts1
    moves it); states, live and returns receive the slots' end states, flags and returns.
    Empty `states`: every slot from obs0 with nothing earned.
    Template: rollout_kernel(..., particles=True) binds _reward, _terminated, LANES and dense."""
    n_obs = obs0.shape[0]
    n_feat = n_obs + angle_dims.shape[0]
    horizon = actions.shape[1]
    n_act = actions.shape[2]
    n_layers = layers.shape[0]
    n_slots = returns.shape[0]
    rows = x_ws.shape[1]
    in_ld = x_ws.shape[2]
    fan0 = layers[0, 0]
    panels0 = layers[0, 1]
    w_off0 = layers[0, 2]
    b_off0 = layers[0, 3]
    moved = sources.shape[0] > 0
    branched = states.shape[0] > 0
    half = np.float32(0.5)
    for s in range(n_slots):
        for o in range(n_obs):
            state_a[s, o] = states[s, o] if branched else obs0[o]
        ret_a[s] = returns[s] if branched else 0
        alive_a[s] = live[s] if branched else True
    s_in, s_out, r_in, r_out, a_in, a_out = state_a, state_b, ret_a, ret_b, alive_a, alive_b
    for t in range(horizon):
        for c in prange(chunk_member.shape[0]):
            k0 = chunk_start[c]
            n = chunk_start[c + 1] - k0
            q0 = chunk_source[c]  # slot offset within the member's block
            mem = chunk_member[c]
            w = weights[mem]
            b = biases[mem]
            x, ha, hb, out = x_ws[c], ha_ws[c], hb_ws[c], out_ws[c]
            obs, nxt, act = obs_ws[c], nxt_ws[c], act_ws[c]
            rew, done = rew_ws[c], done_ws[c]
            first = out if n_layers == 1 else ha
            for r in range(rows):
                src = k0 + r
                if r < n and moved:
                    src = sources[k0 + r, t]
                for o in range(n_obs):
                    obs[r, o] = s_in[src, o] if r < n else obs0[o]
                cand = (q0 + r) // per_member if r < n else 0
                for a in range(n_act):
                    u = actions[cand, t, a]
                    act[r, a] = u
                    x[r, n_feat + a] = u
                _features(obs, r, x, n_obs, angle_dims)
            dense(first, first.shape[1], x, 0, in_ld, rows, w, w_off0, fan0 * LANES, fan0,
                  b, b_off0, panels0)
            src_h = first
            for layer in range(1, n_layers):
                activate(src_h, rows, LANES * layers[layer - 1, 1], act_code)
                dst = out if layer == n_layers - 1 else (hb if layer % 2 == 1 else ha)
                dense(dst, dst.shape[1], src_h, 0, src_h.shape[1], rows, w, layers[layer, 2],
                      layers[layer, 0] * LANES, layers[layer, 0], b, layers[layer, 3],
                      layers[layer, 1])
                src_h = dst
            for r in range(rows):
                for o in range(n_obs):
                    v = carry[o] * obs[r, o] + out[r, o]
                    if r < n:
                        hi = logvar_bounds[mem, 0, o]
                        lo = logvar_bounds[mem, 1, o]
                        lv = hi - _softplus(hi - out[r, n_obs + o])
                        lv = lo + _softplus(lv - lo)
                        v += noise_scale[mem, o] * np.exp(half * lv) * noise[k0 + r, t, o]
                    nxt[r, o] = v
            _reward(obs, act, nxt, rew)
            _terminated(obs, act, nxt, done)
            for r in range(n):
                s = k0 + r
                src = sources[s, t] if moved else s
                alive = a_in[src]
                ret = r_in[src]
                if alive:
                    tot = np.float32(0)
                    for o in range(n_obs):
                        tot += nxt[r, o]
                    if not np.isfinite(tot):
                        alive = False
                        ret = _NEG_INF
                    else:
                        ret += rew[r]
                        if done[r]:
                            alive = False
                for o in range(n_obs):
                    s_out[s, o] = nxt[r, o]
                r_out[s] = ret
                a_out[s] = alive
        s_in, s_out = s_out, s_in
        r_in, r_out = r_out, r_in
        a_in, a_out = a_out, a_in
    for s in range(n_slots):
        v = r_in[s]
        returns[s] = v if np.isfinite(v) else _NEG_INF
        if branched:
            for o in range(n_obs):
                states[s, o] = s_in[s, o]
            live[s] = a_in[s]


_KERNELS: dict = {}


def _fingerprint(py, h, seen: set) -> None:
    """Feed into `h` what a compiled copy of Python function `py` depends on: its bytecode, the
    values its closure captured and the globals it reads, helpers (numba functions) followed."""
    if id(py) in seen:
        return
    seen.add(id(py))
    h.update(marshal.dumps(py.__code__))
    names: set = set()
    codes = [py.__code__]
    while codes:  # the names of nested code objects too (comprehensions, inner functions)
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, type(code)))
    values = [py.__globals__[n] for n in sorted(names) if n in py.__globals__]
    values += [cell.cell_contents for cell in (py.__closure__ or ())]
    for value in values:
        if isinstance(value, numba.core.registry.CPUDispatcher):
            _fingerprint(value.py_func, h, seen)
        elif isinstance(value, types.FunctionType):
            _fingerprint(value, h, seen)
        elif isinstance(value, np.ndarray):
            h.update(f"{value.dtype}{value.shape}".encode() + value.tobytes())
        elif isinstance(value, (int, float, complex, str, bytes, bool, np.generic, type(None))):
            h.update(repr(value).encode())
        else:  # modules, types: their name (a repr could hold a memory address)
            h.update(getattr(value, "__name__", type(value).__qualname__).encode())


def _tag(fn) -> str:
    """File-name-safe identity of a numba function: module, name and a hash of everything its
    compiled code depends on (so two closures of one factory, or an edited constant or helper,
    never share a cache file)."""
    py = fn.py_func
    h = hashlib.sha1()
    _fingerprint(py, h, set())
    return re.sub(r"\W", "_", f"{py.__module__}_{py.__qualname__}") + "_" + h.hexdigest()[:10]


def _check_numba_function(fn, name):
    if not isinstance(fn, numba.core.registry.CPUDispatcher):
        args = "obs, act, next_obs" + ("" if name == "dynamics" else ", out")
        raise TypeError(f"{name}: expected a numba.njit function fn({args}), "
                        f"got {type(fn).__name__}")


def rollout_kernel(reward, terminated=None, isa=None, dynamics=None, particles: bool = False):
    """The compiled kernel specialised to (reward, terminated), an instruction-set spec (default:
    the current one) and, for known dynamics, the step function ``dynamics(obs, act, next_obs)``
    that replaces the network; cached in memory and on disk. `particles`: the trajectory
    sampling kernel of a probabilistic network (`_particle_rollout`) instead."""
    _check_numba_function(reward, "reward")
    if terminated is None:
        terminated = never_terminated
    _check_numba_function(terminated, "terminated")
    if dynamics is not None:
        _check_numba_function(dynamics, "dynamics")
    spec = get_spec(isa)
    if particles and dynamics is not None:
        raise ValueError("particles: known dynamics are not sampled")
    key = (reward, terminated, spec.key, dynamics, bool(particles))
    kernel = _KERNELS.get(key)
    if kernel is None:
        # one cache file per reward/termination pair and spec
        known = dynamics is not None
        template = _particle_rollout if particles else _rollout
        name = f"{template.__name__}__{_tag(reward)}__{_tag(terminated)}"
        if known:
            name += f"__{_tag(dynamics)}"
        kernel = specialise(template, spec, name, parallel=True, _reward=reward,
                            _terminated=terminated, dense=dense_kernel(spec), _KNOWN=known,
                            _dynamics=dynamics if known else _no_dynamics)
        _KERNELS[key] = kernel
    return kernel


class KernelArgs(NamedTuple):
    """The kernel's arguments, named as `_rollout`'s parameters. Build them once with
    `kernel_args` and keep ``tuple(args)`` for the calls: ``kernel(*plain_tuple)`` allocates
    nothing, while unpacking a tuple subclass copies it on every call."""

    obs0: np.ndarray  # (O,) float32 start state
    actions: np.ndarray  # (K, H, A) float32 candidates
    weights: np.ndarray  # PackedModel.weights
    biases: np.ndarray
    layers: np.ndarray
    act_code: int
    angle_dims: np.ndarray
    carry: np.ndarray
    chunk_start: np.ndarray  # Chunks
    chunk_member: np.ndarray
    chunk_source: np.ndarray
    x_ws: np.ndarray  # WorkspaceArrays
    ha_ws: np.ndarray
    hb_ws: np.ndarray
    out_ws: np.ndarray
    obs_ws: np.ndarray
    nxt_ws: np.ndarray
    act_ws: np.ndarray
    rew_ws: np.ndarray
    done_ws: np.ndarray
    alive_ws: np.ndarray
    ret_ws: np.ndarray
    base_ws: np.ndarray
    returns: np.ndarray  # (K,) float32 output, or (B K,) for every member
    states: np.ndarray  # (rows of returns, O) float32 start/end states, or (0, O): from obs0
    live: np.ndarray  # (rows of returns,) bool, in and out with states, or (0,)

    def with_model(self, packed: PackedModel) -> "KernelArgs":
        """The same call on another packing of a model of the same shape."""
        return self._replace(**_model_args(packed))


def _model_args(packed: PackedModel) -> dict:
    return dict(weights=packed.weights, biases=packed.biases, layers=packed.layers,
                act_code=packed.activation, angle_dims=packed.angle_dims, carry=packed.carry)


def kernel_args(packed: PackedModel, obs0, actions, chunks: Chunks, workspace: Workspace,
                returns, states=None, live=None) -> KernelArgs:
    """The kernel's arguments (no checks); `states`/`live` for rows that branch from their own
    start states (see `_rollout`), else every row starts from obs0."""
    if states is None:
        states = np.zeros((0, packed.obs_dim), np.float32)
        live = np.zeros(0, np.bool_)
    return KernelArgs(obs0=obs0, actions=actions, **_model_args(packed), **chunks._asdict(),
                      **workspace.arrays._asdict(), returns=returns, states=states, live=live)


def rollout(packed: PackedModel, obs, actions, reward, terminated=None, *, members=None,
            every_member: bool = False, rows: int | None = None,
            workspace: Workspace | None = None, out=None, states=None, live=None
            ) -> np.ndarray:
    """Returns (K,) of K action sequences `actions` (K, H, A) rolled out from `obs` (O,).

    `members` (K,) optional sorted ensemble member per candidate (default: member 0).
    `every_member`: roll every candidate out under each of the B members; returns (B, K).
    `rows` per parallel chunk: a multiple of the spec's tile rows (default its chunk rows).
    `states` (optional, float32 C-contiguous, the returns' shape + (O,)): each rollout starts
    from its own state instead of `obs` and the array receives the end states (in place);
    `live` (optional, bool, the returns' shape; default all True with `states`): rollouts that
    start terminated earn nothing, and it receives whether each is still running.
    The kernel is the one of the model's spec (`packed.isa`).
    """
    if not isinstance(packed, PackedModel):
        raise TypeError(f"packed: expected a PackedModel, got {type(packed).__name__}")
    obs = as_array(obs, "obs", (packed.obs_dim,))
    actions = np.ascontiguousarray(as_array(actions, "actions", (None, None, packed.act_dim)))
    k = actions.shape[0]
    if k == 0 or actions.shape[1] == 0:
        raise ValueError(f"actions: expected at least one candidate and one step, got {actions.shape}")
    if members is not None and np.max(members) >= packed.num_members:
        raise ValueError(f"members: model has {packed.num_members} members")
    rows = chunk_rows(packed, rows)
    shape = (packed.num_members, k) if every_member else (k,)
    chunks = make_chunks(k, rows, members, packed.num_members if every_member else None)
    n_chunks = chunks.chunk_member.shape[0]
    if workspace is None:
        workspace = Workspace(packed, n_chunks, rows)
    elif workspace.rows != rows or not workspace.fits(packed, n_chunks):
        raise ValueError("workspace: does not fit this model, number of candidates or rows")
    if out is None:
        out = np.empty(shape, np.float32)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == shape
              and out.flags.c_contiguous):
        raise ValueError(f"out: expected a contiguous float32 array of shape {shape}")
    flat_states = flat_live = None
    if states is not None:
        if not (isinstance(states, np.ndarray) and states.dtype == np.float32
                and states.shape == shape + (packed.obs_dim,) and states.flags.c_contiguous
                and states.flags.writeable):
            raise ValueError(f"states: expected a writeable C-contiguous float32 array of shape "
                             f"{shape + (packed.obs_dim,)}")
        if live is None:
            live = np.ones(shape, np.bool_)
        elif not (isinstance(live, np.ndarray) and live.dtype == np.bool_
                  and live.shape == shape and live.flags.c_contiguous and live.flags.writeable):
            raise ValueError(f"live: expected a writeable C-contiguous bool array of shape {shape}")
        flat_states, flat_live = states.reshape(-1, packed.obs_dim), live.reshape(-1)
    elif live is not None:
        raise ValueError("live: only with states")
    kernel = rollout_kernel(reward, terminated, packed.isa, packed.dynamics)
    try:
        kernel(*kernel_args(packed, obs, actions, chunks, workspace, out.reshape(-1),
                            flat_states, flat_live))
    except SystemError as exc:
        raise user_error(exc, reward, terminated) from None
    return out


def user_error(exc: SystemError, reward, terminated=None) -> BaseException:
    """The exception a reward or termination function raised inside a kernel, with a note
    naming them: numba's parallel kernel returns with it set, which Python reports as a
    SystemError whose cause it is (returned unchanged when there is none)."""
    cause = exc.__cause__ or exc.__context__
    if cause is None or isinstance(cause, SystemError):
        return exc
    names = [f"reward function {_qualname(reward)}"]
    if terminated is not None and terminated is not never_terminated:
        names.append(f"termination function {_qualname(terminated)}")
    if hasattr(cause, "add_note"):  # Python 3.11+
        cause.add_note(f"raised by the {' or the '.join(names)} while the planner scored "
                       "candidate action sequences")
    return cause


def _qualname(fn) -> str:
    py = getattr(fn, "py_func", fn)
    return f"{getattr(py, '__module__', '?')}.{getattr(py, '__qualname__', repr(fn))}"


# --- trajectory sampling ----------------------------------------------------------------------
def particles_per_member(packed: PackedModel) -> int:
    """Pm: each member carries Pm of a candidate's P particles (P must be a multiple of B)."""
    p, b = packed.particles, packed.num_members
    if p % b:
        raise ValueError(f"particles: {p} particles cannot be shared evenly by the model's {b} "
                         f"elite members; use a multiple of {b}")
    return p // b


def slot_of(num_candidates: int, per_member: int, k, p):
    """The slot (row of the particle kernel) of particle p of candidate k: particle p belongs
    to member p // Pm; a member's slots are contiguous, candidate after candidate."""
    return (p // per_member) * num_candidates * per_member + k * per_member + p % per_member


class ParticleWorkspace:
    """The particle kernel's arrays for up to `num_candidates` candidates of `horizon` steps
    (allocated once): the chunks' scratch (a Workspace), the particles' states, returns and
    flags (ping-pong), the sampling noise (slots, H, O), for ts1 the sources (slots, H) and the
    uniforms (K, H, P) they are drawn from, and each slot's return."""

    def __init__(self, packed: PackedModel, num_candidates: int, horizon: int,
                 rows: int | None = None):
        rows = chunk_rows(packed, rows)
        k, h = check_positive_int(num_candidates, "num_candidates"), horizon
        self.per_member = pm = particles_per_member(packed)
        e, o = packed.num_members, packed.obs_dim
        n = k * packed.particles
        self.num_candidates, self.horizon, self.rows = k, h, rows
        self.chunks = Workspace(packed, e * -(-k * pm // rows), rows)
        f = np.float32
        self.state_a, self.state_b = np.zeros((n, o), f), np.zeros((n, o), f)
        self.ret_a, self.ret_b = np.zeros(n, f), np.zeros(n, f)
        self.alive_a, self.alive_b = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        self.noise = np.zeros((n, h, o), f)
        ts1 = packed.propagation == "ts1"
        self.sources = np.zeros((n, h) if ts1 else (0, 0), np.int64)
        self.uniforms = np.zeros((k, h, packed.particles) if ts1 else (0, 0, 0), f)
        self.perm = np.zeros(packed.particles, np.int64)
        self.slot_returns = np.zeros(n, f)


def particle_workspace_bytes(packed: PackedModel, num_candidates: int, horizon: int,
                             rows: int) -> int:
    """About what a ParticleWorkspace of these sizes allocates."""
    n = num_candidates * packed.particles
    o = packed.obs_dim
    ts1 = packed.propagation == "ts1"
    return 4 * n * (2 * o + 3 + horizon * o) + (12 * n * horizon if ts1 else 0)


class ParticleArgs(NamedTuple):
    """The particle kernel's arguments, named as `_particle_rollout`'s parameters."""

    obs0: np.ndarray
    actions: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    layers: np.ndarray
    act_code: int
    angle_dims: np.ndarray
    carry: np.ndarray
    logvar_bounds: np.ndarray
    noise_scale: np.ndarray
    per_member: int
    noise: np.ndarray
    sources: np.ndarray
    chunk_start: np.ndarray
    chunk_member: np.ndarray
    chunk_source: np.ndarray
    x_ws: np.ndarray
    ha_ws: np.ndarray
    hb_ws: np.ndarray
    out_ws: np.ndarray
    obs_ws: np.ndarray
    nxt_ws: np.ndarray
    act_ws: np.ndarray
    rew_ws: np.ndarray
    done_ws: np.ndarray
    state_a: np.ndarray
    state_b: np.ndarray
    ret_a: np.ndarray
    ret_b: np.ndarray
    alive_a: np.ndarray
    alive_b: np.ndarray
    returns: np.ndarray  # (slots,) float32 output (in and out when branching)
    states: np.ndarray  # (slots, O) float32 start/end states, or (0, O): from obs0
    live: np.ndarray  # (slots,) bool, in and out with states, or (0,)

    def with_model(self, packed: PackedModel) -> "ParticleArgs":
        return self._replace(**_model_args(packed), logvar_bounds=packed.logvar_bounds,
                             noise_scale=packed.noise_scale)


def particle_args(packed: PackedModel, obs0, actions, pws: ParticleWorkspace, states=None,
                  live=None, returns=None, draws: ParticleDraws | None = None) -> ParticleArgs:
    """The particle kernel's arguments for the candidates `actions` (k, t, A), k and t at most
    the workspace's: views of its arrays (no checks). `states` (k P, O), `live` (k P,) and
    `returns` (k P,) in slot order: slots that branch from their own states (see
    `_particle_rollout`), else every slot starts from obs0 and returns are the workspace's.
    `draws`: the batch's `particle_draws` (made here if not given)."""
    k, t = actions.shape[:2]
    pm, n, o = pws.per_member, k * packed.particles, packed.obs_dim
    chunks = make_chunks(k * pm, pws.rows, every_member=packed.num_members)
    ws = pws.chunks.arrays
    if draws is None:
        draws = particle_draws(pws, k, t)
    if states is None:
        states, live = np.zeros((0, o), np.float32), np.zeros(0, np.bool_)
    elif live is None or returns is None:  # a branch's slots start from all three
        raise ValueError("particle_args: states need live and returns")
    return ParticleArgs(
        obs0=obs0, actions=actions, **_model_args(packed), logvar_bounds=packed.logvar_bounds,
        noise_scale=packed.noise_scale, per_member=pm, noise=draws.noise,
        sources=draws.sources, chunk_start=chunks.chunk_start,
        chunk_member=chunks.chunk_member, chunk_source=chunks.chunk_source, x_ws=ws.x_ws,
        ha_ws=ws.ha_ws, hb_ws=ws.hb_ws, out_ws=ws.out_ws, obs_ws=ws.obs_ws, nxt_ws=ws.nxt_ws,
        act_ws=ws.act_ws, rew_ws=ws.rew_ws, done_ws=ws.done_ws, state_a=pws.state_a[:n],
        state_b=pws.state_b[:n], ret_a=pws.ret_a[:n], ret_b=pws.ret_b[:n],
        alive_a=pws.alive_a[:n], alive_b=pws.alive_b[:n],
        returns=pws.slot_returns[:n] if returns is None else returns, states=states, live=live)


class ParticleDraws(NamedTuple):
    """What `draw_particles` fills for k candidates of t steps: views of a workspace."""

    noise: np.ndarray  # (k P, t, O) float32
    sources: np.ndarray  # ts1: (k P, t) int64; else (0, 0)
    uniforms: np.ndarray  # ts1: (k, t, P) float32; else (0, 0, 0)
    perm: np.ndarray  # (P,) int64 scratch
    per_member: int


def particle_draws(pws: ParticleWorkspace, k: int, steps: int) -> ParticleDraws:
    """The draws of k candidates of `steps` steps (at most the workspace's), laid out
    contiguously at the start of its buffers (a batch of fewer steps draws only those)."""
    p = pws.perm.shape[0]
    n, o = k * p, pws.noise.shape[2]
    noise = pws.noise.reshape(-1)[:n * steps * o].reshape(n, steps, o)
    if pws.sources.shape[0]:
        sources = pws.sources.reshape(-1)[:n * steps].reshape(n, steps)
        uniforms = pws.uniforms.reshape(-1)[:k * steps * p].reshape(k, steps, p)
    else:
        sources, uniforms = pws.sources, pws.uniforms
    return ParticleDraws(noise, sources, uniforms, pws.perm, pws.per_member)


def draw_particles(rng: np.random.Generator, draws: ParticleDraws) -> None:
    """Fill `draws` from `rng`, in place: the noise, then the uniforms of the ts1
    permutations and the sources they give."""
    rng.standard_normal(out=draws.noise, dtype=np.float32)
    if draws.sources.shape[0]:
        rng.random(out=draws.uniforms, dtype=np.float32)
        ts1_sources(draws.uniforms, draws.per_member, draws.sources, draws.perm)


def particle_rollout(packed: PackedModel, obs, actions, reward, terminated=None, *,
                     seed: int = 0, rows: int | None = None, noise=None, sources=None,
                     states=None, live=None, returns=None) -> np.ndarray:
    """Returns (K, P): the return of every particle p of every candidate (PETS trajectory
    sampling of a probabilistic `packed` model, its particles and propagation). `noise`
    (K P, H, O) and, for ts1, `sources` (K P, H) in slot order (`slot_of`) replace what `seed`
    would draw. `states` (optional, K P x O float32 in slot order, C-contiguous, writeable):
    each slot starts from its own state, alive where `live` (K P,) bool (default all), having
    earned `returns` (K P,) float32 (default 0); the three receive the slots' end states, flags
    and returns in place. For tests and one-off use: planners keep their arrays (Scorer)."""
    if not (isinstance(packed, PackedModel) and packed.sampled):
        raise ValueError("packed: expected a probabilistic PackedModel with ts1 or tsinf "
                         "propagation")
    obs = as_array(obs, "obs", (packed.obs_dim,))
    actions = np.ascontiguousarray(as_array(actions, "actions", (None, None, packed.act_dim)))
    k, h = actions.shape[:2]
    n, o = k * packed.particles, packed.obs_dim
    pws = ParticleWorkspace(packed, k, h, rows)
    draws = particle_draws(pws, k, h)
    draw_particles(np.random.default_rng(seed), draws)
    if noise is not None:
        draws.noise[...] = as_array(noise, "noise", (n, h, o))
    if sources is not None and draws.sources.shape[0]:
        draws.sources[...] = as_array(sources, "sources", (n, h), np.int64)
    if states is not None:
        for name, arr, dtype, shape in (("states", states, np.float32, (n, o)),
                                        ("live", live, np.bool_, (n,)),
                                        ("returns", returns, np.float32, (n,))):
            if arr is not None and not (
                    isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.shape == shape
                    and arr.flags.c_contiguous and arr.flags.writeable):
                raise ValueError(f"{name}: expected a writeable C-contiguous "
                                 f"{np.dtype(dtype)} array of shape {shape}")
        live = np.ones(n, np.bool_) if live is None else live
        returns = np.zeros(n, np.float32) if returns is None else returns
    elif live is not None or returns is not None:
        raise ValueError("live, returns: only with states")
    args = particle_args(packed, obs, actions, pws, states, live, returns)
    kernel = rollout_kernel(reward, terminated, packed.isa, particles=True)
    try:
        kernel(*args)
    except SystemError as exc:
        raise user_error(exc, reward, terminated) from None
    kk, pp = np.meshgrid(np.arange(k), np.arange(packed.particles), indexing="ij")
    return args.returns[slot_of(k, pws.per_member, kk, pp)]
