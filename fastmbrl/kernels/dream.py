"""The dream: a population of World Models controllers rolled out inside M, the MDN-RNN, in one
parallel kernel over every (candidate, rollout) pair, as the fused rollout kernel does for the
planners' candidates.

Per step of a rollout: C acts on [z_t, h_t] (u = tanh(W [z, h] + b), a = low + (high - low)
(u + 1) / 2, or u clipped to [low, high] where `clip` is set; a candidate's parameters flat as
[W (A, Z + H) row-major, b (A,)]); M's LSTM takes [z_t, a_t]
and (h_t, c_t) to (h_{t+1}, c_{t+1}); its heads give the reward r_t, the done probability and,
per latent dimension, the mixture z_{t+1} is drawn from at temperature tau (component from
softmax(logits / tau) by the uniform `pick`, then mu + exp(log_std) sqrt(tau) `noise`; tau = 0:
the mean of the most probable component). A rollout earns r_t up to and including the step whose
done probability exceeds `done_threshold`. The uniforms and normals are drawn before the call
(the same returns for a seed whatever the thread count). Scratch is allocated per rollout, never
per step. The arithmetic follows the parameters' dtype (float32, or float64 for the checks).

`dream_returns` runs each rollout on its own, element by element (any dtype; the checks use
float64). `dream_kernel(spec)` is the float32 one: chunks of rollouts step together so that M's
products run on the register tile of ``dense.py`` (at CarRacing's sizes 3.7x the rollouts per
second of dream_returns on one thread, quiet znver4: 82 k against 22 k steps/s).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import FASTMATH
from .dense import _tanh as _tanh32
from .dense import dense_kernel, specialise
from .isa import get_spec


_KW = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")


@njit(**_KW)
def _control(theta, z, h, low, high, clip, act):
    """C's action for one row into act (A,): theta [W (A, Z + H) row-major, b (A,)]."""
    zd, hid, act_dim = z.shape[0], h.shape[0], act.shape[0]
    one = act.dtype.type(1)
    half = act.dtype.type(0.5)
    for i in range(act_dim):
        s = theta[act_dim * (zd + hid) + i]
        row = i * (zd + hid)
        for j in range(zd):
            s += theta[row + j] * z[j]
        for j in range(hid):
            s += theta[row + zd + j] * h[j]
        u = np.tanh(s)
        if clip[i]:
            act[i] = min(max(u, low[i]), high[i])
        else:
            act[i] = low[i] + (high[i] - low[i]) * (u + one) * half


@njit(**_KW)
def _lstm_cell(z, act, h, c, w, b, gates):
    """M's LSTM on [z, act] carrying (h, c) in place; w (Z + A + H, 4H) row-major, b (4H,),
    gates (4H,) scratch."""
    zd, act_dim, hid = z.shape[0], act.shape[0], h.shape[0]
    half = gates.dtype.type(0.5)
    for g in range(4 * hid):
        gates[g] = b[g]
    for j in range(zd):  # row by row: w is row-major
        v = z[j]
        for g in range(4 * hid):
            gates[g] += v * w[j, g]
    for j in range(act_dim):
        v = act[j]
        for g in range(4 * hid):
            gates[g] += v * w[zd + j, g]
    for j in range(hid):
        v = h[j]
        for g in range(4 * hid):
            gates[g] += v * w[zd + act_dim + j, g]
    for j in range(hid):  # the cell: gates i, f, g, o
        ig = half + half * np.tanh(half * gates[j])
        fg = half + half * np.tanh(half * gates[hid + j])
        gg = np.tanh(gates[2 * hid + j])
        og = half + half * np.tanh(half * gates[3 * hid + j])
        c[j] = fg * c[j] + ig * gg
        h[j] = og * np.tanh(c[j])


@njit(**_KW)
def agent_step(theta, z, low, high, clip, w, b, h, c, gates, act):
    """One acting step on a frame's latent z (Z,), in place: act (A,) <- C(z, h), then M's LSTM
    takes (h, c) (H,) on [z, act]. Allocates nothing (the embedded agent's step)."""
    _control(theta, z, h, low, high, clip, act)
    _lstm_cell(z, act, h, c, w, b, gates)


