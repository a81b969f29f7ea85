"""Element-wise kernels of the hand-written MLP and its optimizers.

Each is one pass over contiguous 1-D views, so a training step allocates nothing. In-place
updates take the array once (not as both input and output): LLVM then proves the arrays
distinct and vectorises. error_model="numpy" drops the zero-division checks that would
otherwise block vectorisation. Transcendentals (tanh) stay in NumPy, whose SIMD versions
beat numba's scalar calls here.
"""
from __future__ import annotations

import numba
import numpy as np

from . import FASTMATH

_jit = numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")


@_jit
def relu_forward(z, out):
    zero = z.dtype.type(0)
    for i in range(z.size):
        v = z[i]
        out[i] = zero if v <= 0 else v  # NaN is not <= 0, so it propagates
    return out


@_jit
def relu_backward(a, grad):
    """grad *= relu'(z), read off a = relu(z)."""
    zero = a.dtype.type(0)
    for i in range(a.size):
        grad[i] = grad[i] if a[i] > 0 else zero
    return grad


@_jit
def tanh_backward(a, grad):
    for i in range(a.size):
        grad[i] *= 1 - a[i] * a[i]
    return grad


@_jit
def silu_finish(z, t):
    """t <- z * sigmoid(z) given t = tanh(z / 2), since sigmoid(z) = (1 + tanh(z / 2)) / 2."""
    half = z.dtype.type(0.5)
    for i in range(z.size):
        t[i] = z[i] * (half + half * t[i])
    return t


@_jit
def silu_backward(z, a, grad):
    """grad *= silu'(z) = s + a (1 - s), with s = sigmoid(z) = a / z (1/2 at z = 0)."""
    half = z.dtype.type(0.5)
    for i in range(z.size):
        zi = z[i]
        s = a[i] / zi if zi != 0 else half
        grad[i] *= s + a[i] * (1 - s)
    return grad


@_jit
def adam_update(p, g, m, v, lr_t, beta1, beta2, eps_t, weight_decay):
    """One Adam step in place; lr_t and eps_t already carry the bias corrections."""
    one = p.dtype.type(1.0)
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        mi = beta1 * m[i] + (one - beta1) * gi
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr_t * mi / (np.sqrt(vi) + eps_t)


@_jit
def sgd_update(p, g, buf, lr, momentum):
    for i in range(p.size):
        b = momentum * buf[i] + g[i]
        buf[i] = b
        p[i] -= lr * b
