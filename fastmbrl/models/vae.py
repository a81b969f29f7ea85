"""The convolutional VAE of World Models (Ha & Schmidhuber 2018), the vision model V.

Encoder: 4x4 stride-2 'valid' convolutions with ReLU (32, 64, 128, 256 channels on 64x64x3
frames), then a dense layer to the mean and log-variance of z (32). Decoder: a dense layer to
1024 units, read as a 1x1x1024 image, then transposed convolutions of 128x5, 64x5, 32x6 (ReLU)
and 3x6 (sigmoid), stride 2, back to 64x64x3. Loss per frame: the sum of squared pixel errors
plus the KL divergence from N(0, I), floored at kl_tolerance * z_size (0.5 * 32 nats in the
paper, so the encoder is not pushed to spend fewer bits than that), averaged over the batch;
Adam at lr 1e-4. 4,348,547 parameters at the default sizes.

Layers are NHWC (kernels/conv.py); the dense layers are MLPs without hidden layers.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, check_finite_float, check_positive_int
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels import conv as _conv
from fastmbrl.kernels import num_threads
from fastmbrl.kernels import nn as _k
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.models.mlp import MLP, Adam

_KIND = "conv_vae"
_VERSION = 1

Progress = Optional[Callable[[int, int], None]]
F = TypeVar("F", bound=Callable[..., Any])


def _ints(value: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(check_positive_int(v, f"{name}[i]") for v in value)
    except TypeError:
        raise ValueError(f"{name}: expected a sequence of positive ints, got {value!r}") from None
    if not out:
        raise ValueError(f"{name}: expected at least one layer")
    return out


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of a ConvVAE; the defaults are the paper's. The last decoder layer's channels are
    the image's channels."""
    image_size: int = 64
    z_size: int = 32
    enc_channels: tuple[int, ...] = (32, 64, 128, 256)
    enc_kernels: tuple[int, ...] = (4, 4, 4, 4)
    dense_size: int = 1024
    dec_channels: tuple[int, ...] = (128, 64, 32, 3)
    dec_kernels: tuple[int, ...] = (5, 5, 6, 6)
    stride: int = 2
    kl_tolerance: float = 0.5
    lr: float = 1e-4

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("image_size", "z_size", "dense_size", "stride"):
            set_(self, name, check_positive_int(getattr(self, name), name))
        for name in ("enc_channels", "enc_kernels", "dec_channels", "dec_kernels"):
            set_(self, name, _ints(getattr(self, name), name))
        if len(self.enc_channels) != len(self.enc_kernels):
            raise ValueError(f"enc_channels and enc_kernels: expected one kernel size per layer, "
                             f"got {len(self.enc_channels)} and {len(self.enc_kernels)}")
        if len(self.dec_channels) != len(self.dec_kernels):
            raise ValueError(f"dec_channels and dec_kernels: expected one kernel size per layer, "
                             f"got {len(self.dec_channels)} and {len(self.dec_kernels)}")
        set_(self, "kl_tolerance", check_finite_float(self.kl_tolerance, "kl_tolerance", low=0))
        set_(self, "lr", check_finite_float(self.lr, "lr", low=0, low_open=True))
        size = self.image_size
        for k in self.enc_kernels:
            if size < k:
                raise ValueError(f"enc_kernels: a {k}x{k} kernel does not fit the {size}x{size} "
                                 f"image left by the layers before it (image_size "
                                 f"{self.image_size})")
            size = _conv.conv_out_size(size, k, self.stride)
        out = 1
        for k in self.dec_kernels:
            out = _conv.conv_transpose_out_size(out, k, self.stride)
        if out != self.image_size:
            raise ValueError(f"dec_kernels: the decoder makes {out}x{out} images from 1x1, not "
                             f"image_size {self.image_size}x{self.image_size}")

    @property
    def channels(self) -> int:
        return self.dec_channels[-1]

    def enc_sizes(self) -> list[int]:
        """Spatial size after each encoder layer."""
        sizes, size = [], self.image_size
        for k in self.enc_kernels:
            size = _conv.conv_out_size(size, k, self.stride)
            sizes.append(size)
        return sizes

    def dec_sizes(self) -> list[int]:
        sizes, size = [], 1
        for k in self.dec_kernels:
            size = _conv.conv_transpose_out_size(size, k, self.stride)
            sizes.append(size)
        return sizes

    @property
    def flat_size(self) -> int:
        return self.enc_sizes()[-1] ** 2 * self.enc_channels[-1]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _work_bytes(cfg: VAEConfig, n: int, itemsize: int) -> dict[str, int]:
    """Bytes of a _Work for batches of `n`, by part."""
    c, enc, cin = cfg.channels, 0, cfg.channels
    cols = 0
    for co, k, s in zip(cfg.enc_channels, cfg.enc_kernels, cfg.enc_sizes()):
        enc += 2 * array_bytes(n, s, s, co, itemsize=itemsize)
        cols += array_bytes(n * s * s, k * k * cin, itemsize=itemsize)
        cin = co
    dec, scratch, size = 0, 0, 1
    for co, k, s in zip(cfg.dec_channels, cfg.dec_kernels, cfg.dec_sizes()):
        dec += 2 * array_bytes(n, s, s, co, itemsize=itemsize)
        scratch = max(scratch, array_bytes(n * size * size, k * k * co, itemsize=itemsize))
        size = s
    return {"frames": array_bytes(n, cfg.image_size, cfg.image_size, c, itemsize=itemsize),
            "activations and their gradients": enc + dec + array_bytes(
                n, 2 * cfg.z_size + 2 * cfg.dense_size, itemsize=itemsize),
            "patch columns": cols + scratch}


