"""Convolution and transposed convolution kernels (kernels/conv.py) against the loop twins of
tests/reference.py and finite differences, in float64 on tiny shapes."""
import numpy as np
import pytest

from fastmbrl.kernels import conv
from reference import (conv2d_grads_reference, conv2d_reference,
                       conv_transpose2d_grads_reference, conv_transpose2d_reference)

# (N, H, Ci, Co, k, stride): odd sizes, so the last row and column of a 'valid' conv are cut
CASES = [(2, 9, 3, 4, 4, 2), (3, 5, 2, 5, 3, 1), (1, 1, 6, 3, 5, 2)]


def _conv(x, w, b, s):
    n, h, _, _ = x.shape
    kh, _, ci, co = w.shape
    oh = conv.conv_out_size(h, kh, s)
    cols = np.empty((n * oh * oh, kh * kh * ci))
    out = np.empty((n, oh, oh, co))
    conv.conv2d_forward(x, w, b, s, cols, out)
    return out, cols


def _deconv(x, w, b, s):
    n, h, _, ci = x.shape
    _, kh, _, co = w.shape
    oh = conv.conv_transpose_out_size(h, kh, s)
    cols = np.empty((n * h * h, kh * kh * co))
    out = np.empty((n, oh, oh, co))
    conv.conv_transpose2d_forward(x, w, b, s, cols, out)
    return out, cols


def _data(case, transposed, seed=0):
    n, h, ci, co, k, s = case
    rng = np.random.default_rng(seed)
    if not transposed and h < k:
        h = k
    x = rng.standard_normal((n, h, h, ci))
    w = rng.standard_normal((ci, k, k, co) if transposed else (k, k, ci, co))
    b = rng.standard_normal(co)
    return x, w, b, s


@pytest.mark.parametrize("case", CASES)
def test_conv_matches_reference(case):
    x, w, b, s = _data(case, False)
    out, cols = _conv(x, w, b, s)
    np.testing.assert_allclose(out, conv2d_reference(x, w, b, s), rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    conv.conv2d_backward(dout, cols, w, s, dw, db, dx)
    for got, want in zip((dx, dw, db), conv2d_grads_reference(x, w, s, dout)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_conv_transpose_matches_reference(case):
    x, w, b, s = _data(case, True)
    out, cols = _deconv(x, w, b, s)
    np.testing.assert_allclose(out, conv_transpose2d_reference(x, w, b, s), rtol=1e-12,
                               atol=1e-12)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    conv.conv_transpose2d_backward(dout, x, w, s, cols, dw, db, dx)
    for got, want in zip((dx, dw, db), conv_transpose2d_grads_reference(x, w, s, dout)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _numeric_grad(f, a, h=1e-6):
    g = np.empty_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        up = f()
        a[i] = old - h
        g[i] = (up - f()) / (2 * h)
        a[i] = old
    return g


@pytest.mark.parametrize("transposed", [False, True])
def test_gradients_match_finite_differences(transposed):
    x, w, b, s = _data((2, 4, 2, 3, 3, 2) if transposed else (2, 7, 2, 3, 3, 2), transposed, 3)
    forward = _deconv if transposed else _conv
    probe = np.random.default_rng(4).standard_normal(forward(x, w, b, s)[0].shape)

    def loss():  # a fixed random projection of the output: every output element matters
        return float((forward(x, w, b, s)[0] * probe).sum())

    out, cols = forward(x, w, b, s)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    if transposed:
        conv.conv_transpose2d_backward(probe, x, w, s, cols, dw, db, dx)
    else:
        conv.conv2d_backward(probe, cols, w, s, dw, db, dx)
    for got, a in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, _numeric_grad(loss, a), rtol=1e-6, atol=1e-8)


def test_transposed_is_the_adjoint_of_conv_in_float32():
    """<conv(x), y> = <x, conv_transpose(y)> for the same weights (bias 0), in float32: the
    single-precision kernels the VAE trains with."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 11, 11, 3)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 5)).astype(np.float32)
    zero3, zero5 = np.zeros(3, np.float32), np.zeros(5, np.float32)
    oh = conv.conv_out_size(11, 4, 2)
    y = rng.standard_normal((2, oh, oh, 5)).astype(np.float32)
    cx = np.empty((2, oh, oh, 5), np.float32)
    conv.conv2d_forward(x, w, zero5, 2, np.empty((2 * oh * oh, 48), np.float32), cx)
    ty = np.empty((2, 10, 10, 3), np.float32)  # (4 - 1) * 2 + 4 = 10: the row and column cut
    wt = np.ascontiguousarray(w.transpose(3, 0, 1, 2))
    conv.conv_transpose2d_forward(y, wt, zero3, 2, np.empty((2 * oh * oh, 48), np.float32), ty)
    lhs = float((cx.astype(np.float64) * y).sum())
    rhs = float((x[:, :10, :10].astype(np.float64) * ty).sum())
    assert abs(lhs - rhs) <= 1e-4 * (abs(lhs) + 1)
