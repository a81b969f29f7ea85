"""A hand-written multilayer perceptron with manual backprop, and the Adam and SGD optimizers.

All parameters of an MLP are views into one contiguous flat vector (`flat_params`), and so are
their gradients (`flat_grads`): exporting them needs no copy, the planning kernels read them
directly, and an optimizer updates the whole network in one fused loop. Hidden activations live
in workspaces preallocated per batch size, so a training step allocates nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Optional, Union

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import check_positive_int
from fastmbrl.kernels import isa as _isa
from fastmbrl.kernels import nn as _k
from fastmbrl.kernels import train as _kt
from fastmbrl.kernels.dense import ACTIVATIONS as _DENSE_ACT
from fastmbrl.limits import array_bytes, check_bytes


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1)  # a view, as every array passed here is C-contiguous


# Activations: forward(z, out=None) -> a = f(z), written to `out` (allocated when None, must not
# overlap z); backward(z, a, grad) -> grad multiplied IN PLACE by f'(z), given both the
# pre-activation z and a = f(z) so each derivative uses the cheaper one. Arrays are C-contiguous
# and of one float dtype.
def _out_for(z: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty_like(z, order="C")
    if np.shares_memory(out, z):
        raise ValueError("out must not overlap z")
    return out


def relu(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = _out_for(z, out)
    _k.relu_forward(_flat(z), _flat(out))
    return out


def relu_grad(z: np.ndarray, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    _k.relu_backward(_flat(a), _flat(grad))
    return grad


def tanh(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.tanh(z, out=_out_for(z, out))


def tanh_grad(z: np.ndarray, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    _k.tanh_backward(_flat(a), _flat(grad))
    return grad


def silu(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = _out_for(z, out)
    np.multiply(z, z.dtype.type(0.5), out=out)
    np.tanh(out, out=out)  # tanh(z/2) stays finite where exp(-z) would overflow
    _k.silu_finish(_flat(z), _flat(out))
    return out


def silu_grad(z: np.ndarray, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
    _k.silu_backward(_flat(z), _flat(a), _flat(grad))
    return grad


# the functional form keeps the field types evaluated (the fields' __new__ cannot resolve strings)
Activation = NamedTuple("Activation", [
    ("forward", Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]),
    ("backward", Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray])])
Activation.__doc__ = """An activation: forward(z, out=None) -> f(z); backward(z, a, grad) -> grad
multiplied in place by f'(z)."""
#: what `rng` arguments accept: a Generator, an int seed or None (a fresh seed)
RngLike = Union[np.random.Generator, int, None]


ACTIVATIONS = {
    "relu": Activation(relu, relu_grad),
    "tanh": Activation(tanh, tanh_grad),
    "silu": Activation(silu, silu_grad),
}
_ALIASES = {"swish": "silu"}
#: every activation name a network accepts: the kernels' list (fastmbrl.kernels.dense)
ACTIVATION_NAMES = tuple(_DENSE_ACT)


def get_activation(name: str) -> Activation:
    """The (forward, backward) pair of an activation name ("relu", "tanh", "silu"/"swish")."""
    key = _ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        names = ", ".join(sorted(ACTIVATION_NAMES))
        raise ValueError(f"activation: expected one of {names}, got {name!r}")
    return ACTIVATIONS[key]


def _as_rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng: expected a numpy.random.Generator, an int seed or None, got {rng!r}")


def check_hidden(hidden: Iterable[int]) -> tuple[int, ...]:
    """Hidden widths as a tuple of positive ints (ValueError naming `hidden` otherwise)."""
    try:
        return tuple(check_positive_int(h, "hidden[i]") for h in hidden)
    except TypeError:
        raise ValueError(f"hidden: expected a sequence of positive ints, got {hidden!r}") from None