@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", parallel=True)
def dream_returns(params, z0, w, b, wo, bo, low, high, clip, n_mix, pick, noise, temperature,
                  done_threshold, returns, steps):
    """returns[p, r] and steps[p, r] (steps run) of candidate p's rollout r from z0[r] with zero
    (h, c). params (P, A (Z + H) + A); z0 (R, Z); M's w (Z + A + H, 4H), b (4H,), wo (H, 3 Z K +
    2), bo; low, high (A,), clip (A,) uint8; pick, noise (P, R, T, Z)."""
    n_cand, n_roll = returns.shape
    horizon = pick.shape[2]
    zd, act_dim, hid = z0.shape[1], low.shape[0], wo.shape[0]
    zk = zd * n_mix
    half = params.dtype.type(0.5)
    root_tau = math.sqrt(temperature)
    for job in prange(n_cand * n_roll):
        p, r = job // n_roll, job % n_roll
        theta = params[p]
        z = z0[r].copy()
        act = np.empty(act_dim, params.dtype)
        h = np.zeros(hid, params.dtype)
        c = np.zeros(hid, params.dtype)
        gates = np.empty(4 * hid, params.dtype)
        y = np.empty(wo.shape[1], params.dtype)
        total = 0.0
        n = 0
        for t in range(horizon):
            _control(theta, z, h, low, high, clip, act)
            _lstm_cell(z, act, h, c, w, b, gates)
            for o in range(y.shape[0]):
                y[o] = bo[o]
            for j in range(hid):
                v = h[j]
                for o in range(y.shape[0]):
                    y[o] += v * wo[j, o]
            total += y[3 * zk]
            n += 1
            if half + half * np.tanh(half * y[3 * zk + 1]) > done_threshold:
                break
            for d in range(zd):  # z_{t+1} from the mixture
                base = d * n_mix
                k_pick = 0
                if temperature == 0:
                    for k in range(1, n_mix):
                        if y[base + k] > y[base + k_pick]:
                            k_pick = k
                    z[d] = y[zk + base + k_pick]
                    continue
                top = y[base]
                for k in range(1, n_mix):
                    top = max(top, y[base + k])
                norm = 0.0
                for k in range(n_mix):
                    norm += math.exp((y[base + k] - top) / temperature)
                u = pick[p, r, t, d] * norm
                acc = 0.0
                k_pick = n_mix - 1
                for k in range(n_mix):
                    acc += math.exp((y[base + k] - top) / temperature)
                    if u < acc:
                        k_pick = k
                        break
                z[d] = (y[zk + base + k_pick]
                        + np.exp(y[2 * zk + base + k_pick]) * root_tau * noise[p, r, t, d])
        returns[p, r] = total
        steps[p, r] = n


_F32_0, _F32_HALF, _F32_1 = np.float32(0.0), np.float32(0.5), np.float32(1.0)


