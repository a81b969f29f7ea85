"""`fastmbrl bench plan`: planning latency of the fused rollout kernel vs vectorised NumPy.

Each configuration builds a random ReLU dynamics model of the given size, a planner, and times
``plan(obs)`` (candidate sampling included); in the same run it times a NumPy implementation of
the same work (batched matmuls over all K candidates per step, float32, the same folded weights).
Figures are medians over `--repeats` plans. `--startup` also measures, in fresh processes, the
time to the first action with a cold and with a warm numba cache.
"""
from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels import FASTMATH
from fastmbrl.kernels.rollout import pack_model
from fastmbrl.planning.planners import CEM, RandomShooting
from . import pets
from .common import blas_info, machine, machine_line, sgemm_gflops, timed

F32 = np.float32


@numba.njit(cache=True, fastmath=FASTMATH)
def pendulum_reward(obs, act, next_obs, out):
    """Pendulum-v1's cost on obs = (cos, sin, velocity) before the step."""
    for i in range(obs.shape[0]):
        theta = np.arctan2(obs[i, 1], obs[i, 0])
        u = min(max(act[i, 0], F32(-2)), F32(2))
        out[i] = -(theta * theta + F32(0.1) * obs[i, 2] * obs[i, 2] + F32(0.001) * u * u)


@numba.njit(cache=True, fastmath=FASTMATH)
def cheetah_reward(obs, act, next_obs, out):
    """HalfCheetah-like: forward velocity (obs[8]) minus 0.1 |a|^2."""
    for i in range(obs.shape[0]):
        cost = F32(0)
        for j in range(act.shape[1]):
            cost += act[i, j] * act[i, j]
        out[i] = next_obs[i, 8] - F32(0.1) * cost


def _pendulum_reward_np(obs, act, next_obs):
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    u = np.clip(act[:, 0], -2, 2)
    return -(theta ** 2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u ** 2)


def _cheetah_reward_np(obs, act, next_obs):
    return next_obs[:, 8] - 0.1 * (act ** 2).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    obs_dim: int
    act_dim: int
    hidden: tuple
    horizon: int
    samples: int  # candidates per plan (random shooting) or per iteration (CEM)
    iterations: int = 1  # CEM iterations; 1 = random shooting
    members: int = 1  # ensemble members; every candidate is scored under each

    @property
    def rewards(self):
        if self.obs_dim == 3:
            return pendulum_reward, _pendulum_reward_np
        return cheetah_reward, _cheetah_reward_np


CONFIGS = {
    c.name: c for c in [
        Config("pendulum_small", 3, 1, (64, 64), 20, 1000),
        Config("cheetah_rs", 17, 6, (200, 200), 30, 1000),
        Config("cheetah_big", 17, 6, (500, 500), 20, 1000),
        Config("cheetah_cem", 17, 6, (200, 200), 30, 500, iterations=5),
        # cheetah_rs's model steps spread over 5 members: the cost of ensemble scoring
        Config("cheetah_ens5", 17, 6, (200, 200), 30, 200, members=5),
        pets.CONFIG,  # 5 probabilistic members, 20 particles, CEM 400 x 5, H = 30, 4 x 200
    ]
}


