"""2-D convolution and transposed convolution ('valid' padding, square stride), forward and
backward, for the World Models VAE.

Layout NHWC (batch, height, width, channels). Both layers are im2col + one GEMM: the numba
kernels below copy patches to a column matrix (im2col) or add a column matrix back onto an
image (col2im), in parallel over the batch, and the matrix products go to NumPy's BLAS. In
NHWC a patch row of kw pixels is kw * C contiguous floats, so both copies are runs of
contiguous loads and stores. Measured on the paper's encoder at batch 100 (znver5, 2 cores,
float32), this beat both a direct numba convolution (vectorised over output channels) and
NCHW im2col with batched GEMMs on three of the four layers (docs/architecture.md has the
figures).

Shapes (K = kh * kw * C_in for a convolution, kh * kw * C_out for a transposed one):
- conv:        x (N, H, W, Ci), w (kh, kw, Ci, Co), b (Co,) -> y (N, OH, OW, Co),
               OH = (H - kh) // s + 1; cols (N * OH * OW, K)
- transposed:  x (N, H, W, Ci), w (Ci, kh, kw, Co), b (Co,) -> y (N, OH, OW, Co),
               OH = (H - 1) * s + kh; cols (N * H * W, K)
A transposed convolution is the input gradient of a convolution, so each layer's forward is
the other's backward and the same two kernels serve all four passes.

Acting encodes one frame at a time, where BLAS's threads cost more than they bring (a busy
machine's scheduler makes them wait on each other): `frame_encoder_kernel` runs the encoder on
one thread, its products on the planners' register tile (dense.py), in a workspace allocated
once.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from . import FASTMATH
from .dense import dense_kernel, specialise
from .isa import get_spec

_jit_par = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy",
                      parallel=True)


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", inline="always")
def _patches(x, kh, kw, stride, oh, ow, cols, p0):
    """im2col of one image x (H, W * C): patch p = i OW + j goes to row p0 + p of cols, in the
    order (a kw + d) C + c."""
    run = cols.shape[1] // kh  # kw * C contiguous values per kernel row
    c = run // kw
    for i in range(oh):
        for j in range(ow):
            dst = cols[p0 + i * ow + j]
            x0 = j * stride * c
            for a in range(kh):
                src = x[i * stride + a]
                for q in range(run):
                    dst[a * run + q] = src[x0 + q]


@_jit_par
def im2col(x, kh, kw, stride, oh, ow, cols):
    """cols[(b OH + i) OW + j, (a kw + d) C + c] = x[b, i s + a, (j s + d) C + c], with x
    given as (N, H, W * C)."""
    for b in prange(x.shape[0]):
        _patches(x[b], kh, kw, stride, oh, ow, cols, b * oh * ow)
    return cols


@_jit_par
def col2im(cols, kh, kw, stride, oh, ow, x):
    """The adjoint of im2col: x = 0, then x[b, i s + a, (j s + d) C + c] += cols[...]."""
    n = x.shape[0]
    run = cols.shape[1] // kh
    c = run // kw
    zero = x.dtype.type(0)
    for b in prange(n):
        xb = x[b]
        for r in range(xb.shape[0]):
            for q in range(xb.shape[1]):
                xb[r, q] = zero
        for i in range(oh):
            for j in range(ow):
                p = (b * oh + i) * ow + j
                x0 = j * stride * c
                for a in range(kh):
                    dst = xb[i * stride + a]
                    src = cols[p]
                    for q in range(run):
                        dst[x0 + q] += src[a * run + q]
    return x


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def conv_transpose_out_size(size: int, kernel: int, stride: int) -> int:
    return (size - 1) * stride + kernel


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)  # (N, H, W * C): a view of a C-contiguous array


def conv2d_forward(x, w, b, stride, cols, out):
    """y = conv(x, w) + b into `out` (N, OH, OW, Co); keeps the patches in `cols` for the
    weight gradient. All arrays C-contiguous, of one float dtype."""
    kh, kw, _, co = w.shape
    oh, ow = out.shape[1], out.shape[2]
    im2col(_rows(x), kh, kw, stride, oh, ow, cols)
    flat = out.reshape(-1, co)
    np.matmul(cols, w.reshape(-1, co), out=flat)
    flat += b
    return out


def conv2d_backward(dout, cols, w, stride, dw, db, dx=None):
    """Gradients of a convolution from dL/dy `dout` and the forward's `cols`: dw and db are
    overwritten; dx (N, H, W, Ci), when given, too. `cols` is used as scratch for dL/dcols
    and holds garbage afterwards."""
    kh, kw, _, co = w.shape
    g = dout.reshape(-1, co)
    np.matmul(cols.T, g, out=dw.reshape(-1, co))
    np.sum(g, axis=0, out=db)
    if dx is not None:
        np.matmul(g, w.reshape(-1, co).T, out=cols)
        col2im(cols, kh, kw, stride, dout.shape[1], dout.shape[2], _rows(dx))
    return dx


def conv_transpose2d_forward(x, w, b, stride, cols, out):
    """y = conv_transpose(x, w) + b into `out` (N, OH, OW, Co); `cols` (N H W, kh kw Co) is
    scratch."""
    ci, kh, kw, co = w.shape
    np.matmul(x.reshape(-1, ci), w.reshape(ci, -1), out=cols)
    col2im(cols, kh, kw, stride, x.shape[1], x.shape[2], _rows(out))
    out.reshape(-1, co)[...] += b
    return out


def conv_transpose2d_backward(dout, x, w, stride, cols, dw, db, dx=None):
    """Gradients of a transposed convolution from dL/dy `dout` and its input `x`: dw, db (and
    dx when given) are overwritten; `cols` (N H W, kh kw Co) is scratch."""
    ci, kh, kw, co = w.shape
    im2col(_rows(dout), kh, kw, stride, x.shape[1], x.shape[2], cols)
    np.matmul(x.reshape(-1, ci).T, cols, out=dw.reshape(ci, -1))
    np.sum(dout.reshape(-1, co), axis=0, out=db)
    if dx is not None:
        np.matmul(cols, w.reshape(ci, -1).T, out=dx.reshape(-1, ci))
    return dx


# -- one frame through the encoder, for acting ----------------------------------------------------
#: columns of a layer's row in `frame_encoder_kernel`'s `convs` table
(X_OFF, ROW_LEN, KH, KW, STRIDE, OH, OW, K, ROWS, COLS_OFF, OUT_OFF, LD, W_OFF, B_OFF,
 CONV_FIELDS) = range(15)  # CONV_FIELDS: the row's length
#: entries of its `head` row: the dense layer from the last feature map to [mu | logvar]
H_IN, H_FAN, H_OUT, H_LD, H_W, H_B, H_Z = range(7)


def _encode_frame(frame, scale, convs, head, buf, w, b, out):
    """One frame (flat, H W C values, times `scale`) through the convolutions (patches, a dense
    product on the spec's register tile, ReLU) and the dense head, in the flat workspace `buf`
    laid out by `convs` and `head` (fastmbrl.models.vae.FrameEncoder); writes mu into `out`.
    Template: `frame_encoder_kernel(spec)` binds dense, LANES and TILE_ROWS."""
    x0 = convs[0, X_OFF]
    for i in range(frame.shape[0]):
        buf[x0 + i] = np.float32(frame[i]) * scale
    for layer in range(convs.shape[0]):
        k = convs[layer, K]
        cols_off = convs[layer, COLS_OFF]
        out_off = convs[layer, OUT_OFF]
        ld = convs[layer, LD]
        x_off, row_len = convs[layer, X_OFF], convs[layer, ROW_LEN]
        rows_in = convs[layer - 1, OH] if layer > 0 else frame.shape[0] // row_len
        x = buf[x_off:x_off + rows_in * row_len].reshape((rows_in, row_len))
        cols = buf[cols_off:cols_off + convs[layer, ROWS] * k].reshape((convs[layer, ROWS], k))
        _patches(x, convs[layer, KH], convs[layer, KW], convs[layer, STRIDE], convs[layer, OH],
                 convs[layer, OW], cols, 0)
        dense(buf[out_off:], ld, buf, cols_off, k, convs[layer, ROWS], w, convs[layer, W_OFF],
              k * LANES, k, b, convs[layer, B_OFF], ld // LANES)
        for i in range(out_off, out_off + convs[layer, OH] * convs[layer, OW] * ld):
            if buf[i] < 0:  # NaN stays, as in training's ReLU
                buf[i] = 0
    fan, h_out, h_ld = head[H_FAN], head[H_OUT], head[H_LD]
    dense(buf[h_out:], h_ld, buf, head[H_IN], fan, TILE_ROWS, w, head[H_W], fan * LANES, fan, b,
          head[H_B], h_ld // LANES)
    for i in range(head[H_Z]):
        out[i] = buf[h_out + i]


_FRAME_ENCODERS: dict = {}


def frame_encoder_kernel(spec=None):
    """`_encode_frame` compiled for `spec` (default: the current one), one thread."""
    spec = get_spec(spec)
    fn = _FRAME_ENCODERS.get(spec.key)
    if fn is None:
        fn = _FRAME_ENCODERS[spec.key] = specialise(_encode_frame, spec, "encode_frame",
                                                    dense=dense_kernel(spec))
    return fn
