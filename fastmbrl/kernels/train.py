"""One epoch of minibatch Adam for a stack of equal-shaped MLPs, on the register tile: on the MSE,
or on the Gaussian negative log-likelihood of a mean and bounded log-variance head (PETS).

The matrix products of a training step are small (a minibatch of 256 rows against 200 x 200
weights): BLAS pays its call and threading overhead a dozen times per step and runs far from
peak there. This kernel keeps every member's parameters, Adam state and activations in padded
buffers laid out for the tile of ``dense.py``, and computes per step

    forward   Z_i = A_{i-1} W_i + b_i,  A_i = f(Z_i)          (tiles over rows x panels)
    loss      G_L = 2 (Z_L - Y) / (m O)   (MSE; the Gaussian head: see `_gaussian_rows`)
    backward  dW_i = A_{i-1}^T G_i,  db_i = colsum(G_i),  G_{i-1} = (G_i W_i^T) * f'(Z_{i-1})
    Adam      on every parameter (weight decay per layer, weights and biases apart), and on
              the head's log-variance bounds; W_i^T refreshed for the next step's backward pass

in three parallel loops per step (see `_train_epoch`) whose tasks span the members, so the
members of an ensemble train together and a single network still uses every core. Every output
element is reduced by one task in a fixed order, so results do not depend on the thread count.

Layouts (float32, per member row of the 2-D buffers):
- params/grads/Adam moments: per layer a (Kr, Np) weight block (Kr = fan-in rounded up to tile
  rows, Np = fan-out rounded up to lanes) and an Np bias; padding stays exactly zero;
- wt: per layer i >= 1 its transpose (N_i, Np_{i-1});
- ws: the input block X (rows, Kr_0), then per layer Z_i, A_i (hidden layers) and G_i, each
  (rows, ld_i) with ld_i = max(Np_i, Kr_{i+1}); columns past the fan-out stay zero.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import FASTMATH
from .dense import RELU, TANH, _tanh, panel_groups, specialise
from .isa import get_spec
from .nn import adam_update

# columns of the layer table
(K, N, KR, NP, W_OFF, B_OFF, WT_OFF, IN_OFF, IN_LD, Z_OFF, A_OFF, G_OFF, LD,
 N_COLS) = range(14)
_UPDATE_ROWS = 16  # weight rows per Adam task

_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def _activate(w, zo, ao, ld, r0, r1, c0, c1, code):
    """A = f(Z) on rows r0:r1, columns c0:c1. Row slices and arithmetic instead of branches:
    the signs are random, and a branch per element would be mispredicted half the time."""
    for r in range(r0, r1):
        z = w[zo + r * ld + c0: zo + r * ld + c1]
        a = w[ao + r * ld + c0: ao + r * ld + c1]
        if code == RELU:
            for c in range(c1 - c0):
                v = z[c]
                a[c] = v * np.float32(not v < _ZERO)  # keeps NaN
        elif code == TANH:
            for c in range(c1 - c0):
                a[c] = _tanh(z[c])
        else:
            for c in range(c1 - c0):
                v = z[c]
                a[c] = v * (_HALF + _HALF * _tanh(_HALF * v))


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def _times_derivative(w, go, zo, ao, ld, r0, r1, c0, c1, code):
    """G *= f'(Z) on rows r0:r1, columns c0:c1, from A = f(Z) (and Z for SiLU)."""
    for r in range(r0, r1):
        i = r * ld + c0
        g = w[go + i: go + i + c1 - c0]
        a = w[ao + i: ao + i + c1 - c0]
        if code == RELU:
            for c in range(c1 - c0):
                g[c] *= np.float32(a[c] > _ZERO)
        elif code == TANH:
            for c in range(c1 - c0):
                g[c] *= _ONE - a[c] * a[c]
        else:
            z = w[zo + i: zo + i + c1 - c0]
            for c in range(c1 - c0):
                sg = _HALF + _HALF * _tanh(_HALF * z[c])
                g[c] *= sg + a[c] * (_ONE - sg)


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def _softplus(x):
    return max(x, _ZERO) + np.log1p(np.exp(-abs(x)))


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def _sigmoid(x):
    return _HALF + _HALF * _tanh(_HALF * x)


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def _gaussian_rows(w, zo, go, ld, y, order, mem, s0, rb0, rb1, n_y, scale, bounds, bgrad, blk):
    """Gaussian NLL of rows rb0:rb1: Z_L holds (mean, raw log-variance v) per output; the
    log-variance is lv = lo + softplus(hi' - lo), hi' = hi - softplus(hi - v) (soft bounds).
    Writes G_L (scaled by `scale` = 1 / (m O)) and this block's sums of the bounds' gradients
    into bgrad[mem, blk] (0: upper, 1: lower); returns the sum of 0.5 ((mu - y)^2 / var + lv)."""
    total = 0.0
    for c in range(n_y):
        bgrad[mem, blk, 0, c] = 0.0
        bgrad[mem, blk, 1, c] = 0.0
    for r in range(rb0, rb1):
        src = order[mem, s0 + r]
        for c in range(n_y):
            hi = bounds[mem, 0, c]
            lo = bounds[mem, 1, c]
            v = w[zo + r * ld + n_y + c]
            l1 = hi - _softplus(hi - v)
            lv = lo + _softplus(l1 - lo)
            d = w[zo + r * ld + c] - y[src, c]
            iv = np.exp(-lv)
            e = d * d * iv
            total += _HALF * (e + lv)
            glv = _HALF * (_ONE - e) * scale
            s1 = _sigmoid(hi - v)
            s2 = _sigmoid(l1 - lo)
            w[go + r * ld + c] = d * iv * scale
            w[go + r * ld + n_y + c] = glv * s2 * s1
            bgrad[mem, blk, 0, c] += glv * s2 * (_ONE - s1)
            bgrad[mem, blk, 1, c] += glv * (_ONE - s2)
    return total