def random_model(cfg: Config, seed: int = 0):
    """Raw arrays of a random ReLU delta model (the kernel's and NumPy's common input); for an
    ensemble, per-member lists of weights and biases and (B, D) statistics."""
    if cfg.members > 1:
        parts = [random_model(dataclasses.replace(cfg, members=1), seed + 1000 * m)
                 for m in range(cfg.members)]
        return {k: ([p[k] for p in parts] if k in ("weights", "biases")
                    else np.stack([p[k] for p in parts])) for k in parts[0]}
    rng = np.random.default_rng(seed)
    sizes = [cfg.obs_dim + cfg.act_dim, *cfg.hidden, cfg.obs_dim]
    return dict(
        weights=[(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(F32)
                 for a, b in zip(sizes[:-1], sizes[1:])],
        biases=[(0.1 * rng.standard_normal(b)).astype(F32) for b in sizes[1:]],
        input_mean=rng.standard_normal(sizes[0]).astype(F32),
        input_scale=rng.uniform(0.5, 2.0, sizes[0]).astype(F32),
        delta_mean=(0.01 * rng.standard_normal(cfg.obs_dim)).astype(F32),
        delta_std=rng.uniform(0.05, 0.2, cfg.obs_dim).astype(F32),
    )


def make_planner(cfg: Config, model: dict, seed: int = 0):
    packed = pack_model(activation="relu", **model)
    low, high = -np.ones(cfg.act_dim, F32), np.ones(cfg.act_dim, F32)
    kw = dict(horizon=cfg.horizon, action_low=low, action_high=high, seed=seed)
    if cfg.iterations == 1:
        return RandomShooting(packed, cfg.rewards[0], num_samples=cfg.samples, **kw)
    return CEM(packed, cfg.rewards[0], num_samples=cfg.samples, elites=cfg.samples // 10,
               iterations=cfg.iterations, **kw)


class NumpyPlanner:
    """The same planning work in vectorised NumPy: per step one batched matmul chain over K."""

    def __init__(self, cfg: Config, model: dict, seed: int = 0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        if cfg.members == 1:
            model = {k: ([v] if k in ("weights", "biases") else np.asarray(v)[None])
                     for k, v in model.items()}
        self.members = []
        for m in range(cfg.members):
            w = [np.asarray(v, np.float64) for v in model["weights"][m]]
            b = [np.asarray(v, np.float64) for v in model["biases"][m]]
            scale = model["input_scale"][m].astype(np.float64)
            mean = model["input_mean"][m].astype(np.float64)
            b[0] = b[0] - (mean * scale) @ w[0]
            w[0] = scale[:, None] * w[0]
            w[-1] = w[-1] * model["delta_std"][m]
            b[-1] = b[-1] * model["delta_std"][m] + model["delta_mean"][m]
            self.members.append(([v.astype(F32) for v in w], [v.astype(F32) for v in b]))

    def returns(self, obs, actions):
        """Mean over the members of each candidate's return."""
        k, horizon, _ = actions.shape
        total = np.zeros(k, F32)
        reward = self.cfg.rewards[1]
        for weights, biases in self.members:
            state = np.repeat(obs[None], k, axis=0)
            for t in range(horizon):
                h = np.concatenate([state, actions[:, t]], axis=1)
                for i, (w, b) in enumerate(zip(weights, biases)):
                    h = h @ w + b
                    if i < len(weights) - 1:
                        np.maximum(h, 0, out=h)
                nxt = state + h
                total += reward(state, actions[:, t], nxt)
                state = nxt
        return total / F32(len(self.members))

    def plan(self, obs):
        cfg = self.cfg
        shape = (cfg.samples, cfg.horizon, cfg.act_dim)
        if cfg.iterations == 1:
            cand = self.rng.uniform(-1, 1, shape).astype(F32)
            return cand[np.argmax(self.returns(obs, cand))]
        mean = np.zeros(shape[1:], F32)
        std = np.full(shape[1:], 0.5, F32)
        n_elite = cfg.samples // 10
        for _ in range(cfg.iterations):
            cand = np.clip(mean + std * self.rng.standard_normal(shape, dtype=F32), -1, 1)
            elites = cand[np.argsort(self.returns(obs, cand))[-n_elite:]]
            mean = 0.1 * mean + 0.9 * elites.mean(axis=0)
            std = np.sqrt(0.1 * std ** 2 + 0.9 * elites.var(axis=0))
        return mean


def _median_ms(fn, obs, repeats):
    fn(obs)
    times = [timed(lambda: fn(obs)) for _ in range(repeats)]
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def measure(cfg: Config, repeats: int = 20, reference_repeats: int = 5) -> dict:
    """One configuration: kernel planner and NumPy reference, medians in ms."""
    if hasattr(cfg, "measure"):  # a configuration that brings its own (pets)
        return cfg.measure(repeats, reference_repeats, (cheetah_reward, _cheetah_reward_np),
                           _median_ms)
    model = random_model(cfg)
    planner = make_planner(cfg, model)
    obs = np.random.default_rng(1).standard_normal(cfg.obs_dim).astype(F32)
    ms, best_ms = _median_ms(planner.plan, obs, repeats)
    ref_ms, _ = _median_ms(NumpyPlanner(cfg, model).plan, obs, reference_repeats)
    steps = cfg.samples * cfg.horizon * cfg.iterations * cfg.members
    flops = planner.packed.flops_per_step() * steps
    return {
        "config": cfg.name,
        "ms_per_plan": round(ms, 3),
        "min_ms_per_plan": round(best_ms, 3),
        "model_steps_per_s": round(steps / ms * 1e3),
        "gflops": round(flops / ms / 1e6, 1),
        "reference_ms_per_plan": round(ref_ms, 3),
        "speedup": round(ref_ms / ms, 2),
        **machine(),
    }


_STARTUP = """
import time; t0 = time.perf_counter()
import numpy as np
from fastmbrl.cli.bench.plan import CONFIGS, make_planner, random_model
cfg = CONFIGS["cheetah_rs"]
planner = make_planner(cfg, random_model(cfg))
planner.act(np.zeros(cfg.obs_dim, np.float32))
print(time.perf_counter() - t0)
"""


def measure_startup() -> dict:
    """Seconds from interpreter start to the first cheetah_rs action, cold and warm cache."""
    out = {"config": "startup_cheetah_rs", **machine()}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_s", "warm_s"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _STARTUP], env=env, capture_output=True,
                                  text=True, check=True)
            out[label] = round(float(proc.stdout.strip().splitlines()[-1]), 2)
            out[label.replace("_s", "_process_s")] = round(time.perf_counter() - t, 2)
    return out


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS),
                        help="which configurations to run (default: all)")
    parser.add_argument("--repeats", type=int, default=20, help="timed plans per configuration")
    parser.add_argument("--startup", action="store_true",
                        help="also time the first action in fresh processes (cold/warm cache)")


