"""`fastmbrl bench train`: training throughput of the dynamics MLP (samples per second).

One epoch of minibatch Adam on the MSE (the exact code path of DynamicsModel.fit: the tile
kernel of kernels/train.py), timed next to a plain NumPy manual-backprop loop (new arrays every
step, unfused Adam, BLAS matrix products) run on the same data in the same process. Ensemble
configurations train their members together on bootstrap resamples, as DynamicsModel.fit does;
their samples count member-rows (an epoch of 5 members over N rows is 5 N samples), and the
NumPy reference trains the members one after another. Figures are medians over repeats.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.models.mlp import MLP, Adam, train_mse_epochs
from .common import blas_info, machine, machine_line, sgemm_gflops


@dataclass(frozen=True)
class Config:
    obs_dim: int
    act_dim: int
    hidden: tuple
    activation: str
    batch_size: int = 256
    members: int = 1


CONFIGS = {
    "pendulum_small": Config(3, 1, (64, 64), "relu"),
    "cheetah": Config(17, 6, (200, 200), "relu"),
    "cheetah_deep": Config(17, 6, (200,) * 4, "silu"),
    "cheetah_ens5": Config(17, 6, (200, 200), "relu", members=5),
}


def make_data(cfg: Config, samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, cfg.obs_dim + cfg.act_dim), dtype=np.float32)
    y = rng.standard_normal((samples, cfg.obs_dim), dtype=np.float32)
    return x, y


def fastmbrl_epoch(cfg: Config, x, y, seed: int = 0):
    """A callable running one training epoch of fresh networks on (x, y)."""
    nets = [MLP(x.shape[1], y.shape[1], cfg.hidden, cfg.activation, rng=seed + m)
            for m in range(cfg.members)]
    opts = [Adam(net.params, lr=1e-3) for net in nets]
    rng = np.random.default_rng(seed)
    rows = (None if cfg.members == 1 else
            rng.integers(0, x.shape[0], (cfg.members, x.shape[0])))
    return lambda: train_mse_epochs(nets, opts, x, y, cfg.batch_size, rng, rows=rows)


_NP_ACT = {
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
    "silu": (lambda z: z / (1 + np.exp(-z)),
             lambda z, a: (s := 1 / (1 + np.exp(-z))) + a * (1 - s)),
}


def numpy_epoch(cfg: Config, x, y, seed: int = 0):
    """The reference: the same epoch written the obvious NumPy way (members in turn)."""
    if cfg.members > 1:
        one = replace(cfg, members=1)
        runs = [numpy_epoch(one, x, y, seed + m) for m in range(cfg.members)]
        return lambda: [run() for run in runs]
    rng = np.random.default_rng(seed)
    sizes = (x.shape[1], *cfg.hidden, y.shape[1])
    ws = [rng.uniform(-1, 1, (i, o)).astype(np.float32) / np.sqrt(i) for i, o in zip(sizes, sizes[1:])]
    bs = [np.zeros(o, np.float32) for o in sizes[1:]]
    params = [p for pair in zip(ws, bs) for p in pair]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    f, df = _NP_ACT[cfg.activation]
    state = {"t": 0}

    def epoch():
        order = rng.permutation(len(x))
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            xb, yb = x[idx], y[idx]
            zs, hs = [], [xb]
            for w, b in zip(ws[:-1], bs[:-1]):
                zs.append(hs[-1] @ w + b)
                hs.append(f(zs[-1]))
            g = 2 * (hs[-1] @ ws[-1] + bs[-1] - yb) / yb.size
            grads = []
            for i in range(len(ws) - 1, -1, -1):
                grads[:0] = [hs[i].T @ g, g.sum(0)]
                if i:
                    g = (g @ ws[i].T) * df(zs[i - 1], hs[i])
            state["t"] += 1
            t = state["t"]
            for p, gr, mi, vi in zip(params, grads, m, v):
                mi[...] = 0.9 * mi + 0.1 * gr
                vi[...] = 0.999 * vi + 0.001 * gr * gr
                p -= 1e-3 * (mi / (1 - 0.9 ** t)) / (np.sqrt(vi / (1 - 0.999 ** t)) + 1e-8)

    return epoch


def _median_rate(run, samples: int, repeats: int) -> float:
    run()  # warm-up: numba compilation, workspaces, BLAS threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return samples / float(np.median(times))


def measure(name: str, samples: int = 25_600, repeats: int = 5, reference: bool = True) -> dict:
    cfg = CONFIGS[name]
    x, y = make_data(cfg, samples)
    rows = samples * cfg.members
    row = {"config": name, "obs_dim": cfg.obs_dim, "act_dim": cfg.act_dim,
           "hidden": list(cfg.hidden), "activation": cfg.activation, "batch_size": cfg.batch_size,
           "members": cfg.members, "samples": samples, "repeats": repeats,
           "samples_per_s": _median_rate(fastmbrl_epoch(cfg, x, y), rows, repeats)}
    if reference:
        row["numpy_samples_per_s"] = _median_rate(numpy_epoch(cfg, x, y), rows, repeats)
        row["speedup_vs_numpy"] = row["samples_per_s"] / row["numpy_samples_per_s"]
    row["blas"] = blas_info()
    row.update(machine())
    return row


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--samples", type=int, default=25_600, help="rows per epoch (default 25600)")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs; the median is reported")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain NumPy reference")


def run(args) -> int:
    samples = check_positive_int(args.samples, "--samples")
    repeats = check_positive_int(args.repeats, "--repeats")
    peak = sgemm_gflops()
    if not args.json:
        print(f"{machine_line()}\ntraining throughput, one epoch of minibatch Adam, median of "
              f"{repeats} (NumPy BLAS: {blas_info()}; sgemm now: {peak:.0f} GFLOP/s)")
    for name in args.configs:
        row = measure(name, samples, repeats, reference=not args.no_reference)
        row["sgemm_gflops"] = round(peak, 1)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            ref = ("" if args.no_reference else
                   f"   numpy {row['numpy_samples_per_s'] / 1e6:6.3f} M/s   "
                   f"x{row['speedup_vs_numpy']:.2f}")
            print(f"{name:<15} {row['samples_per_s'] / 1e6:6.3f} M samples/s{ref}", flush=True)
    return 0
