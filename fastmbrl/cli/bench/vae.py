"""`fastmbrl bench vae`: training throughput of World Models' ConvVAE (images per second).

Minibatch Adam steps on random uint8 frames (the exact code path of ConvVAE.fit), timed next to
ConvVAE with its patch copies on every numba thread (kernel_threads=None) and
the same network written the plain NumPy way (patches gathered with sliding_window_view,
scattered back with one slice-add per kernel offset, BLAS matrix products, unfused Adam, new
arrays every step) trained on the same frames in the same process. Figures are medians of the
per-step times.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastmbrl._validate import check_positive_int
from fastmbrl.models.vae import ConvVAE, VAEConfig
from .common import blas_info, machine, machine_line, sgemm_gflops

CONFIGS = {
    "paper": VAEConfig(),
    "tiny": VAEConfig(image_size=16, z_size=4, enc_channels=(4, 8), enc_kernels=(4, 4),
                      dense_size=16, dec_channels=(8, 3), dec_kernels=(6, 6)),
}


# -- the NumPy reference ----------------------------------------------------------------------
def _patches(x, k, s):
    """(N, OH, OW, k, k, C) windows of NHWC `x`, 'valid', stride s (a view)."""
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s].transpose(0, 1, 2, 4, 5, 3)


def _scatter(cols, shape, s):
    """Sum (N, OH, OW, k, k, C) patch values back onto an NHWC image of `shape`."""
    out = np.zeros(shape, cols.dtype)
    _, oh, ow, k, _, _ = cols.shape
    for a in range(k):
        for d in range(k):
            out[:, a:a + s * (oh - 1) + 1:s, d:d + s * (ow - 1) + 1:s] += cols[:, :, :, a, d]
    return out


def numpy_loss_and_grads(p, cfg: VAEConfig, x, eps):
    """(loss, grads) of the VAE with parameters `p` (ConvVAE.state_dict names) on x in [0, 1]."""
    s, zs, n = cfg.stride, cfg.z_size, len(x)
    enc_n, dec_n = len(cfg.enc_channels), len(cfg.dec_channels)
    h, cache = x, []
    for i in range(enc_n):
        w = p[f"enc{i}_w"]
        k = w.shape[0]
        cols = _patches(h, k, s)
        y = np.maximum(cols.reshape(-1, w[..., 0].size) @ w.reshape(-1, w.shape[-1])
                       + p[f"enc{i}_b"], 0)
        cache.append((h, cols, y))
        h = y.reshape(cols.shape[:3] + (w.shape[-1],))
    flat = h.reshape(n, -1)
    head = flat @ p["enc_dense_w"] + p["enc_dense_b"]
    mu, logvar = head[:, :zs], head[:, zs:]
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * eps
    d_in = z @ p["dec_dense_w"] + p["dec_dense_b"]
    h, dcache = d_in.reshape(n, 1, 1, -1), []
    for i in range(dec_n):
        w = p[f"dec{i}_w"]
        ci, k, _, co = w.shape
        cols = (h.reshape(-1, ci) @ w.reshape(ci, -1)).reshape(h.shape[:3] + (k, k, co))
        size = (h.shape[1] - 1) * s + k
        y = _scatter(cols, (n, size, size, co), s) + p[f"dec{i}_b"]
        y = np.maximum(y, 0) if i < dec_n - 1 else 1 / (1 + np.exp(-y))
        dcache.append(h)
        h = y
    diff = h - x
    r = (diff ** 2).sum(axis=(1, 2, 3))
    kl = -0.5 * (1 + logvar - mu ** 2 - sigma ** 2).sum(axis=1)
    floor = cfg.kl_tolerance * zs
    loss = float(np.mean(r + np.maximum(kl, floor)))
    g, grads = 2 * diff / n * h * (1 - h), {}
    for i in range(dec_n - 1, -1, -1):
        w, x_in = p[f"dec{i}_w"], dcache[i]
        ci, k, _, co = w.shape
        dcols = _patches(g, k, s).reshape(-1, k * k * co)
        grads[f"dec{i}_w"] = (x_in.reshape(-1, ci).T @ dcols).reshape(w.shape)
        grads[f"dec{i}_b"] = g.sum(axis=(0, 1, 2))
        g = (dcols @ w.reshape(ci, -1).T).reshape(x_in.shape)
        if i > 0:
            g = g * (x_in > 0)
    g = g.reshape(n, -1)
    grads["dec_dense_w"], grads["dec_dense_b"] = z.T @ g, g.sum(0)
    gz = g @ p["dec_dense_w"].T
    active = (kl > floor)[:, None] / n
    g_head = np.concatenate([gz + active * mu,
                             gz * eps * 0.5 * sigma + active * 0.5 * (sigma ** 2 - 1)], axis=1)
    grads["enc_dense_w"], grads["enc_dense_b"] = flat.T @ g_head, g_head.sum(0)
    g = (g_head @ p["enc_dense_w"].T)
    for i in range(enc_n - 1, -1, -1):
        w = p[f"enc{i}_w"]
        h_in, cols, y = cache[i]
        g = g.reshape(y.shape) * (y > 0)
        grads[f"enc{i}_w"] = (cols.reshape(len(y), -1).T @ g).reshape(w.shape)
        grads[f"enc{i}_b"] = g.sum(0)
        if i > 0:
            dcols = (g @ w.reshape(-1, w.shape[-1]).T).reshape(cols.shape)
            g = _scatter(dcols, h_in.shape, s)
    return loss, grads


class NumpyVAE:
    """The reference trainer: starts from a ConvVAE's weights, Adam written out per array."""

    def __init__(self, vae: ConvVAE, seed: int = 0) -> None:
        self.cfg = vae.config
        self.p = vae.state_dict()
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0
        self.rng = np.random.default_rng(seed)

    def step(self, frames_uint8) -> float:
        x = frames_uint8.astype(np.float32) / 255
        eps = self.rng.standard_normal((len(x), self.cfg.z_size)).astype(np.float32)
        loss, grads = numpy_loss_and_grads(self.p, self.cfg, x, eps)
        self.t += 1
        lr, b1, b2 = self.cfg.lr, 0.9, 0.999
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            self.p[k] = (self.p[k] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
        return loss


# -- timing ------------------------------------------------------------------------------------
def _median_rate(step, batches, batch_size: int) -> float:
    step(batches[0])  # warm-up: numba compilation, workspaces, BLAS threads
    times = []
    for b in batches:
        t0 = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t0)
    return batch_size / float(np.median(times))