def run(args) -> int:
    if args.repeats < 1:
        raise FastMBRLError("--repeats must be >= 1")
    blas = blas_info()
    peak = sgemm_gflops()
    if not args.json:
        print(f"{machine_line()}\nNumPy BLAS: {blas}; sgemm now: {peak:.0f} GFLOP/s")
        print(f"{'config':<16}{'ms/plan':>10}{'min ms':>9}{'GFLOP/s':>9}{'Msteps/s':>10}"
              f"{'numpy ms':>10}{'speedup':>9}{'of sgemm':>9}")
    for name in args.configs:
        row = measure(CONFIGS[name], args.repeats, max(3, args.repeats // 4))
        row["sgemm_gflops"] = round(peak, 1)
        row["fraction_of_sgemm"] = round(row["gflops"] / peak, 2)
        if args.json:
            print(json.dumps(dict(row, blas=blas)), flush=True)
        else:
            print(f"{name:<16}{row['ms_per_plan']:>10.2f}{row['min_ms_per_plan']:>9.2f}"
                  f"{row['gflops']:>9.1f}{row['model_steps_per_s'] / 1e6:>10.2f}"
                  f"{row['reference_ms_per_plan']:>10.2f}{row['speedup']:>8.1f}x"
                  f"{100 * row['fraction_of_sgemm']:>8.0f}%", flush=True)
    if args.startup:
        row = measure_startup()
        if args.json:
            print(json.dumps(row))
        else:
            print(f"time to first action (fresh process, cheetah_rs): cold cache {row['cold_s']} s, "
                  f"warm cache {row['warm_s']} s")
    return 0