def num_params(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """Weights and biases of a dense network of these sizes (a Python int: no overflow)."""
    sizes = (in_dim, *hidden, out_dim)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def mlp_bytes(in_dim: int, hidden: Sequence[int], out_dim: int, dtype: npt.DTypeLike) -> int:
    """Bytes an MLP allocates when built: its parameters and their gradients."""
    return 2 * array_bytes(num_params(in_dim, hidden, out_dim), itemsize=np.dtype(dtype).itemsize)


def _check_dtype(dtype: npt.DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    return dt


class _Workspace:
    """Buffers for one batch size: pre-activations z, activations a, and a gradient buffer per
    hidden layer, plus an output buffer for the training path."""

    def __init__(self, n, hidden, out_dim, dtype):
        self.z = [np.empty((n, h), dtype) for h in hidden]
        self.a = [np.empty((n, h), dtype) for h in hidden]
        self.g = [np.empty((n, h), dtype) for h in hidden]
        self.out = np.empty((n, out_dim), dtype)
        self.ones = np.ones(n, dtype)  # bias gradients as one gemv, ones @ g, beat np.sum(axis=0)


class MLP:
    """Dense layers with a hidden activation and a linear output layer.

    `weights[i]` has shape (fan_in, fan_out) and `biases[i]` (fan_out,); `params` lists
    [W0, b0, W1, b1, ...] and `grads` their gradients, all views into `flat_params` /
    `flat_grads`. Weights start as U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases at 0.
    """

    _MAX_WORKSPACES = 8

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "relu", dtype: npt.DTypeLike = np.float32,
                 rng: RngLike = None) -> None:
        self.in_dim = check_positive_int(in_dim, "in_dim")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        self.hidden = check_hidden(hidden)
        self._act = get_activation(activation)
        self.activation = _ALIASES.get(activation, activation)
        self.dtype = _check_dtype(dtype)
        rng = _as_rng(rng)
        check_bytes(f"MLP(in_dim={self.in_dim}, hidden={self.hidden}, out_dim={self.out_dim})",
                    {"parameters and gradients (hidden widths)":
                     mlp_bytes(self.in_dim, self.hidden, self.out_dim, self.dtype)}, "hidden")

        sizes = (self.in_dim, *self.hidden, self.out_dim)
        shapes = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        total = sum(int(np.prod(s)) for s in shapes)
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self.params, self.grads = [], []
        start = 0
        for shape in shapes:
            stop = start + int(np.prod(shape))
            self.params.append(self.flat_params[start:stop].reshape(shape))
            self.grads.append(self.flat_grads[start:stop].reshape(shape))
            start = stop
        self.weights = self.params[0::2]
        self.biases = self.params[1::2]
        for w in self.weights:
            bound = 1.0 / np.sqrt(w.shape[0])
            w[...] = rng.uniform(-bound, bound, size=w.shape)
        self._workspaces: dict[int, _Workspace] = {}
        self._x: np.ndarray | None = None  # the last forward's input and workspace
        self._ws: _Workspace | None = None

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    def _workspace(self, n: int) -> _Workspace:
        ws = self._workspaces.get(n)
        if ws is None:
            if len(self._workspaces) >= self._MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[n] = _Workspace(n, self.hidden, self.out_dim, self.dtype)
        return ws

    def _check_input(self, x, name, width):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"{name}: expected shape (N, {width}), got {x.shape}")
        if x.dtype != self.dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.dtype)
        return x

    def forward(self, x: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """Outputs (N, out_dim) for inputs x (N, in_dim), keeping what `backward` needs.

        The result goes to `out` when given (C-contiguous, (N, out_dim), the MLP's dtype), else
        to a new array. `x` is kept by reference until the next call: don't modify it in between.
        """
        x = self._check_input(x, "x", self.in_dim)
        n = x.shape[0]
        ws = self._workspace(n)
        if out is None:
            out = np.empty((n, self.out_dim), self.dtype)
        elif out.shape != (n, self.out_dim) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous {self.dtype} array of shape "
                             f"{(n, self.out_dim)}, got {out.dtype} {out.shape}")
        h = x
        for i in range(len(self.hidden)):
            z = ws.z[i]
            np.matmul(h, self.weights[i], out=z)
            np.add(z, self.biases[i], out=z)
            h = self._act.forward(z, ws.a[i])
        np.matmul(h, self.weights[-1], out=out)
        np.add(out, self.biases[-1], out=out)
        self._x, self._ws = x, ws
        return out

    __call__ = forward

    def backward(self, grad_out: npt.ArrayLike, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate dL/d(output) (N, out_dim) through the last `forward`.

        Overwrites `grads` (not accumulated) and returns dL/dx (N, in_dim), or None when
        `input_grad` is False (saves one matrix product in training).
        """
        if self._ws is None or self._x is None:
            raise RuntimeError("backward called before forward")
        x, ws = self._x, self._ws
        n = x.shape[0]
        g = self._check_input(grad_out, "grad_out", self.out_dim)
        if g.shape[0] != n:
            raise ValueError(f"grad_out: expected shape ({n}, {self.out_dim}), got {g.shape}")
        for i in range(self.num_layers - 1, -1, -1):
            h = x if i == 0 else ws.a[i - 1]
            np.matmul(h.T, g, out=self.grads[2 * i])
            np.matmul(ws.ones, g, out=self.grads[2 * i + 1])
            if i > 0:
                gh = ws.g[i - 1]
                np.matmul(g, self.weights[i].T, out=gh)
                g = self._act.backward(ws.z[i - 1], ws.a[i - 1], gh)
        if not input_grad:
            return None
        return np.matmul(g, self.weights[0].T)

    def jvp(self, tangent: npt.ArrayLike) -> np.ndarray:
        """Forward-mode derivative of the last `forward`'s outputs along a parameter direction.

        `tangent` is laid out like `flat_params`; returns d(output)/d(params) · tangent, shape
        (N, out_dim). With `backward` (the transposed product) it gives J^T M J v products
        without building the Jacobian, e.g. Fisher-vector products for natural gradients.
        """
        if self._ws is None or self._x is None:
            raise RuntimeError("jvp called before forward")
        t = np.asarray(tangent)
        if t.shape != self.flat_params.shape:
            raise ValueError(f"tangent: expected shape {self.flat_params.shape}, got {t.shape}")
        t = np.ascontiguousarray(t, dtype=self.dtype)
        x, ws = self._x, self._ws
        dw: list[np.ndarray] = []
        db: list[np.ndarray] = []
        start = 0
        for p in self.params:  # views of `t` shaped like the parameters
            stop = start + p.size
            (dw if p.ndim == 2 else db).append(t[start:stop].reshape(p.shape))
            start = stop
        dh: np.ndarray | None = None  # tangent of the layer input; the network input x has none
        for i in range(self.num_layers):
            h = x if i == 0 else ws.a[i - 1]
            dz = h @ dw[i]
            if dh is not None:
                dz += dh @ self.weights[i]
            dz += db[i]
            if i == self.num_layers - 1:
                return dz
            dh = self._act.backward(ws.z[i], ws.a[i], dz)  # f'(z) * dz, in place
        raise AssertionError("unreachable: the output layer returns")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters keyed "W0", "b0", "W1", ..."""
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"W{i}"] = w.copy()
            out[f"b{i}"] = b.copy()
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy parameters in place (arrays keep their identity); shapes must match exactly."""
        expected = {f"{k}{i}" for i in range(self.num_layers) for k in "Wb"}
        if set(state) != expected:
            raise ValueError(f"state: expected keys {sorted(expected)}, got {sorted(state)}")
        new = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            for key, dst in ((f"W{i}", w), (f"b{i}", b)):
                src = np.asarray(state[key])
                if src.shape != dst.shape:
                    raise ValueError(f"state[{key!r}]: expected shape {dst.shape}, got {src.shape}")
                if src.dtype.kind not in "fiu" or not np.isfinite(src).all():
                    raise ValueError(f"state[{key!r}]: expected finite numbers")
                new.append((dst, src))
        for dst, src in new:  # only after every check, so a bad dict changes nothing
            dst[...] = src


def _tiling_base(arrays):
    """The 1-D array that `arrays` (C-contiguous views) tile exactly, in order; else None."""
    base = arrays[0].base if arrays else None
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    addr = base.ctypes.data
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.ctypes.data != addr:
            return None
        addr += a.nbytes
    return base if addr == base.ctypes.data + base.nbytes else None


class _Optimizer:
    def __init__(self, params: Iterable[np.ndarray], lr: float) -> None:
        params = list(params)
        if not params:
            raise ValueError("params: expected a non-empty list of arrays")
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.c_contiguous:
                raise ValueError(f"params[{i}]: expected a C-contiguous float array")
            if not p.flags.writeable:
                raise ValueError(f"params[{i}]: array is read-only")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.params = params
        self.lr = float(lr)
        self._dtype = params[0].dtype
        base = _tiling_base(params)
        # One fused pass over the flat vector when params tile it (as an MLP's do).
        self._fused = base is not None
        self._targets = [base] if self._fused else params

    def _state(self) -> list[np.ndarray]:
        return [np.zeros_like(t) for t in self._targets]

    def _grad_targets(self, grads: Iterable[np.ndarray]) -> list[np.ndarray]:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"grads: expected {len(self.params)} arrays, got {len(grads)}")
        for i, (g, p) in enumerate(zip(grads, self.params)):
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}]: expected shape {p.shape}, got {g.shape}")
        if self._fused:
            base = _tiling_base(grads)
            if base is not None and base.dtype == self._dtype:
                return [base]
            return [np.concatenate([np.asarray(g, self._dtype).ravel() for g in grads])]
        return [np.ascontiguousarray(g, self._dtype).reshape(-1) for g in grads]


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015) with optional L2 weight decay added to the gradient, as in
    torch.optim.Adam: one number, or one per array of `params` (e.g. per layer, as PETS).
    `step(grads)` updates `params` in place."""

    def __init__(self, params: Iterable[np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float | Sequence[float] = 0.0) -> None:
        super().__init__(params, lr)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        if isinstance(weight_decay, (int, float, np.number)):
            decays = [float(weight_decay)] * len(self.params)
        else:
            decays = [float(d) for d in weight_decay]
            if len(decays) != len(self.params):
                raise ValueError(f"weight_decay: expected one number or {len(self.params)} "
                                 f"(one per array), got {len(decays)}")
        if not all(np.isfinite(d) and d >= 0 for d in decays):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.betas, self.eps = (b1, b2), float(eps)
        #: a float, or a tuple of one per array when they differ
        self.weight_decay: float | tuple[float, ...] = (
            float(decays[0]) if len(set(decays)) == 1 else tuple(float(d) for d in decays))
        # (start, stop, decay) of each run of equal decays in a fused target
        self._runs = [(0, self._targets[0].size, float(decays[0]))] if self._fused else []
        if self._fused and isinstance(self.weight_decay, tuple):
            self._runs, start = [], 0
            for p, d in zip(self.params, self.weight_decay):
                self._runs.append((start, start + p.size, d))
                start += p.size
        self.t = 0
        self.m = self._state()
        self.v = self._state()

    def decay_of(self, i: int) -> float:
        """The weight decay of params[i]."""
        wd = self.weight_decay
        return wd[i] if isinstance(wd, tuple) else wd

    def step(self, grads: Iterable[np.ndarray]) -> None:
        gs = self._grad_targets(grads)
        self.t += 1
        b1, b2 = self.betas
        bc1 = 1.0 - b1 ** self.t
        bc2 = np.sqrt(1.0 - b2 ** self.t)
        f = self._dtype.type
        # p -= lr/bc1 * m / (sqrt(v)/bc2 + eps), rewritten to keep the loop free of divisions
        # by the corrections: p -= (lr*bc2/bc1) * m / (sqrt(v) + eps*bc2).
        lr_t, eps_t = f(self.lr * bc2 / bc1), f(self.eps * bc2)
        if self._fused:
            p, g, m, v = _flat(self._targets[0]), gs[0], _flat(self.m[0]), _flat(self.v[0])
            for a, b, d in self._runs:
                _k.adam_update(p[a:b], g[a:b], m[a:b], v[a:b], lr_t, f(b1), f(b2), eps_t, f(d))
            return
        for i, (p, g, m, v) in enumerate(zip(self._targets, gs, self.m, self.v)):
            _k.adam_update(_flat(p), g, _flat(m), _flat(v), lr_t, f(b1), f(b2), eps_t,
                           f(self.decay_of(i)))


class SGD(_Optimizer):
    """Stochastic gradient descent with optional (heavy-ball) momentum."""

    def __init__(self, params: Iterable[np.ndarray], lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.buf = self._state()

    def step(self, grads: Iterable[np.ndarray]) -> None:
        gs = self._grad_targets(grads)
        f = self._dtype.type
        for p, g, b in zip(self._targets, gs, self.buf):
            _k.sgd_update(_flat(p), g, _flat(b), f(self.lr), f(self.momentum))


class GaussianHead:
    """A mean and bounded log-variance on top of an MLP with 2 O outputs (PETS, Chua et al.
    2018): outputs [:O] are the mean, [O:] a raw log-variance v, bounded softly as
    lv = lo + softplus(hi' - lo) with hi' = hi - softplus(hi - v). The bounds `bounds`
    ((2, O): row 0 the upper, row 1 the lower) are learned with the network, under the penalty
    `penalty` * (sum(upper) - sum(lower)) that keeps them from widening. The loss is the mean
    over rows and outputs of 0.5 ((mean - y)^2 / exp(lv) + lv) (the Gaussian NLL without its
    constant)."""

    def __init__(self, out_dim: int, dtype: npt.DTypeLike = np.float32, max_logvar: float = 0.5,
                 min_logvar: float = -10.0, penalty: float = 0.01) -> None:
        self.out_dim = check_positive_int(out_dim, "out_dim")
        if not (np.isfinite(max_logvar) and np.isfinite(min_logvar) and min_logvar < max_logvar):
            raise ValueError(f"min_logvar, max_logvar: expected finite numbers with min < max, "
                             f"got {min_logvar!r}, {max_logvar!r}")
        if not (np.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"penalty: expected a non-negative number, got {penalty!r}")
        self.dtype = _check_dtype(dtype)
        self.bounds = np.empty((2, self.out_dim), self.dtype)
        self.bounds[0], self.bounds[1] = max_logvar, min_logvar
        self.grad = np.zeros_like(self.bounds)
        self.penalty = float(penalty)

    def logvar(self, v: np.ndarray) -> np.ndarray:
        """The bounded log-variance of raw outputs v (N, O)."""
        hi, lo = self.bounds
        upper = hi - np.logaddexp(0, hi - v)
        return lo + np.logaddexp(0, upper - lo)

    def loss_grad(self, out: np.ndarray, y: np.ndarray, grad_out: np.ndarray) -> float:
        """The mean NLL of outputs `out` (N, 2 O) for targets y (N, O); writes dNLL/dout into
        `grad_out` (N, 2 O) and d(NLL + penalty)/dbounds into `grad`."""
        o = self.out_dim
        hi, lo = self.bounds
        v = out[:, o:]
        upper = hi - np.logaddexp(0, hi - v)
        lv = lo + np.logaddexp(0, upper - lo)
        iv = np.exp(-lv)
        d = out[:, :o] - y
        e = d * d * iv
        scale = 1.0 / e.size
        s1 = 0.5 + 0.5 * np.tanh(0.5 * (hi - v))  # d upper / d v
        s2 = 0.5 + 0.5 * np.tanh(0.5 * (upper - lo))  # d lv / d upper
        glv = 0.5 * (1 - e) * scale
        grad_out[:, :o] = d * iv * scale
        grad_out[:, o:] = glv * s2 * s1
        self.grad[0] = (glv * s2 * (1 - s1)).sum(axis=0) + self.penalty
        self.grad[1] = (glv * (1 - s2)).sum(axis=0) - self.penalty
        return float(0.5 * (e + lv).mean())

    def bound_penalty(self) -> float:
        return self.penalty * float(self.bounds[0].sum() - self.bounds[1].sum())


class _TileTrainer:
    """Float32 MLPs of one architecture trained together by ``kernels.train`` (one epoch per
    call). Parameters and Adam moments are copied into the kernel's padded layout at the start
    of an epoch and back at its end, so the networks and optimizers stay the source of truth."""

    def __init__(self, nets, batch_size: int, spec, gaussian: bool = False):
        net = nets[0]
        self.architecture = _architecture(net)
        self.layout = lay = _kt.Layout((net.in_dim, *net.hidden, net.out_dim), batch_size, spec)
        b = len(nets)
        f = np.float32
        self.pp, self.gp = np.zeros((b, lay.n_params), f), np.zeros((b, lay.n_params), f)
        self.mp, self.vp = np.zeros((b, lay.n_params), f), np.zeros((b, lay.n_params), f)
        self.wt = np.zeros((b, lay.n_wt), f)
        self.ws = np.zeros((b, lay.n_ws), f)
        self.losses = np.zeros(b, np.float64)
        blocks = -(-batch_size // spec.chunk_rows)
        self.block_loss = np.zeros((b, blocks), np.float64)
        self.kernel = _kt.epoch_kernel(spec)
        self.act_code = _DENSE_ACT[net.activation]
        self.wd = np.zeros((net.num_layers, 2), f)
        self.gaussian = gaussian
        o = net.out_dim // 2 if gaussian else 0  # the head's bounds and their Adam state
        hb = b if gaussian else 0
        self.bounds, self.bm, self.bv = (np.zeros((hb, 2, o), f) for _ in range(3))
        self.bg = np.zeros((hb, 2, o), f)
        self.bgrad = np.zeros((hb, blocks, 2, o), np.float64)

    def fits(self, nets, batch_size, spec, gaussian=False) -> bool:
        return (batch_size == self.layout.batch and len(nets) == self.pp.shape[0]
                and spec == self.layout.spec and gaussian == self.gaussian
                and all(_architecture(n) == self.architecture for n in nets))

    def _copy(self, nets, opts, to_kernel: bool):
        lay = self.layout
        for b, (net, opt) in enumerate(zip(nets, opts)):
            rows = ((self.pp[b], net.params), (self.mp[b], _shaped(opt.m[0], net)),
                    (self.vp[b], _shaped(opt.v[0], net)))
            for padded, params in rows:
                for i in range(net.num_layers):
                    pairs = ((lay.weight_view(padded, i), params[2 * i]),
                             (lay.bias_view(padded, i), params[2 * i + 1]))
                    for kernel_side, net_side in pairs:
                        if to_kernel:
                            kernel_side[...] = net_side
                        else:
                            net_side[...] = kernel_side
            if to_kernel:
                for i in range(1, net.num_layers):
                    lay.transpose_view(self.wt[b], i)[...] = net.weights[i].T

    def epoch(self, nets, opts, x, y, order, noise, heads=None, head_opts=None) -> np.ndarray:
        """One epoch; `order` (B, n) rows of x/y per member and step, `noise` (B, n, in) or
        (0, 0, 0); `heads`/`head_opts` the members' GaussianHeads and their bounds' Adams.
        Returns each member's mean loss (NaN where it became non-finite)."""
        self._copy(nets, opts, True)
        opt = opts[0]
        for i in range(nets[0].num_layers):
            self.wd[i] = opt.decay_of(2 * i), opt.decay_of(2 * i + 1)
        if self.gaussian:
            for m, (head, ho) in enumerate(zip(heads, head_opts)):
                self.bounds[m], self.bm[m], self.bv[m] = head.bounds, ho.m[0], ho.v[0]
        penalty = heads[0].penalty if self.gaussian else 0.0
        b1, b2 = opt.betas
        lay = self.layout
        steps = self.kernel(x, y, order, noise, lay.batch, self.act_code, lay.layers,
                            lay.gstart, lay.gcount, lay.ublocks, self.pp, self.gp, self.mp,
                            self.vp, self.wt, self.ws, lay.zero, opt.lr, b1, b2, opt.eps,
                            self.wd, opt.t, self.losses, self.block_loss, self.bounds, self.bm,
                            self.bv, self.bgrad, self.bg, penalty)
        self._copy(nets, opts, False)
        for o in opts:
            o.t += int(steps)
        if self.gaussian:
            for m, (head, ho) in enumerate(zip(heads, head_opts)):
                head.bounds[...], ho.m[0][...], ho.v[0][...] = (
                    self.bounds[m], self.bm[m], self.bv[m])
                ho.t += int(steps)
        return self.losses.copy()


def _architecture(net):
    return (getattr(net, "in_dim", None), getattr(net, "hidden", None),
            getattr(net, "out_dim", None), getattr(net, "activation", None))


def _shaped(flat, net):
    """Views of a flat vector laid out like `net.flat_params`, shaped like `net.params`."""
    out, start = [], 0
    for p in net.params:
        out.append(flat[start: start + p.size].reshape(p.shape))
        start += p.size
    return out


def _tile_trainable(nets, opts, heads=None, head_opts=None) -> bool:
    """Whether the tile kernel can train these: float32 MLPs of one architecture, each with a
    fused Adam over its own parameters, all with the same settings (and, with heads, float32
    heads of one penalty whose bounds' Adams share them, without weight decay)."""
    first, shape = opts[0], _architecture(nets[0])
    settings = (first.lr, first.betas, first.eps, first.t)
    if heads is not None and not all(
            h.dtype == np.float32 and h.penalty == heads[0].penalty and type(o) is Adam
            and len(o.params) == 1 and o.params[0] is h.bounds and o.weight_decay == 0
            and (o.lr, o.betas, o.eps, o.t) == settings for h, o in zip(heads, head_opts)):
        return False
    return all(
        isinstance(n, MLP) and n.dtype == np.float32 and _architecture(n) == shape
        and type(o) is Adam and o._fused and o._targets[0] is n.flat_params
        and (o.lr, o.betas, o.eps, o.t) == settings and o.weight_decay == first.weight_decay
        for n, o in zip(nets, opts))


def train_mse_epochs(nets: Sequence[MLP], optimizers: Sequence[Adam | SGD], x: np.ndarray,
                     y: np.ndarray, batch_size: int, rng: np.random.Generator,
                     input_noise: float = 0.0, rows: Sequence[np.ndarray] | None = None,
                     isa: str | _isa.Spec | None = None,
                     heads: Sequence[GaussianHead] | None = None,
                     head_optimizers: Sequence[Adam] | None = None) -> np.ndarray:
    """One epoch of minibatch Adam on the MSE for each of `nets`, trained together; with
    `heads` (a GaussianHead per network, whose outputs are then 2 O for O columns of y, and an
    Adam over each head's `bounds`, with the network's settings) on the Gaussian NLL instead.

    Member m visits the rows `rows[m]` of x/y (default: every row; e.g. a bootstrap resample)
    once, in a shuffled order; per member, the permutation and then its input noise (std
    `input_noise`) are drawn from `rng`, members in order. Float32 networks with fused Adam
    optimizers train in one parallel kernel (``kernels.train``, for the instruction-set spec
    `isa`, default the current one), the others one by one in NumPy.
    Returns (B,) mean losses over each epoch's batches (measured before each update; the NLL
    without the bounds' penalty); NaN for a member whose loss became non-finite, whose epoch
    stopped there.
    """
    nets, optimizers = list(nets), list(optimizers)
    if len(nets) != len(optimizers) or not nets:
        raise ValueError("nets and optimizers: expected lists of the same, non-zero length")
    batch_size = check_positive_int(batch_size, "batch_size")
    b, net = len(nets), nets[0]
    gaussian = heads is not None
    if gaussian:
        heads, head_optimizers = list(heads), list(head_optimizers or [])  # type: ignore[arg-type]
        if len(heads) != b or len(head_optimizers) != b:
            raise ValueError(f"heads and head_optimizers: expected {b} of each")
    y_dim = net.out_dim // 2 if gaussian else net.out_dim
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != net.in_dim or y.shape != (x.shape[0], y_dim):
        raise ValueError(f"x, y: expected (N, {net.in_dim}) and (N, {y_dim}), got "
                         f"{x.shape} and {y.shape}")
    if rows is not None:
        rows = np.asarray(rows)
        if (rows.ndim != 2 or rows.shape[0] != b or rows.dtype.kind not in "iu"
                or (rows.size and (rows.min() < 0 or rows.max() >= x.shape[0]))):
            raise ValueError(f"rows: expected {b} equally long lists of row indices in "
                             f"[0, {x.shape[0]}), got shape {rows.shape} {rows.dtype}")
    n = x.shape[0] if rows is None else rows.shape[1]
    if n == 0:
        raise ValueError("x: no rows to train on")
    check_bytes(f"train_mse_epochs({b} networks, {n} rows)",
                {"row orders (networks x rows)": array_bytes(b, n, itemsize=8),
                 "input noise (networks x rows x inputs)":
                     array_bytes(b, n, net.in_dim) if input_noise > 0 else 0})
    if not _tile_trainable(nets, optimizers, heads, head_optimizers):
        out = np.empty(b)
        for m, (net, opt) in enumerate(zip(nets, optimizers)):
            xm, ym = (x, y) if rows is None else (x[rows[m]], y[rows[m]])
            head = (heads[m], head_optimizers[m]) if gaussian else None  # type: ignore[index]
            out[m] = _numpy_mse_epoch(net, opt, xm, ym, batch_size, rng, input_noise, head)
        return out
    order = np.empty((b, n), np.int64)
    noise = np.empty((b, n, net.in_dim) if input_noise > 0 else (0, 0, 0), np.float32)
    for m in range(b):
        perm = rng.permutation(n)
        order[m] = perm if rows is None else rows[m][perm]
        if input_noise > 0:
            rng.standard_normal(out=noise[m], dtype=np.float32)
            noise[m] *= np.float32(input_noise)
    x = np.ascontiguousarray(x, np.float32)
    y = np.ascontiguousarray(y, np.float32)
    spec = _isa.get_spec(isa)
    trainer: _TileTrainer | None = getattr(net, "_tile_trainer", None)
    if trainer is None or not trainer.fits(nets, batch_size, spec, gaussian):
        trainer = _TileTrainer(nets, batch_size, spec, gaussian)
        net._tile_trainer = trainer  # type: ignore[attr-defined]  # cached on the net it fits
    return trainer.epoch(nets, optimizers, x, y, order, noise, heads, head_optimizers)


def train_mse_epoch(net: MLP, optimizer: Adam | SGD, x: np.ndarray, y: np.ndarray, batch_size: int,
                    rng: np.random.Generator, input_noise: float = 0.0) -> float:
    """One epoch of minibatch updates of `net` on the mean squared error of net(x) against y
    (`train_mse_epochs` with one network). Rows are visited once in a shuffled order (the last
    batch may be smaller); optional Gaussian noise of std `input_noise` is added to the inputs
    (Nagabandi et al. 2018 use 0.01). Returns the mean loss over the epoch's batches (measured
    before each update), or NaN as soon as a batch loss is not finite."""
    return float(train_mse_epochs([net], [optimizer], x, y, batch_size, rng, input_noise)[0])


def _numpy_mse_epoch(net: MLP, optimizer: Adam | SGD, x: np.ndarray, y: np.ndarray, batch_size: int,
                     rng: np.random.Generator, input_noise: float = 0.0,
                     head: tuple[GaussianHead, Adam] | None = None) -> float:
    """`train_mse_epoch` for any network and optimizer, by `forward`/`backward`/`step`.

    x (N, in_dim) and y (N, out_dim) must already have the network's dtype. Rows are visited
    once in a shuffled order (the last batch may be smaller); minibatches are gathered into
    buffers allocated once per call. Optional Gaussian noise of std `input_noise` is added to
    the inputs (Nagabandi et al. 2018 use 0.01). Returns the mean loss over the epoch's
    batches (measured before each update), or NaN as soon as a batch loss is not finite.
    `head`: a GaussianHead and its bounds' optimizer, for the NLL instead of the MSE.
    """
    n = x.shape[0]
    dt = net.dtype.type
    xb = np.empty((min(batch_size, n), net.in_dim), net.dtype)
    yb = np.empty((xb.shape[0], y.shape[1]), net.dtype)
    ob = np.empty((xb.shape[0], net.out_dim), net.dtype)
    gb = np.empty_like(ob) if head is not None else None
    noise = np.empty_like(xb) if input_noise > 0 else None
    order = rng.permutation(n)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        m = idx.size
        xm, ym, om = xb[:m], yb[:m], ob[:m]  # leading rows: still C-contiguous
        np.take(x, idx, axis=0, out=xm)
        np.take(y, idx, axis=0, out=ym)
        if noise is not None:
            rng.standard_normal(out=noise[:m], dtype=net.dtype)
            np.multiply(noise[:m], dt(input_noise), out=noise[:m])
            np.add(xm, noise[:m], out=xm)
        net.forward(xm, out=om)
        if head is not None:
            loss = head[0].loss_grad(om, ym, gb[:m])  # type: ignore[index]
            if not np.isfinite(loss):
                return float("nan")
            total += loss * m
            net.backward(gb[:m], input_grad=False)  # type: ignore[index]
            optimizer.step(net.grads)
            head[1].step([head[0].grad])
            continue
        np.subtract(om, ym, out=om)
        flat = om.reshape(-1)
        loss = float(np.dot(flat, flat)) / flat.size
        if not np.isfinite(loss):
            return float("nan")
        total += loss * m
        np.multiply(om, dt(2.0 / flat.size), out=om)
        net.backward(om, input_grad=False)
        optimizer.step(net.grads)
    return total / n