class _Work:
    """Activations, gradients and column buffers for one batch size."""

    def __init__(self, cfg: VAEConfig, n: int, dtype: np.dtype) -> None:
        c = cfg.channels
        self.x = np.empty((n, cfg.image_size, cfg.image_size, c), dtype)
        self.enc_a, self.enc_g, self.enc_cols = [], [], []
        size, cin = cfg.image_size, c
        for co, k, s in zip(cfg.enc_channels, cfg.enc_kernels, cfg.enc_sizes()):
            self.enc_a.append(np.empty((n, s, s, co), dtype))
            self.enc_g.append(np.empty((n, s, s, co), dtype))
            self.enc_cols.append(np.empty((n * s * s, k * k * cin), dtype))
            size, cin = s, co
        self.eps = np.empty((n, cfg.z_size), dtype)
        self.z = np.empty((n, cfg.z_size), dtype)
        self.dec_in = np.empty((n, cfg.dense_size), dtype)
        self.dec_g_in = np.empty((n, cfg.dense_size), dtype)
        self.dec_a, self.dec_g, shapes = [], [], []
        size, cin = 1, cfg.dense_size
        for co, k, s in zip(cfg.dec_channels, cfg.dec_kernels, cfg.dec_sizes()):
            self.dec_a.append(np.empty((n, s, s, co), dtype))
            self.dec_g.append(np.empty((n, s, s, co), dtype))
            shapes.append((n * size * size, k * k * co))
            size, cin = s, co
        # a transposed layer's columns are scratch in both passes: one buffer serves them all
        scratch = np.empty(max(r * k for r, k in shapes), dtype)
        self.dec_cols = [scratch[:r * k].reshape(r, k) for r, k in shapes]


def _kernel_threads(method: F) -> F:
    """Run `method` with the model's `kernel_threads` numba threads."""
    @functools.wraps(method)
    def run(self: ConvVAE, *args: Any, **kwargs: Any) -> Any:
        n = self.kernel_threads
        limit = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        n = numba.get_num_threads() if n is None else min(n, limit)
        with num_threads(n):
            return method(self, *args, **kwargs)
    return cast(F, run)


