"""Kernels of the MDN-RNN (World Models' M): the LSTM cell forward and backward, and the loss
and gradient of the mixture-density, reward and done heads.

The matrix products (inputs and output head over a whole chunk at once, the recurrent product
once per step) go to BLAS from the model; these kernels do everything between them, one pass
per step, parallel over the batch rows (the cell) or over the (time, batch) rows (the heads).
Gate layout along the 4H axis: input i, forget f, cell candidate g, output o. A head row holds
[mixture logits (Z K), means (Z K), log-stds (Z K), reward, done logit], element (z, k) of
each block at z * K + k. Sigmoids go through tanh (sigmoid(x) = (1 + tanh(x / 2)) / 2), which
cannot overflow. In float32 the cell uses the vectorisable rational tanh of ``dense.py``
(libm's scalar calls cost more than the cell's products here); float64, which the gradient
checks use, keeps math.tanh.
"""
from __future__ import annotations

import math

import numba
from numba import prange, types
from numba.extending import overload

from . import FASTMATH
from .dense import _tanh as _tanh32

_pjit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy",
                   parallel=True)
_jit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _tanh(x):  # pragma: no cover - replaced by the overload in compiled code
    return math.tanh(x)


@overload(_tanh)
def _tanh_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def tanh32(x):
            return _tanh32(x)
        return tanh32

    def tanh64(x):
        return math.tanh(x)
    return tanh64


@_jit
def lstm_forward_step(gx, hw, c_prev, acts, c, tc, h):
    """One step for every row: gates = gx + hw (B, 4H); acts <- (i, f, g, o) after their
    nonlinearities; c = f c_prev + i g; tc = tanh(c); h = o tc. Serial: a step is too short
    for a parallel region to pay on shared cores."""
    rows, h4 = gx.shape
    n = h4 // 4
    half = gx.dtype.type(0.5)
    for r in range(rows):
        for j in range(n):
            i = half + half * _tanh(half * (gx[r, j] + hw[r, j]))
            f = half + half * _tanh(half * (gx[r, n + j] + hw[r, n + j]))
            g = _tanh(gx[r, 2 * n + j] + hw[r, 2 * n + j])
            o = half + half * _tanh(half * (gx[r, 3 * n + j] + hw[r, 3 * n + j]))
            acts[r, j] = i
            acts[r, n + j] = f
            acts[r, 2 * n + j] = g
            acts[r, 3 * n + j] = o
            cc = f * c_prev[r, j] + i * g
            t = _tanh(cc)
            c[r, j] = cc
            tc[r, j] = t
            h[r, j] = o * t


@_jit
def lstm_backward_step(acts, c_prev, tc, dh_out, dh_rec, dc, dg):
    """Back through one step: dh = dh_out + dh_rec (from the heads and from step t + 1); dc
    holds dL/dc_t on entry and dL/dc_{t-1} on return; dg <- dL/d(gate pre-activations)."""
    rows, h4 = acts.shape
    n = h4 // 4
    one = acts.dtype.type(1)
    for r in range(rows):
        for j in range(n):
            i = acts[r, j]
            f = acts[r, n + j]
            g = acts[r, 2 * n + j]
            o = acts[r, 3 * n + j]
            t = tc[r, j]
            dh = dh_out[r, j] + dh_rec[r, j]
            dcc = dc[r, j] + dh * o * (one - t * t)
            dg[r, j] = dcc * g * i * (one - i)
            dg[r, n + j] = dcc * c_prev[r, j] * f * (one - f)
            dg[r, 2 * n + j] = dcc * i * (one - g * g)
            dg[r, 3 * n + j] = dh * t * o * (one - o)
            dc[r, j] = dcc * f


MIN_PARALLEL_ROWS = 1024  # below this a parallel region costs more than it saves


def mdn_loss(y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy, row_loss,
             parallel=None):
    """Per row r of the heads' outputs y (N, 3 Z K + 2): row_loss[r] = (mean over the Z
    dimensions of the mixture NLL of target[r], squared reward error, done cross-entropy);
    dy[r] = weight[r] * d(nll + reward_weight * sq + done_weight * bce)/dy[r].

    Both log-sum-exps (the log-softmax of the logits and the mixture's) subtract their maximum,
    so logits and log-densities of any finite size give a finite loss and gradient. Rows of
    weight 0 (padding) are skipped: zero gradient and zero loss, whatever their values."""
    if parallel is None:
        parallel = y.shape[0] >= MIN_PARALLEL_ROWS
    kernel = _mdn_loss_parallel if parallel else _mdn_loss_serial
    kernel(y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy, row_loss)


@_pjit
def _mdn_loss_parallel(y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy,
                       row_loss):
    for r in prange(y.shape[0]):
        _mdn_row(r, y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy,
                 row_loss)


@_jit
def _mdn_loss_serial(y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy,
                     row_loss):
    for r in range(y.shape[0]):
        _mdn_row(r, y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy,
                 row_loss)


@_jit
def _mdn_row(r, y, target, reward, done, weight, n_mix, reward_weight, done_weight, dy,
             row_loss):
    z_dim = target.shape[1]
    zk = z_dim * n_mix
    w = weight[r]
    if w == 0:
        dy[r, :] = 0
        row_loss[r, :] = 0
        return
    wz = w / z_dim
    nll = 0.0
    for d in range(z_dim):
        x = target[r, d]
        base = d * n_mix
        m = -math.inf
        for k in range(n_mix):
            m = max(m, y[r, base + k])
        s = 0.0
        for k in range(n_mix):  # dy's three slots of (d, k) serve as scratch
            ek = math.exp(y[r, base + k] - m)
            dy[r, 2 * zk + base + k] = ek
            s += ek
        lse_pi = m + math.log(s)
        m2 = -math.inf
        for k in range(n_mix):  # log pi_k + log N(x; mu_k, sigma_k)
            ls = y[r, 2 * zk + base + k]
            inv_s = math.exp(-ls)
            u = (x - y[r, zk + base + k]) * inv_s
            lk = y[r, base + k] - lse_pi - ls - HALF_LOG_2PI - 0.5 * u * u
            dy[r, base + k] = lk
            dy[r, zk + base + k] = inv_s
            m2 = max(m2, lk)
        s2 = 0.0
        for k in range(n_mix):
            ek = math.exp(dy[r, base + k] - m2)
            dy[r, base + k] = ek
            s2 += ek
        nll -= m2 + math.log(s2)
        for k in range(n_mix):
            gam = dy[r, base + k] / s2  # responsibility of component k
            inv_s = dy[r, zk + base + k]
            u = (x - y[r, zk + base + k]) * inv_s
            dy[r, base + k] = wz * (dy[r, 2 * zk + base + k] / s - gam)
            dy[r, zk + base + k] = -wz * gam * u * inv_s
            dy[r, 2 * zk + base + k] = wz * gam * (1 - u * u)
    e = y[r, 3 * zk] - reward[r]
    q = y[r, 3 * zk + 1]
    p = 0.5 + 0.5 * math.tanh(0.5 * q)
    bce = max(q, 0.0) - q * done[r] + math.log1p(math.exp(-abs(q)))
    dy[r, 3 * zk] = w * reward_weight * 2 * e
    dy[r, 3 * zk + 1] = w * done_weight * (p - done[r])
    row_loss[r, 0] = nll / z_dim
    row_loss[r, 1] = e * e
    row_loss[r, 2] = bce
