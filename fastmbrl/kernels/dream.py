"""The dream: a population of World Models controllers rolled out inside M, the MDN-RNN, in one
parallel kernel over every (candidate, rollout) pair, as the fused rollout kernel does for the
planners' candidates.

Per step of a rollout: C acts on [z_t, h_t] (a = low + (high - low) (tanh(W [z, h] + b) + 1) / 2,
a candidate's parameters flat as [W (A, Z + H) row-major, b (A,)]); M's LSTM takes [z_t, a_t]
and (h_t, c_t) to (h_{t+1}, c_{t+1}); its heads give the reward r_t, the done probability and,
per latent dimension, the mixture z_{t+1} is drawn from at temperature tau (component from
softmax(logits / tau) by the uniform `pick`, then mu + exp(log_std) sqrt(tau) `noise`; tau = 0:
the mean of the most probable component). A rollout earns r_t up to and including the step whose
done probability exceeds `done_threshold`. The uniforms and normals are drawn before the call
(the same returns for a seed whatever the thread count). Scratch is allocated per rollout, never
per step. The arithmetic follows the parameters' dtype (float32, or float64 for the checks).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import FASTMATH


@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", parallel=True)
def dream_returns(params, z0, w, b, wo, bo, low, high, n_mix, pick, noise, temperature,
                  done_threshold, returns, steps):
    """returns[p, r] and steps[p, r] (steps run) of candidate p's rollout r from z0[r] with zero
    (h, c). params (P, A (Z + H) + A); z0 (R, Z); M's w (Z + A + H, 4H), b (4H,), wo (H, 3 Z K +
    2), bo; low, high (A,); pick, noise (P, R, T, Z)."""
    n_cand, n_roll = returns.shape
    horizon = pick.shape[2]
    zd, act_dim, hid = z0.shape[1], low.shape[0], wo.shape[0]
    zk = zd * n_mix
    one = params.dtype.type(1)
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
            for i in range(act_dim):  # C
                s = theta[act_dim * (zd + hid) + i]
                row = i * (zd + hid)
                for j in range(zd):
                    s += theta[row + j] * z[j]
                for j in range(hid):
                    s += theta[row + zd + j] * h[j]
                act[i] = low[i] + (high[i] - low[i]) * (np.tanh(s) + one) * half
            for g in range(4 * hid):
                gates[g] = b[g]
            for j in range(zd):  # [z, a, h] @ w, row by row (w is row-major)
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