class ConvVAE:
    """World Models' V: `fit(frames)`, `encode(frames) -> (mu, logvar)`, `decode(z)`.

    Frames are NHWC images, uint8 (read as value / 255) or floats in [0, 1]. Parameters: `enc_w[i]`
    (k, k, C_in, C_out) and `enc_b[i]` for the convolutions, `enc_dense` (an MLP from the
    flattened last feature map to [mu | logvar]), `dec_dense` (z to the 1x1 input image) and
    `dec_w[i]` (C_in, k, k, C_out), `dec_b[i]` for the transposed convolutions. Weights start
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (a transposed convolution's fan-in counted as
    C_in k^2 / stride^2, the inputs that reach one output), biases at 0. `seed` seeds the
    initial weights, the minibatch order and the reparameterisation noise.

    `kernel_threads`: numba threads for the patch copies (im2col, col2im), None for numba's
    current count. 1 by default: BLAS runs the matrix products on every core already, and
    numba's and BLAS's thread pools spinning against each other between calls made a training
    step 1.5x slower on 2 cores (measured: docs/architecture.md). Not saved with the model.
    """

    _MAX_WORKSPACES = 2

    def __init__(self, config: VAEConfig | None = None, seed: int = 0,
                 dtype: npt.DTypeLike = np.float32, kernel_threads: int | None = 1,
                 **sizes: Any) -> None:
        if config is not None and sizes:
            raise ValueError("ConvVAE: give either a config or sizes, not both")
        self.config = config if config is not None else VAEConfig(**sizes)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        if kernel_threads is not None:
            kernel_threads = check_positive_int(kernel_threads, "kernel_threads")
        self.kernel_threads = kernel_threads
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {self.dtype}")
        self._f: Any = self.dtype.type  # scalars of the model's dtype keep float32 maths float32
        cfg = self.config
        check_bytes(f"ConvVAE({cfg})", 4 * vae_num_params(cfg) * self.dtype.itemsize,
                    "the channel counts, kernel sizes or dense_size")
        init = np.random.default_rng(self.seed)
        shapes, cin = [], cfg.channels
        for co, k in zip(cfg.enc_channels, cfg.enc_kernels):
            shapes += [(k, k, cin, co), (co,)]
            cin = co
        enc_count = len(shapes)
        cin = cfg.dense_size
        for co, k in zip(cfg.dec_channels, cfg.dec_kernels):
            shapes += [(cin, k, k, co), (co,)]
            cin = co
        total = sum(int(np.prod(s)) for s in shapes)
        self._conv_params = np.zeros(total, self.dtype)
        self._conv_grads = np.zeros(total, self.dtype)
        views, grads, start = [], [], 0
        for shape in shapes:
            stop = start + int(np.prod(shape))
            views.append(self._conv_params[start:stop].reshape(shape))
            grads.append(self._conv_grads[start:stop].reshape(shape))
            start = stop
        self.enc_w, self.enc_b = views[:enc_count:2], views[1:enc_count:2]
        self.dec_w, self.dec_b = views[enc_count::2], views[enc_count + 1::2]
        self._enc_gw, self._enc_gb = grads[:enc_count:2], grads[1:enc_count:2]
        self._dec_gw, self._dec_gb = grads[enc_count::2], grads[enc_count + 1::2]
        for w in self.enc_w:
            bound = 1.0 / np.sqrt(np.prod(w.shape[:3]))
            w[...] = init.uniform(-bound, bound, w.shape)
        for w in self.dec_w:
            bound = 1.0 / np.sqrt(max(np.prod(w.shape[:3]) / cfg.stride ** 2, 1.0))
            w[...] = init.uniform(-bound, bound, w.shape)
        self.enc_dense = MLP(cfg.flat_size, 2 * cfg.z_size, (), dtype=self.dtype, rng=init)
        self.dec_dense = MLP(cfg.z_size, cfg.dense_size, (), dtype=self.dtype, rng=init)
        self.rng = np.random.default_rng([self.seed, 1])
        self.optimizer = Adam(self._groups()[0], lr=cfg.lr)
        self.epochs_done = 0
        self._works: dict[int, _Work] = {}

    def _groups(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return ([self._conv_params, self.enc_dense.flat_params, self.dec_dense.flat_params],
                [self._conv_grads, self.enc_dense.flat_grads, self.dec_dense.flat_grads])

    @property
    def num_params(self) -> int:
        return sum(p.size for p in self._groups()[0])

    def _work(self, n: int) -> _Work:
        work = self._works.get(n)
        if work is None:
            if len(self._works) >= self._MAX_WORKSPACES:
                self._works.pop(next(iter(self._works)))
            check_bytes(f"ConvVAE batches of {n} frames",
                        _work_bytes(self.config, n, self.dtype.itemsize), "batch_size")
            work = self._works[n] = _Work(self.config, n, self.dtype)
        return work

    # -- input -------------------------------------------------------------------------------
    def _check_frames(self, frames: npt.ArrayLike, name: str = "frames") -> np.ndarray:
        frames = np.asarray(frames)
        cfg = self.config
        shape = (cfg.image_size, cfg.image_size, cfg.channels)
        if frames.ndim != 4 or frames.shape[1:] != shape:
            raise ValueError(f"{name}: expected shape (N, {', '.join(map(str, shape))}), got "
                             f"{frames.shape}")
        if frames.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one frame")
        _check_pixels(frames, name)
        return frames

    def _load_batch(self, frames: np.ndarray, idx, out: np.ndarray) -> np.ndarray:
        batch = frames[idx]
        if batch.dtype == np.uint8:
            np.multiply(batch, self._f(1 / 255), out=out)
        else:
            out[...] = batch
        return out

    # -- passes ------------------------------------------------------------------------------
    def _encode(self, w: _Work) -> np.ndarray:
        s = self.config.stride
        h = w.x
        for i, (wt, b) in enumerate(zip(self.enc_w, self.enc_b)):
            a = w.enc_a[i]
            _conv.conv2d_forward(h, wt, b, s, w.enc_cols[i], a)
            flat = a.reshape(-1)
            _k.relu_forward(flat, flat)
            h = a
        return self.enc_dense.forward(h.reshape(len(h), -1))  # [mu | logvar]

    def _decode(self, w: _Work, z: np.ndarray) -> np.ndarray:
        s = self.config.stride
        self.dec_dense.forward(z, out=w.dec_in)
        h = w.dec_in.reshape(len(z), 1, 1, -1)
        last = len(self.dec_w) - 1
        for i, (wt, b) in enumerate(zip(self.dec_w, self.dec_b)):
            a = w.dec_a[i]
            _conv.conv_transpose2d_forward(h, wt, b, s, w.dec_cols[i], a)
            if i < last:
                flat = a.reshape(-1)
                _k.relu_forward(flat, flat)
            else:  # sigmoid(v) = (1 + tanh(v / 2)) / 2, which cannot overflow
                half = self._f(0.5)
                np.multiply(a, half, out=a)
                np.tanh(a, out=a)
                np.multiply(a, half, out=a)
                np.add(a, half, out=a)
            h = a
        return h

    def _loss(self, w: _Work, eps: np.ndarray | None, backward: bool) -> tuple[float, float, float]:
        """Forward (and backward into the gradients) on the batch in `w.x`; `eps` is the
        reparameterisation noise (drawn from `rng` when None). Returns (loss, r_loss, kl_loss)."""
        cfg = self.config
        n, zs = len(w.x), cfg.z_size
        head = self._encode(w)
        mu, logvar = head[:, :zs], head[:, zs:]
        if eps is None:
            w.eps[...] = self.rng.standard_normal(w.eps.shape)
        else:
            w.eps[...] = eps
        sigma = np.exp(0.5 * logvar)
        np.multiply(sigma, w.eps, out=w.z)
        w.z += mu
        y = self._decode(w, w.z)
        diff = y - w.x
        r = np.einsum("nhwc,nhwc->n", diff, diff)
        var = sigma * sigma
        kl = -0.5 * (1 + logvar - mu * mu - var).sum(axis=1)
        floor = cfg.kl_tolerance * zs
        losses = (float(np.mean(r + np.maximum(kl, floor))), float(np.mean(r)),
                  float(np.mean(np.maximum(kl, floor))))
        if not backward:
            return losses
        one = self._f
        # sigmoid output: dL/dv = 2 (y - x) / n * y (1 - y)
        g = w.dec_g[-1]
        np.multiply(diff, one(2.0 / n), out=g)
        g *= y
        g *= 1 - y
        s = cfg.stride
        for i in range(len(self.dec_w) - 1, -1, -1):
            if i > 0:
                x_in, dx = w.dec_a[i - 1], w.dec_g[i - 1]
            else:
                x_in, dx = w.dec_in.reshape(n, 1, 1, -1), w.dec_g_in.reshape(n, 1, 1, -1)
            _conv.conv_transpose2d_backward(w.dec_g[i], x_in, self.dec_w[i], s, w.dec_cols[i],
                                            self._dec_gw[i], self._dec_gb[i], dx)
            if i > 0:
                _k.relu_backward(x_in.reshape(-1), dx.reshape(-1))
        gz = self.dec_dense.backward(w.dec_g_in)
        assert gz is not None
        active = (kl > floor).astype(self.dtype)[:, None] / one(n)
        g_head = np.empty_like(head)
        g_head[:, :zs] = gz + active * mu
        g_head[:, zs:] = gz * w.eps * one(0.5) * sigma + active * one(0.5) * (var - 1)
        gf = self.enc_dense.backward(g_head)
        assert gf is not None
        w.enc_g[-1][...] = gf.reshape(w.enc_g[-1].shape)
        for i in range(len(self.enc_w) - 1, -1, -1):
            g = w.enc_g[i]
            _k.relu_backward(w.enc_a[i].reshape(-1), g.reshape(-1))
            _conv.conv2d_backward(g, w.enc_cols[i], self.enc_w[i], s, self._enc_gw[i],
                                  self._enc_gb[i], w.enc_g[i - 1] if i > 0 else None)
        return losses

    # -- public ------------------------------------------------------------------------------
    @_kernel_threads
    def loss_and_grads(self, frames: npt.ArrayLike, eps: npt.ArrayLike | None = None
                       ) -> tuple[float, list[np.ndarray]]:
        """The batch loss at the current parameters and its gradient (copies, laid out as
        `params()`): for gradient checks. `eps` (N, z_size) fixes the noise."""
        frames = self._check_frames(frames)
        w = self._work(len(frames))
        self._load_batch(frames, slice(None), w.x)
        if eps is not None:
            eps = np.asarray(eps, self.dtype)
            if eps.shape != w.eps.shape:
                raise ValueError(f"eps: expected shape {w.eps.shape}, got {eps.shape}")
        loss = self._loss(w, eps, backward=True)[0]
        return loss, [g.copy() for g in self._groups()[1]]

    def params(self) -> list[np.ndarray]:
        """The parameters as three flat vectors (convolutions, enc_dense, dec_dense): views."""
        return self._groups()[0]

    def init_output_bias(self, frames: npt.ArrayLike, sample: int = 10_000) -> np.ndarray:
        """Start the decoder's last bias at the logit of the frames' mean colour per channel
        (clipped to [0.02, 0.98]), so that the first steps do not push a sigmoid started at
        0.5 into saturation: on a mostly white frame (the pixel Pendulum) that left V at a
        blank output that ignores z (measured). At most `sample` frames, evenly spaced, are
        averaged. Returns the bias (a view)."""
        frames = self._check_frames(frames)
        sample = check_positive_int(sample, "sample")
        pick = frames[::max(1, -(-len(frames) // sample))]
        mean = pick.reshape(-1, pick.shape[-1]).mean(axis=0, dtype=np.float64)
        if frames.dtype == np.uint8:
            mean /= 255
        mean = np.clip(mean, 0.02, 0.98)
        bias = self.dec_b[-1]
        bias[...] = np.log(mean / (1 - mean))
        return bias

    @_kernel_threads
    def fit(self, frames: npt.ArrayLike, epochs: int = 1, batch_size: int = 100,
            progress: Progress = None) -> list[dict[str, float]]:
        """Train on `frames` (N, H, W, C) for `epochs` passes of Adam over shuffled minibatches
        of `batch_size`; as in the paper's code, each epoch uses N // batch_size whole batches.
        `progress(done, total)` is called after every batch. Returns per epoch the mean loss,
        r_loss (reconstruction) and kl_loss (floored KL)."""
        frames = self._check_frames(frames)
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        if len(frames) < batch_size:
            raise ValueError(f"batch_size: {batch_size} is more than the {len(frames)} frames")
        steps = len(frames) // batch_size
        w = self._work(batch_size)
        history = []
        for epoch in range(epochs):
            order = self.rng.permutation(len(frames))
            sums = np.zeros(3)
            for step in range(steps):
                idx = np.sort(order[step * batch_size:(step + 1) * batch_size])
                self._load_batch(frames, idx, w.x)
                sums += self._loss(w, None, backward=True)
                self.optimizer.step(self._groups()[1])
                if progress is not None:
                    progress(epoch * steps + step + 1, epochs * steps)
            self.epochs_done += 1
            loss, r, kl = sums / steps
            if not np.isfinite(loss):
                raise FloatingPointError(f"ConvVAE.fit: the loss diverged in epoch "
                                         f"{self.epochs_done} (lr {self.config.lr})")
            history.append({"loss": float(loss), "r_loss": float(r), "kl_loss": float(kl)})
        return history

    def _chunks(self, n: int, batch_size: int):
        batch_size = check_positive_int(batch_size, "batch_size")
        for start in range(0, n, batch_size):
            yield slice(start, min(start + batch_size, n))

    @_kernel_threads
    def encode(self, frames: npt.ArrayLike, batch_size: int = 100
               ) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar), each (N, z_size), of frames (N, H, W, C)."""
        frames = self._check_frames(frames)
        zs = self.config.z_size
        mu = np.empty((len(frames), zs), self.dtype)
        logvar = np.empty_like(mu)
        for sl in self._chunks(len(frames), batch_size):
            w = self._work(sl.stop - sl.start)
            self._load_batch(frames, sl, w.x)
            head = self._encode(w)
            mu[sl], logvar[sl] = head[:, :zs], head[:, zs:]
        return mu, logvar

    @_kernel_threads
    def decode(self, z: npt.ArrayLike, batch_size: int = 100) -> np.ndarray:
        """Images (N, H, W, C) as floats in [0, 1] for latents z (N, z_size)."""
        z = np.asarray(z)
        zs = self.config.z_size
        if z.ndim != 2 or z.shape[1] != zs or len(z) == 0:
            raise ValueError(f"z: expected shape (N, {zs}) with N >= 1, got {z.shape}")
        if z.dtype.kind not in "fiu" or not np.isfinite(z).all():
            raise ValueError("z: expected finite numbers")
        z = np.ascontiguousarray(z, self.dtype)
        cfg = self.config
        out = np.empty((len(z), cfg.image_size, cfg.image_size, cfg.channels), self.dtype)
        for sl in self._chunks(len(z), batch_size):
            out[sl] = self._decode(self._work(sl.stop - sl.start), z[sl])
        return out

    # -- files -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the weights by the names of docs/formats.md (conv_vae)."""
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.enc_w, self.enc_b)):
            out[f"enc{i}_w"], out[f"enc{i}_b"] = w.copy(), b.copy()
        out["enc_dense_w"] = self.enc_dense.weights[0].copy()
        out["enc_dense_b"] = self.enc_dense.biases[0].copy()
        out["dec_dense_w"] = self.dec_dense.weights[0].copy()
        out["dec_dense_b"] = self.dec_dense.biases[0].copy()
        for i, (w, b) in enumerate(zip(self.dec_w, self.dec_b)):
            out[f"dec{i}_w"], out[f"dec{i}_b"] = w.copy(), b.copy()
        return out

    def _targets(self) -> dict[str, np.ndarray]:
        t: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.enc_w, self.enc_b)):
            t[f"enc{i}_w"], t[f"enc{i}_b"] = w, b
        t["enc_dense_w"], t["enc_dense_b"] = self.enc_dense.weights[0], self.enc_dense.biases[0]
        t["dec_dense_w"], t["dec_dense_b"] = self.dec_dense.weights[0], self.dec_dense.biases[0]
        for i, (w, b) in enumerate(zip(self.dec_w, self.dec_b)):
            t[f"dec{i}_w"], t[f"dec{i}_b"] = w, b
        for j, (m, v) in enumerate(zip(self.optimizer.m, self.optimizer.v)):
            t[f"adam_m{j}"], t[f"adam_v{j}"] = m, v
        return t

    def save(self, path: StrPath) -> Path:
        """Weights, Adam moments and the generator's state in one .npz (kind conv_vae), so
        that `load` then `fit` continues the same run."""
        arrays = {k: np.array(v) for k, v in self._targets().items()}
        header = {"config": self.config.to_json(), "seed": self.seed, "dtype": self.dtype.name,
                  "epochs_done": self.epochs_done, "adam_t": self.optimizer.t,
                  "rng_state": self.rng.bit_generator.state}
        return save_npz(path, _KIND, _VERSION, header, arrays)

    @classmethod
    def load(cls, path: StrPath) -> ConvVAE:
        """Read a file written by `save`; FormatError naming the problem if it is not one."""
        header, arrays = load_npz(path, _KIND, (_VERSION,))
        try:
            cfg = header["config"]
            if not isinstance(cfg, dict):
                raise ValueError("header field 'config' must be an object")
            vae = cls(VAEConfig(**cfg), seed=header["seed"], dtype=np.dtype(header["dtype"]))
            t = header["adam_t"]
            epochs = header["epochs_done"]
            for name, v in (("adam_t", t), ("epochs_done", epochs)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ValueError(f"header field {name!r} must be a non-negative integer")
            targets = vae._targets()
            if set(arrays) != set(targets):
                raise ValueError(f"expected arrays {sorted(targets)}, got {sorted(arrays)}")
            for name, dst in targets.items():
                src = arrays[name]
                if src.shape != dst.shape or src.dtype.kind != "f" or not np.isfinite(src).all():
                    raise ValueError(f"array {name!r}: expected finite floats of shape "
                                     f"{dst.shape}, got {src.dtype} {src.shape}")
                if name.startswith("adam_v") and (src < 0).any():
                    raise ValueError(f"array {name!r}: Adam's second moments must be >= 0")
                dst[...] = src
            vae.rng.bit_generator.state = header["rng_state"]
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: not a valid conv_vae file ({exc})") from None
        vae.optimizer.t, vae.epochs_done = t, epochs
        return vae


def _check_pixels(frames: np.ndarray, name: str) -> None:
    """Frames are uint8, or floats in [0, 1] (checked as given, before any cast)."""
    if frames.dtype != np.uint8:
        if frames.dtype.kind != "f":
            raise ValueError(f"{name}: expected uint8 or floats in [0, 1], got {frames.dtype}")
        if not np.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
            raise ValueError(f"{name}: float values must be finite and in [0, 1]")


class FrameEncoder:
    """V's encoder for acting: one frame at a time to mu, on one thread, the convolutions'
    products on the planners' register tile (kernels/conv.py `frame_encoder_kernel`), in a
    workspace allocated here once. At batch 100 BLAS wins (`ConvVAE.encode`); for one frame its
    threads only wait on each other, which on a busy machine took a frame's latency from 0.6 ms
    to a 99th percentile of 100 ms. Holds a copy of V's weights as they are now: build another
    after V trains. Float32 V only."""

    def __init__(self, vae: ConvVAE, isa: Any = None) -> None:
        from fastmbrl.kernels.dense import pack_panels
        from fastmbrl.kernels.isa import get_spec

        if vae.dtype != np.float32:
            raise ValueError(f"FrameEncoder: V must be float32, got {vae.dtype}")
        spec = get_spec(isa)
        lanes, tile = spec.lanes, spec.tile_rows
        cfg = vae.config
        self.config = cfg
        self.shape = (cfg.image_size, cfg.image_size, cfg.channels)
        self._kernel = _conv.frame_encoder_kernel(spec)
        convs = np.zeros((len(cfg.enc_channels), _conv.CONV_FIELDS), np.int64)
        ws, bs = [], []
        w_off = b_off = 0
        size, cin, cin_ld = cfg.image_size, cfg.channels, cfg.channels
        x_off, end = 0, size * size * cfg.channels  # the frame, then each layer's cols and out
        for layer, (wt, bias) in enumerate(zip(vae.enc_w, vae.enc_b)):
            k = wt.shape[0]
            co = wt.shape[3]
            oh = _conv.conv_out_size(size, k, cfg.stride)
            ld = -(-co // lanes) * lanes  # channels padded to whole panels, zeros
            rows = -(-oh * oh // tile) * tile
            padded = np.zeros((k, k, cin_ld, co), np.float32)
            padded[:, :, :cin] = wt
            pw, pb = pack_panels(padded.reshape(-1, co), bias, lanes)
            kk = k * k * cin_ld
            last = layer == len(cfg.enc_channels) - 1
            out_len = max(rows * ld, tile * oh * oh * ld) if last else rows * ld
            convs[layer] = (x_off, size * cin_ld, k, k, cfg.stride, oh, oh, kk, rows, end,
                            end + rows * kk, ld, w_off, b_off)
            x_off = end + rows * kk
            end = x_off + out_len
            ws.append(pw)
            bs.append(pb)
            w_off += pw.size
            b_off += pb.size
            size, cin, cin_ld = oh, co, ld
        # the head reads the last feature map flat, its channels padded as that layer wrote them
        dense_w = vae.enc_dense.weights[0].reshape(size, size, cin, -1)
        padded = np.zeros((size, size, cin_ld, dense_w.shape[3]), np.float32)
        padded[:, :, :cin] = dense_w
        fan = size * size * cin_ld
        pw, pb = pack_panels(padded.reshape(fan, -1), vae.enc_dense.biases[0], lanes)
        h_ld = pb.size
        self._head = np.array([x_off, fan, end, h_ld, w_off, b_off, cfg.z_size], np.int64)
        ws.append(pw)
        bs.append(pb)
        end += tile * h_ld
        self._convs = convs
        self._w = np.concatenate(ws)
        self._b = np.concatenate(bs)
        self._buf = np.zeros(end, np.float32)  # padding rows and channels stay zero
        self._mu = np.zeros(cfg.z_size, np.float32)

    def encode(self, frame: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """mu (z_size,) float32 of one (size, size, C) frame, uint8 (read as value / 255) or
        floats in [0, 1] (other than float32, copied), into `out` if given (float32,
        contiguous), else into an array this encoder reuses."""
        frame = np.asarray(frame)
        if frame.shape != self.shape:
            raise ValueError(f"frame: expected shape {self.shape}, got {frame.shape}")
        _check_pixels(frame, "frame")
        if frame.dtype == np.uint8:
            scale = np.float32(1 / 255)
        else:
            frame = frame.astype(np.float32, copy=False)
            scale = np.float32(1)
        if out is None:
            out = self._mu
        elif (not isinstance(out, np.ndarray) or out.dtype != np.float32
              or out.shape != self._mu.shape or not out.flags.c_contiguous):
            raise ValueError(f"out: expected a contiguous float32 array of shape "
                             f"{self._mu.shape}")
        self._kernel(frame.reshape(-1), scale, self._convs, self._head, self._buf, self._w,
                     self._b, out)
        return out


def vae_num_params(config: VAEConfig | None = None) -> int:
    """Parameter count of a ConvVAE of `config` (the paper's by default), without building it."""
    cfg = config or VAEConfig()
    total, cin = 0, cfg.channels
    for co, k in zip(cfg.enc_channels, cfg.enc_kernels):
        total += k * k * cin * co + co
        cin = co
    total += (cfg.flat_size + 1) * 2 * cfg.z_size + (cfg.z_size + 1) * cfg.dense_size
    cin = cfg.dense_size
    for co, k in zip(cfg.dec_channels, cfg.dec_kernels):
        total += cin * k * k * co + co
        cin = co
    return total


__all__ = ["ConvVAE", "FrameEncoder", "VAEConfig", "vae_num_params"]