def measure(name: str, batch_size: int = 100, steps: int = 10, reference: bool = True) -> dict:
    cfg = CONFIGS[name]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (steps, batch_size, cfg.image_size, cfg.image_size,
                                   cfg.channels), dtype=np.uint8)
    vae = ConvVAE(cfg, seed=0)
    par = ConvVAE(cfg, seed=0, kernel_threads=None)
    row = {"config": name, "batch_size": batch_size, "steps": steps,
           "params": vae.num_params,
           "images_per_s": _median_rate(lambda b: vae.fit(b, 1, batch_size), frames, batch_size),
           # the patch copies on every numba thread too, against BLAS's threads
           "parallel_kernels_images_per_s": _median_rate(lambda b: par.fit(b, 1, batch_size),
                                                         frames, batch_size)}
    if reference:
        ref = NumpyVAE(ConvVAE(cfg, seed=0))
        row["numpy_images_per_s"] = _median_rate(ref.step, frames, batch_size)
        row["speedup_vs_numpy"] = row["images_per_s"] / row["numpy_images_per_s"]
    row["blas"] = blas_info()
    row["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    row.update(machine())
    return row


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["paper"])
    parser.add_argument("--batch-size", type=int, default=100, help="frames per step (default 100)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain NumPy reference")


def run(args) -> int:
    batch = check_positive_int(args.batch_size, "--batch-size")
    steps = check_positive_int(args.steps, "--steps")
    peak = sgemm_gflops()
    if not args.json:
        print(f"{machine_line()}\nVAE training throughput, Adam steps of {batch} frames, median "
              f"of {steps} (NumPy BLAS: {blas_info()}; sgemm now: {peak:.0f} GFLOP/s)")
    for name in args.configs:
        row = measure(name, batch, steps, reference=not args.no_reference)
        row["sgemm_gflops"] = round(peak, 1)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            ref = ("" if args.no_reference else
                   f"   numpy {row['numpy_images_per_s']:7.1f} images/s   "
                   f"x{row['speedup_vs_numpy']:.2f}")
            print(f"{name:<8} {row['images_per_s']:7.1f} images/s (patch copies on every "
                  f"numba thread: {row['parallel_kernels_images_per_s']:.1f}){ref}", flush=True)
    return 0