def _train_epoch(x, y, order, noise, batch, act_code, layers, gstart, gcount, ublocks, pp, gp,
                 mp, vp, wt, ws, zero, lr, beta1, beta2, eps, weight_decay, t0, losses,
                 block_loss, bounds, bm, bv, bgrad, bg, penalty):
    """Returns the number of steps taken; losses[m] = member m's mean batch loss (weighted by
    batch rows), NaN for a member whose loss became non-finite (the epoch stops there, before
    that step's update). block_loss (B, row blocks) is scratch. weight_decay (L, 2): per layer,
    of its weights and of its bias.

    The Gaussian head is on when `bounds` (B, 2, O) (upper, lower log-variance bounds, trained
    with their Adam moments bm, bv) is not empty: the network then has 2 O outputs for O
    targets, the loss is the NLL (without the bounds' penalty, whose gradient `penalty`
    (+ for the upper, - for the lower) is added). bgrad (B, row blocks, 2, O) float64 and
    bg (B, 2, O) float32 are scratch.

    A step is three parallel loops: (1) per (member, block of CHUNK rows): gather, forward
    through every layer, loss, and the backward chain G_i -> G_{i-1}, all of which only mix
    columns within a row; (2) per (member, layer, fan-in tile, panel group): dW and db, which
    reduce over the rows; (3) Adam and W^T per (member, block of weight rows)."""
    n_mem = pp.shape[0]
    n = order.shape[1]
    n_layers = layers.shape[0]
    last = n_layers - 1
    d_in = layers[0, K]
    d_out = layers[last, N]
    n_y = y.shape[1]
    gaussian = bounds.shape[0] > 0
    with_noise = noise.shape[0] > 0
    n_up = ublocks.shape[0]
    f1 = np.float32(1.0)
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    # dW tasks of every layer, numbered layer after layer
    dw_first = np.zeros(n_layers + 1, np.int64)
    for li in range(n_layers):
        dw_first[li + 1] = dw_first[li] + (layers[li, KR] // TILE_ROWS) * gcount[li]
    n_dw = dw_first[n_layers]
    for mem in range(n_mem):
        losses[mem] = 0.0
    n_steps = (n + batch - 1) // batch
    for step in range(n_steps):
        s0 = step * batch
        m = min(batch, n - s0)
        n_blocks = (m + CHUNK - 1) // CHUNK
        scale = np.float32((1.0 if gaussian else 2.0) / (m * n_y))
        for task in prange(n_mem * n_blocks):
            mem = task // n_blocks
            blk = task % n_blocks
            rb0 = blk * CHUNK
            rb1 = min(rb0 + CHUNK, m)  # real rows of the block
            rt1 = rb0 + ((rb1 - rb0 + TILE_ROWS - 1) // TILE_ROWS) * TILE_ROWS
            w = ws[mem]
            p = pp[mem]
            xo = layers[0, IN_OFF]
            xld = layers[0, IN_LD]
            for r in range(rb0, rb1):  # the minibatch's rows (plus input noise) into X
                src = order[mem, s0 + r]
                for c in range(d_in):
                    v = x[src, c]
                    if with_noise:
                        v += noise[mem, s0 + r, c]
                    w[xo + r * xld + c] = v
            for li in range(n_layers):  # forward, the activation while the tile is hot
                ld = layers[li, LD]
                for g in range(gcount[li]):
                    v0 = gstart[li, g]
                    nv = gstart[li, g + 1] - v0
                    for r0 in range(rb0, rt1, TILE_ROWS):
                        tile(w, layers[li, Z_OFF] + r0 * ld + LANES * v0, ld,
                             w, layers[li, IN_OFF] + r0 * layers[li, IN_LD], layers[li, IN_LD],
                             1, p, layers[li, W_OFF] + LANES * v0, LANES, layers[li, NP],
                             p, layers[li, B_OFF] + LANES * v0, layers[li, K], nv)
                        if li < last:
                            _activate(w, layers[li, Z_OFF], layers[li, A_OFF], ld, r0,
                                      r0 + TILE_ROWS, LANES * v0, LANES * (v0 + nv), act_code)
            zo = layers[last, Z_OFF]  # loss and G_L
            go = layers[last, G_OFF]
            ld = layers[last, LD]
            if gaussian:
                total = _gaussian_rows(w, zo, go, ld, y, order, mem, s0, rb0, rb1, n_y, scale,
                                       bounds, bgrad, blk)
            else:
                total = 0.0
                for r in range(rb0, rb1):
                    src = order[mem, s0 + r]
                    for c in range(d_out):
                        d = w[zo + r * ld + c] - y[src, c]
                        total += d * d
                        w[go + r * ld + c] = d * scale
            block_loss[mem, blk] = total
            for li in range(last, 0, -1):  # G_{i-1} = (G_i W_i^T) * f'(Z_{i-1})
                ld = layers[li, LD]
                ldp = layers[li - 1, LD]
                gpo = layers[li - 1, G_OFF]
                for g in range(gcount[li - 1]):
                    v0 = gstart[li - 1, g]
                    nv = gstart[li - 1, g + 1] - v0
                    for r0 in range(rb0, rt1, TILE_ROWS):
                        tile(w, gpo + r0 * ldp + LANES * v0, ldp,
                             w, layers[li, G_OFF] + r0 * ld, ld, 1,
                             wt[mem], layers[li, WT_OFF] + LANES * v0, LANES, layers[li - 1, NP],
                             zero, 0, layers[li, N], nv)
                        _times_derivative(w, gpo, layers[li - 1, Z_OFF], layers[li - 1, A_OFF],
                                          ldp, r0, r0 + TILE_ROWS, LANES * v0,
                                          LANES * (v0 + nv), act_code)
        bad = False
        for mem in range(n_mem):  # block sums in a fixed order: the same for any thread count
            total = 0.0
            for blk in range(n_blocks):
                total += block_loss[mem, blk]
            loss = total / (m * n_y)
            if np.isfinite(loss):
                losses[mem] += loss * m
            else:
                losses[mem] = np.nan
                bad = True
        if bad:
            for mem in range(n_mem):
                if np.isfinite(losses[mem]):
                    losses[mem] /= max(s0, 1)
            return step
        for task in prange(n_mem * n_dw):  # dW = A_{i-1}^T G_i and db = colsum(G_i)
            mem = task // n_dw
            j = task % n_dw
            li = 0
            while dw_first[li + 1] <= j:
                li += 1
            j -= dw_first[li]
            ng = gcount[li]
            g = j % ng
            k0 = (j // ng) * TILE_ROWS
            v0 = gstart[li, g]
            nv = gstart[li, g + 1] - v0
            w = ws[mem]
            d = gp[mem]
            npl = layers[li, NP]
            ld = layers[li, LD]
            go = layers[li, G_OFF]
            tile(d, layers[li, W_OFF] + k0 * npl + LANES * v0, npl,
                 w, layers[li, IN_OFF] + k0, 1, layers[li, IN_LD],
                 w, go + LANES * v0, LANES, ld, zero, 0, m, nv)
            if k0 == 0:  # the bias gradient: rows outer, so columns vectorise
                c0 = LANES * v0
                db = d[layers[li, B_OFF] + c0: layers[li, B_OFF] + LANES * (v0 + nv)]
                db[:] = _ZERO
                for r in range(m):
                    gr = w[go + r * ld + c0: go + r * ld + c0 + db.shape[0]]
                    for c in range(db.shape[0]):
                        db[c] += gr[c]
        # Adam (as torch.optim.Adam, L2 weight decay added to the gradient); then W^T
        t = t0 + step + 1
        bc2 = math.sqrt(1.0 - beta2 ** t)
        lr_t = np.float32(lr * bc2 / (1.0 - beta1 ** t))
        eps_t = np.float32(eps * bc2)
        for task in prange(n_mem * n_up):
            mem = task // n_up
            u = task % n_up
            li = ublocks[u, 0]
            k0 = ublocks[u, 1]
            k1 = ublocks[u, 2]
            n_out = layers[li, N]
            npl = layers[li, NP]
            wo = layers[li, W_OFF]
            for k in range(k0, k1 + (1 if k0 == 0 else 0)):
                # row k of W, and the bias as an extra row in the task holding row 0
                j = wo + k * npl if k < k1 else layers[li, B_OFF]
                adam_update(pp[mem, j: j + n_out], gp[mem, j: j + n_out], mp[mem, j: j + n_out],
                            vp[mem, j: j + n_out], lr_t, b1, b2, eps_t,
                            weight_decay[li, 0 if k < k1 else 1])
            if li > 0:  # row c of W^T gets the block's k0:k1, contiguous
                p = pp[mem]
                wtm = wt[mem]
                to = layers[li, WT_OFF]
                ldt = layers[li - 1, NP]
                for c in range(n_out):
                    for k in range(k0, k1):
                        wtm[to + c * ldt + k] = p[wo + k * npl + c]
        if gaussian:  # the bounds: block sums in a fixed order, the penalty, Adam
            for mem in range(n_mem):
                for side in range(2):
                    sign = 1.0 if side == 0 else -1.0
                    for c in range(n_y):
                        total = 0.0
                        for blk in range(n_blocks):
                            total += bgrad[mem, blk, side, c]
                        bg[mem, side, c] = total + sign * penalty
                    adam_update(bounds[mem, side], bg[mem, side], bm[mem, side], bv[mem, side],
                                lr_t, b1, b2, eps_t, _ZERO)
    for mem in range(n_mem):
        losses[mem] /= n
    return n_steps


_KERNELS: dict = {}


def epoch_kernel(isa=None):
    """The compiled epoch of `isa`'s spec (default: the current one), cached per spec key."""
    spec = get_spec(isa)
    fn = _KERNELS.get(spec.key)
    if fn is None:
        fn = _KERNELS[spec.key] = specialise(_train_epoch, spec, "train_epoch", parallel=True,
                                             CHUNK=spec.chunk_rows)
    return fn


def _round_up(v: int, to: int) -> int:
    return -(-v // to) * to


class Layout:
    """Offsets of the padded buffers for MLPs of `sizes` (in, hidden..., out) trained with
    minibatches of at most `batch` rows under `spec`."""

    def __init__(self, sizes, batch: int, spec):
        lanes, tr = spec.lanes, spec.tile_rows
        self.spec, self.sizes, self.batch = spec, tuple(sizes), int(batch)
        n_layers = len(sizes) - 1
        rows = _round_up(batch, tr)
        tab = np.zeros((n_layers, N_COLS), np.int64)
        kr = [_round_up(k, tr) for k in sizes[:-1]]
        np_ = [_round_up(n, lanes) for n in sizes[1:]]
        p = wt = 0
        ws = rows * kr[0]  # X first
        groups = [panel_groups(v // lanes, spec) for v in np_]
        gmax = max(len(g) for g in groups)
        gstart = np.zeros((n_layers, gmax + 1), np.int64)
        gcount = np.zeros(n_layers, np.int64)
        in_off, in_ld = 0, kr[0]
        ublocks = []
        for i in range(n_layers):
            ld = max(np_[i], kr[i + 1]) if i + 1 < n_layers else np_[i]
            z = ws
            a = z + rows * ld if i + 1 < n_layers else 0
            g = (a if a else z) + rows * ld
            ws = g + rows * ld
            tab[i] = (sizes[i], sizes[i + 1], kr[i], np_[i], p, p + kr[i] * np_[i],
                      wt if i else 0, in_off, in_ld, z, a, g, ld)
            p += kr[i] * np_[i] + np_[i]
            if i:
                wt += sizes[i + 1] * np_[i - 1]
            in_off, in_ld = a, ld
            gcount[i] = len(groups[i])
            for j, (v0, nv) in enumerate(groups[i]):
                gstart[i, j] = v0
            gstart[i, len(groups[i])] = np_[i] // lanes
            ublocks += [(i, k0, min(k0 + _UPDATE_ROWS, sizes[i]))
                        for k0 in range(0, sizes[i], _UPDATE_ROWS)]
        self.layers, self.gstart, self.gcount = tab, gstart, gcount
        self.ublocks = np.array(ublocks, np.int64)
        self.n_params, self.n_wt, self.n_ws = p, max(wt, 1), ws
        self.zero = np.zeros(3 * lanes, np.float32)

    def weight_view(self, buf, i):
        """(fan_in, fan_out) view of layer i's weights in a padded parameter row."""
        k, n, kr, npl, wo = (int(v) for v in self.layers[i, [K, N, KR, NP, W_OFF]])
        return buf[wo: wo + kr * npl].reshape(kr, npl)[:k, :n]

    def bias_view(self, buf, i):
        n, bo = int(self.layers[i, N]), int(self.layers[i, B_OFF])
        return buf[bo: bo + n]

    def transpose_view(self, buf, i):
        """(fan_out, fan_in) view of layer i's transposed weights (i >= 1) in a wt row."""
        n, to = int(self.layers[i, N]), int(self.layers[i, WT_OFF])
        npp = int(self.layers[i - 1, NP])
        return buf[to: to + n * npp].reshape(n, npp)[:, : int(self.layers[i, K])]