def _dream_tiled(params, z0, wg, bg, wh, bh, low, high, clip, hid, n_mix, pick, noise,
                 temperature, done_threshold, rows, returns, steps):
    """dream_returns in float32 on the register tile: the rollouts go in chunks of `rows` (a
    multiple of TILE_ROWS), each chunk one step at a time for all its rows, so that M's
    weights are read once per chunk and step, not once per rollout. wg / bg: M's LSTM weights
    (Z + A + H, 4H) and bias as column panels of LANES (``dense.pack_panels``); wh / bh: its
    heads' (H, 3 Z K + 2). A row holds [z, a, h] as the LSTM's input, so that h feeds the heads
    in place. Rows past the last rollout compute on zeros and are dropped. The tanh of C and of
    the cell is dense's rational tanh. Template: dream_kernel(spec) binds LANES, TILE_ROWS and
    dense."""
    n_cand, n_roll = returns.shape
    jobs = n_cand * n_roll
    horizon = pick.shape[2]
    zd, act_dim = z0.shape[1], low.shape[0]
    zk = zd * n_mix
    fan_in = zd + act_dim + hid
    g_panels = bg.shape[0] // LANES
    h_panels = bh.shape[0] // LANES
    root_tau = np.float32(math.sqrt(temperature))
    inv_tau = 1.0 / temperature if temperature > 0 else 0.0
    c_off = act_dim * (zd + hid)
    for chunk in prange(-(-jobs // rows)):
        j0 = chunk * rows
        n = min(rows, jobs - j0)
        x = np.zeros((rows, fan_in), np.float32)
        gates = np.empty((rows, g_panels * LANES), np.float32)
        y = np.empty((rows, h_panels * LANES), np.float32)
        c = np.zeros((rows, hid), np.float32)
        alive = np.zeros(rows, np.bool_)
        total = np.zeros(rows, np.float64)
        count = np.zeros(rows, np.int64)
        for r in range(n):
            for d in range(zd):
                x[r, d] = z0[(j0 + r) % n_roll, d]
            alive[r] = True
        for t in range(horizon):
            for r in range(n):  # C on [z, h]
                if not alive[r]:
                    continue
                theta = params[(j0 + r) // n_roll]
                for i in range(act_dim):
                    row = i * (zd + hid)
                    s = theta[c_off + i]
                    for j in range(zd):
                        s += theta[row + j] * x[r, j]
                    for j in range(hid):
                        s += theta[row + zd + j] * x[r, zd + act_dim + j]
                    u = _tanh32(s)
                    if clip[i]:
                        x[r, zd + i] = min(max(u, low[i]), high[i])
                    else:
                        x[r, zd + i] = low[i] + (high[i] - low[i]) * (u + _F32_1) * _F32_HALF
            dense(gates, gates.shape[1], x, 0, fan_in, rows, wg, 0, fan_in * LANES, fan_in, bg,
                  0, g_panels)
            for r in range(rows):  # the cell: gates i, f, g, o; h into the row's input
                for j in range(hid):
                    ig = _F32_HALF + _F32_HALF * _tanh32(_F32_HALF * gates[r, j])
                    fg = _F32_HALF + _F32_HALF * _tanh32(_F32_HALF * gates[r, hid + j])
                    gg = _tanh32(gates[r, 2 * hid + j])
                    og = _F32_HALF + _F32_HALF * _tanh32(_F32_HALF * gates[r, 3 * hid + j])
                    cc = fg * c[r, j] + ig * gg
                    c[r, j] = cc
                    x[r, zd + act_dim + j] = og * _tanh32(cc)
            dense(y, y.shape[1], x, zd + act_dim, fan_in, rows, wh, 0, hid * LANES, hid, bh, 0,
                  h_panels)
            running = False
            for r in range(n):
                if not alive[r]:
                    continue
                total[r] += y[r, 3 * zk]
                count[r] += 1
                if _F32_HALF + _F32_HALF * math.tanh(_F32_HALF * y[r, 3 * zk + 1]) > done_threshold:
                    alive[r] = False
                    continue
                running = True
                p, q = (j0 + r) // n_roll, (j0 + r) % n_roll
                for d in range(zd):  # z_{t+1} from the mixture
                    base = d * n_mix
                    k_pick = 0
                    if temperature == 0:
                        for k in range(1, n_mix):
                            if y[r, base + k] > y[r, base + k_pick]:
                                k_pick = k
                        x[r, d] = y[r, zk + base + k_pick]
                        continue
                    top = y[r, base]
                    for k in range(1, n_mix):
                        top = max(top, y[r, base + k])
                    norm = 0.0
                    for k in range(n_mix):
                        norm += math.exp((y[r, base + k] - top) * inv_tau)
                    u = pick[p, q, t, d] * norm
                    acc = 0.0
                    k_pick = n_mix - 1
                    for k in range(n_mix):
                        acc += math.exp((y[r, base + k] - top) * inv_tau)
                        if u < acc:
                            k_pick = k
                            break
                    x[r, d] = (y[r, zk + base + k_pick] + np.exp(y[r, 2 * zk + base + k_pick])
                               * root_tau * noise[p, q, t, d])
            if not running:
                break
        for r in range(n):
            returns[(j0 + r) // n_roll, (j0 + r) % n_roll] = total[r]
            steps[(j0 + r) // n_roll, (j0 + r) % n_roll] = count[r]


_DREAM: dict = {}


def dream_kernel(spec=None):
    """dream_returns on the register tile of `spec` (default: the current one), float32 only;
    compiled once per spec."""
    spec = get_spec(spec)
    fn = _DREAM.get(spec.key)
    if fn is None:
        fn = _DREAM[spec.key] = specialise(_dream_tiled, spec, "dream", parallel=True,
                                           dense=dense_kernel(spec))
    return fn


def dream_rows(spec, jobs: int, threads: int, most: int = 64) -> int:
    """Rows per chunk: enough chunks for the threads, at most `most` rows (M's weights are
    read once per chunk and step), a multiple of the spec's tile rows."""
    tile = spec.tile_rows
    per_thread = -(-jobs // max(threads, 1))
    return max(tile, min(-(-most // tile), -(-per_thread // tile)) * tile)
