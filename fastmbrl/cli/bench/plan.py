"""`fastmbrl bench plan`: planning latency of the fused rollout kernel vs vectorised NumPy.

Each configuration (a row of CONFIGS) builds a random ReLU dynamics model of the given size and
a planner (rs, cem, mppi, icem or beam), and times ``plan(obs)`` (candidate sampling included); in the
same run it times `NumpyPlanner`, the same planner's work in NumPy (batched matmuls over all K
candidates per step, float32, the same folded weights). `--model RUNDIR` adds a row for a
trained model with the run's planner or `--planner/--horizon/--num-samples/--planner-options`.
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
from pathlib import Path

import numba
import numpy as np

from fastmbrl.cli.argtypes import json_object
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels import FASTMATH
from fastmbrl.kernels.rollout import pack_model
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.models.function import FunctionModel
from fastmbrl.planning.controller import build_planner, check_planner_options
from fastmbrl.planning.planners import (CEM, ICEM, MPPI, PLANNERS, BeamSearch, RandomShooting,
                                        _icem_sizes, colored_noise_matrix)
from . import pets
from .common import blas_info, machine, machine_line, sgemm_gflops, timed
from .planners import load_planning_controller, model_steps_per_action

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
    """One row of the table: a random ReLU delta model of these sizes, and a planner (a name
    of planners.PLANNERS) with num_samples `samples` and its other `options`."""

    name: str
    obs_dim: int
    act_dim: int
    hidden: tuple
    horizon: int
    samples: int  # num_samples: candidates per plan (rs) or per iteration
    planner: str = "rs"
    options: dict = dataclasses.field(default_factory=dict)
    members: int = 1  # ensemble members; every candidate is scored under each

    @property
    def rewards(self):
        if self.obs_dim == 3:
            return pendulum_reward, _pendulum_reward_np
        return cheetah_reward, _cheetah_reward_np

    @property
    def model_steps(self) -> int:
        return model_steps_per_action(self.planner, self.samples, self.horizon, self.members,
                                      self.options)


#: the rows, in order; a new row is one more line
CONFIGS = {
    c.name: c for c in [
        Config("pendulum_small", 3, 1, (64, 64), 20, 1000),
        Config("cheetah_rs", 17, 6, (200, 200), 30, 1000),
        Config("cheetah_big", 17, 6, (500, 500), 20, 1000),
        Config("cheetah_cem", 17, 6, (200, 200), 30, 500, "cem", {"iterations": 5}),
        # cheetah_rs's model steps spread over 5 members: the cost of ensemble scoring
        Config("cheetah_ens5", 17, 6, (200, 200), 30, 200, members=5),
        Config("cheetah_mppi", 17, 6, (200, 200), 30, 1000, "mppi"),
        # cheetah_cem's settings, the samples shrinking by iCEM's decay (1.25) per iteration
        Config("cheetah_icem", 17, 6, (200, 200), 30, 500, "icem",
               {"iterations": 5, "elites": 0.1}),
        # about cheetah_cem's model steps: 160 children per depth, each with the rest of H
        Config("cheetah_beam", 17, 6, (200, 200), 30, 160, "beam"),
        pets.CONFIG,  # 5 probabilistic members, 20 particles, CEM 400 x 5, H = 30, 4 x 200
    ]
}


def random_model(cfg: Config, seed: int = 0) -> dict:
    """pack_model's arguments for a random ReLU delta model of `cfg`'s sizes (the kernel's and
    NumPy's common input); for an ensemble, per-member lists of weights and biases and (B, D)
    statistics."""
    if cfg.members > 1:
        parts = [random_model(dataclasses.replace(cfg, members=1), seed + 1000 * m)
                 for m in range(cfg.members)]
        return {**parts[0], **{k: ([p[k] for p in parts] if k in ("weights", "biases")
                                   else np.stack([p[k] for p in parts]))
                               for k in _STATISTICS + ("weights", "biases")}}
    rng = np.random.default_rng(seed)
    sizes = [cfg.obs_dim + cfg.act_dim, *cfg.hidden, cfg.obs_dim]
    return dict(
        weights=[(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(F32)
                 for a, b in zip(sizes[:-1], sizes[1:])],
        biases=[(0.1 * rng.standard_normal(b)).astype(F32) for b in sizes[1:]],
        activation="relu",
        input_mean=rng.standard_normal(sizes[0]).astype(F32),
        input_scale=rng.uniform(0.5, 2.0, sizes[0]).astype(F32),
        delta_mean=(0.01 * rng.standard_normal(cfg.obs_dim)).astype(F32),
        delta_std=rng.uniform(0.05, 0.2, cfg.obs_dim).astype(F32),
    )


_STATISTICS = ("input_mean", "input_scale", "delta_mean", "delta_std")


def model_arrays(model: DynamicsModel) -> dict:
    """pack_model's arguments for a trained DynamicsModel (as its `packed()` passes them)."""
    many = model.ensemble_size > 1
    return dict(weights=[n.weights for n in model.nets] if many else model.net.weights,
                biases=[n.biases for n in model.nets] if many else model.net.biases,
                activation=model.activation, angle_dims=model.angle_obs_dims,
                absolute_dims=model.absolute_obs_dims,
                **{k: getattr(model, k) for k in _STATISTICS})


def make_planner(cfg: Config, model: dict, seed: int = 0):
    low, high = -np.ones(cfg.act_dim, F32), np.ones(cfg.act_dim, F32)
    return PLANNERS[cfg.planner](pack_model(**model), cfg.rewards[0], horizon=cfg.horizon,
                                 action_low=low, action_high=high, num_samples=cfg.samples,
                                 seed=seed, **cfg.options)


_NUMPY_ACTIVATIONS = {"relu": lambda h: np.maximum(h, 0, out=h), "tanh": np.tanh,
                      "silu": lambda h: h / (1 + np.exp(-h)), "swish": lambda h: h / (1 + np.exp(-h))}


def numpy_reward(fn):
    """A numba reward (or termination) `fn(obs, act, next_obs, out)` as NumPy code calls it:
    `(obs, act, next_obs) -> (K,)`."""
    def call(obs, act, next_obs, dtype=F32):
        out = np.empty(obs.shape[0], dtype)
        fn(np.ascontiguousarray(obs), np.ascontiguousarray(act), np.ascontiguousarray(next_obs),
           out)
        return out
    return call


class NumpyPlanner:
    """The planning work of `planner` (a planner of fastmbrl.planning.planners, whose settings
    it takes) in vectorised NumPy: per step one batched matmul chain over all K candidates, in
    float32 on the same folded weights. `model` holds pack_model's arguments; `reward(obs, act,
    next_obs) -> (K,)`; `terminated` likewise, or None. The sampling is plain (clipped normals,
    no smoothing or truncation): the model work is the planner's, the small arithmetic
    around it close to it."""

    def __init__(self, planner, model: dict, reward, terminated=None, seed: int = 0):
        self.planner, self.reward, self.terminated = planner, reward, terminated
        self.rng = np.random.default_rng(seed)
        self.angles = list(model.get("angle_dims", ()))
        weights, biases = model["weights"], model["biases"]
        if not isinstance(weights[0], (list, tuple)):
            weights, biases = [weights], [biases]
        self.act_fn = _NUMPY_ACTIVATIONS[model["activation"]]
        obs_dim = np.shape(weights[0][-1])[1]
        self.carry = np.ones(obs_dim, F32)
        self.carry[list(model.get("absolute_dims", ()))] = 0
        self.members = []
        for m in range(len(weights)):
            stat = {k: np.asarray(model[k], np.float64) for k in _STATISTICS}
            stat = {k: v[m] if v.ndim == 2 else v for k, v in stat.items()}
            w = [np.asarray(v, np.float64) for v in weights[m]]
            b = [np.asarray(v, np.float64) for v in biases[m]]
            b[0] = b[0] - (stat["input_mean"] * stat["input_scale"]) @ w[0]
            w[0] = stat["input_scale"][:, None] * w[0]
            w[-1] = w[-1] * stat["delta_std"]
            b[-1] = b[-1] * stat["delta_std"] + stat["delta_mean"]
            self.members.append(([v.astype(F32) for v in w], [v.astype(F32) for v in b]))
        h, a = planner.horizon, planner.action_low.shape[0]
        self.low, self.high = planner.action_low, planner.action_high
        self.middle = np.broadcast_to((self.low + self.high) / 2, (h, a)).astype(F32)
        self.std = np.broadcast_to((self.high - self.low) / 4, (h, a)).astype(F32)
        if isinstance(planner, ICEM):
            self.sizes = _icem_sizes(planner.num_samples, planner.num_elites,
                                     planner.iterations, planner.decay)
            self.coloring = colored_noise_matrix(h, planner.noise_beta).T.copy()  # (M, H)
            self.kept = np.empty((0, h, a), F32)
        self.nominal = self.middle

    def _inputs(self, state, act):
        if not self.angles:
            return np.concatenate([state, act], axis=1)
        feats = state.copy()
        feats[:, self.angles] = np.sin(state[:, self.angles])
        return np.concatenate([feats, np.cos(state[:, self.angles]), act], axis=1)

    def returns(self, obs, actions):
        """Mean over the members of each candidate's return (a terminated rollout earns
        nothing after its terminating step)."""
        k, b = actions.shape[0], len(self.members)
        states = np.broadcast_to(np.asarray(obs, F32), (b, k, obs.shape[-1]))
        return self.branch(states, np.ones((b, k), bool), actions)[0]

    def branch(self, states, alive, actions):
        """Rollouts of actions (K, t, A) from each member's own states (B, K, O) where alive
        (B, K): the members' mean returns (K,), the end states and alive flags."""
        total = np.zeros(actions.shape[0], F32)
        ends, still = np.empty_like(states), alive.copy()
        for m, (weights, biases) in enumerate(self.members):
            state = states[m]
            for t in range(actions.shape[1]):
                h = self._inputs(state, actions[:, t])
                for i, (w, b) in enumerate(zip(weights, biases)):
                    h = h @ w + b
                    if i < len(weights) - 1:
                        h = self.act_fn(h)
                nxt = state * self.carry + h
                total += np.where(still[m], self.reward(state, actions[:, t], nxt), F32(0))
                if self.terminated is not None:
                    still[m] &= ~self.terminated(state, actions[:, t], nxt, np.bool_)
                state = nxt
            ends[m] = state
        return total / F32(len(self.members)), ends, still

    def _beam(self, obs):
        """BeamSearch's tree, depth by depth (its `nominal` the previous plan, shifted)."""
        p = self.planner
        h, a = self.middle.shape
        k, b = p.num_samples, len(self.members)
        u = self.nominal
        states = np.broadcast_to(np.asarray(obs, F32), (b, 1, obs.shape[-1]))
        alive, ret, prefix = np.ones((b, 1), bool), np.zeros(1, F32), np.zeros((1, 0, a), F32)
        for d in range(h):
            parent = np.arange(k) * states.shape[1] // k
            act = self._sample(k, u[d:d + 1], p.noise[d:d + 1])
            act[np.r_[True, parent[1:] != parent[:-1]], 0] = u[d]  # each parent's nominal child
            step, ends, still = self.branch(states[:, parent], alive[:, parent], act)
            child_ret = ret[parent] + step
            value = child_ret
            t = min(p.tail, h - 1 - d)
            if t:
                tail = (np.broadcast_to(u[d + 1:d + 1 + t], (k, t, a)) if p.tail_policy == "mean"
                        else np.clip(self.low + (self.high - self.low)
                                     * self.rng.random((k, t, a), dtype=F32), self.low, self.high))
                value = value + self.branch(ends, still, tail)[0]
            best = np.argsort(-value, kind="stable")[:p.beams]
            prefix = np.concatenate([prefix[parent[best]], act[best]], axis=1)
            states, alive, ret = ends[:, best], still[:, best], child_ret[best]
        self.nominal = np.concatenate([prefix[0, 1:], self.middle[-1:]])
        return prefix[0]

    def _sample(self, n, mean, std):
        noise = self.rng.standard_normal((n, *mean.shape), dtype=F32)
        return np.clip(mean + std * noise, self.low, self.high)

    def _refit(self, mean, std, elites, alpha):
        mean = alpha * mean + (1 - alpha) * elites.mean(axis=0)
        std = np.sqrt(alpha * std ** 2 + (1 - alpha) * elites.var(axis=0))
        return mean.astype(F32), std.astype(F32)

    def plan(self, obs):
        p = self.planner
        if isinstance(p, BeamSearch):
            return self._beam(obs)
        if isinstance(p, RandomShooting):
            cand = self.rng.uniform(self.low, self.high,
                                    (p.num_samples, *self.middle.shape)).astype(F32)
            return cand[np.argmax(self.returns(obs, cand))]
        if isinstance(p, MPPI):
            mean = self.middle
            for _ in range(p.iterations):
                cand = self._sample(p.num_samples, mean, self.std)
                ret = self.returns(obs, cand)
                w = np.exp((ret - ret.max()) / p.temperature)
                mean = np.tensordot(w / w.sum(), cand, axes=1).astype(F32)
            return mean
        mean, std = self.middle, self.std
        if isinstance(p, CEM):
            for _ in range(p.iterations):
                cand = self._sample(p.num_samples, mean, std)
                elites = cand[np.argsort(self.returns(obs, cand))[-p.num_elites:]]
                mean, std = self._refit(mean, std, elites, p.alpha)
            return mean
        best, best_return = mean, -np.inf
        kept = np.concatenate([self.kept[:, 1:], self.middle[None, -1:].repeat(len(self.kept), 0)],
                              axis=1)
        for it, n in enumerate(self.sizes):
            white = self.rng.standard_normal((n, mean.shape[1], self.coloring.shape[0]),
                                             dtype=F32)
            colored = (white @ self.coloring).transpose(0, 2, 1)  # (n, H, A)
            parts = [np.clip(mean + std * colored, self.low, self.high), kept]
            if it == len(self.sizes) - 1:
                parts.append(mean[None])
            cand = np.concatenate(parts)
            ret = self.returns(obs, cand)
            order = np.argsort(ret)[::-1][:min(p.num_elites, len(cand))]
            if ret[order[0]] > best_return:
                best, best_return = cand[order[0]], ret[order[0]]
            kept = cand[order[:p.num_keep]]
            mean, std = self._refit(mean, std, cand[order], p.alpha)
        self.kept = kept
        return mean if p.return_mean else best


def _median_ms(fn, observations, repeats):
    """Median and least ms of `repeats` calls, cycling through `observations` (N, O)."""
    fn(observations[0])
    times = [timed(lambda: fn(observations[i % len(observations)])) for i in range(repeats)]
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def _timing_row(name, planner, reference, observations, steps, repeats, reference_repeats):
    """A row of the table: the kernel planner's and its NumPy twin's ms per plan."""
    ms, best_ms = _median_ms(planner.plan, observations, repeats)
    ref_ms, _ = _median_ms(reference.plan, observations, reference_repeats)
    flops = planner.packed.flops_per_step() * steps
    return {
        "config": name,
        "planner": next(k for k, v in PLANNERS.items() if type(planner) is v),
        "ms_per_plan": round(ms, 3),
        "min_ms_per_plan": round(best_ms, 3),
        "model_steps_per_plan": steps,
        "model_steps_per_s": round(steps / ms * 1e3),
        "gflops": round(flops / ms / 1e6, 1),
        "reference_ms_per_plan": round(ref_ms, 3),
        "speedup": round(ref_ms / ms, 2),
        **machine(),
    }


def measure(cfg: Config, repeats: int = 20, reference_repeats: int = 5) -> dict:
    """One configuration: kernel planner and NumPy reference, medians in ms."""
    if hasattr(cfg, "measure"):  # a configuration that brings its own (pets)
        return cfg.measure(repeats, reference_repeats, (cheetah_reward, _cheetah_reward_np),
                           _median_ms)
    model = random_model(cfg)
    planner = make_planner(cfg, model)
    reference = NumpyPlanner(planner, model, cfg.rewards[1])
    obs = np.random.default_rng(1).standard_normal((1, cfg.obs_dim)).astype(F32)
    return _timing_row(cfg.name, planner, reference, obs, cfg.model_steps, repeats,
                       reference_repeats)


def model_planner(path, planner=None, horizon=None, num_samples=None, options=None):
    """(controller, planner, its name, its options) for the trained model saved at `path`: the
    controller as saved, the planner built on its model with the given settings over the saved
    ones (the saved planner options and num_samples only for the saved planner)."""
    controller = load_planning_controller(path)
    if isinstance(controller.model, FunctionModel):
        raise FastMBRLError(f"{path} plans with known dynamics: bench plan --model times a "
                            "learned model (see bench planners --known-dynamics)")
    saved = controller.settings
    name = saved["planner"] if planner is None else planner
    if options is None:
        options = saved["planner_options"] if name == saved["planner"] else {}
    check_planner_options(name, options)
    if num_samples is None and name == saved["planner"]:
        num_samples = saved["num_samples"]
    built = build_planner(name, controller.model, controller.task,
                          saved["horizon"] if horizon is None else horizon, num_samples,
                          saved["seed"], options, saved["shaping"])
    return controller, built, name, options


def measure_model(path, planner=None, horizon=None, num_samples=None, options=None,
                  repeats: int = 20, reference_repeats: int = 5) -> dict:
    """The row of a trained model (see model_planner): its planner and the NumPy twin, on the
    observations of the run's buffer.npz when it has one (else the zero observation)."""
    return _model_row(path, model_planner(path, planner, horizon, num_samples, options),
                      repeats, reference_repeats)


def _model_row(path, prepared, repeats, reference_repeats):
    controller, built, name, options = prepared
    task = controller.task
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    buffer = directory / "buffer.npz"
    if buffer.exists():
        obs = ReplayBuffer.load(buffer).obs
        observations = obs[np.linspace(0, len(obs) - 1, min(len(obs), 64)).astype(int)]
    else:
        observations = np.zeros((1, task.obs_dim), F32)
    reference = NumpyPlanner(built, model_arrays(controller.model), numpy_reward(built.reward_fn),
                             None if task.terminated is None else numpy_reward(task.terminated))
    steps = model_steps_per_action(name, built.num_samples, built.horizon, built.num_members,
                                   options)
    row = _timing_row("model", built, reference, observations, steps, repeats,
                      reference_repeats)
    return {**row, "model_dir": str(directory), "task": task.name, "horizon": built.horizon,
            "num_samples": built.num_samples, "members": built.num_members,
            "planner_options": options,
            "observations": "buffer.npz" if buffer.exists() and len(observations) else "zeros"}


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
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                        help="which configurations to run (default: all, or none with --model)")
    parser.add_argument("--repeats", type=int, default=20, help="timed plans per configuration")
    parser.add_argument("--startup", action="store_true",
                        help="also time the first action in fresh processes (cold/warm cache)")
    g = parser.add_argument_group("your model")
    g.add_argument("--model", metavar="RUNDIR", default=None,
                   help="also time the trained model of RUNDIR (a run directory or a "
                        "controller directory) and its NumPy twin, on the observations of its "
                        "buffer.npz")
    g.add_argument("--planner", choices=list(PLANNERS), default=None,
                   help="with --model: the planner (default: the run's)")
    g.add_argument("--horizon", type=int, default=None,
                   help="with --model: planning horizon (default: the run's)")
    g.add_argument("--num-samples", type=int, default=None,
                   help="with --model: candidates per planning iteration (default: the run's "
                        "for its planner, else the planner's default)")
    g.add_argument("--planner-options", type=json_object, default=None, metavar="JSON",
                   help="with --model: the planner's other options as a JSON object, e.g. "
                        "'{\"iterations\": 4}' (default: the run's for its planner, else none)")


def _print_row(row):
    print(f"{row['config']:<16}{row['ms_per_plan']:>10.2f}{row['min_ms_per_plan']:>9.2f}"
          f"{row['gflops']:>9.1f}{row['model_steps_per_s'] / 1e6:>10.2f}"
          f"{row['reference_ms_per_plan']:>10.2f}{row['speedup']:>8.1f}x"
          f"{100 * row['fraction_of_sgemm']:>8.0f}%", flush=True)


def run(args) -> int:
    if args.repeats < 1:
        raise FastMBRLError("--repeats must be >= 1")
    given = [f"--{k.replace('_', '-')}" for k in ("planner", "horizon", "num_samples",
                                                   "planner_options")
             if getattr(args, k) is not None]
    if given and args.model is None:
        raise FastMBRLError(f"{', '.join(given)} set the planner of --model RUNDIR; give "
                            "--model (the table's rows keep their own settings)")
    configs = args.configs if args.configs is not None else (
        [] if args.model is not None else list(CONFIGS))
    model_row = None
    if args.model is not None:  # a bad directory or setting fails before anything is timed
        prepared = model_planner(args.model, args.planner, args.horizon, args.num_samples,
                                 args.planner_options)
        model_row = lambda: _model_row(args.model, prepared, args.repeats,  # noqa: E731
                                       max(3, args.repeats // 4))
    blas = blas_info()
    peak = sgemm_gflops()
    if not args.json:
        print(f"{machine_line()}\nNumPy BLAS: {blas}; sgemm now: {peak:.0f} GFLOP/s")
        print(f"{'config':<16}{'ms/plan':>10}{'min ms':>9}{'GFLOP/s':>9}{'Msteps/s':>10}"
              f"{'numpy ms':>10}{'speedup':>9}{'of sgemm':>9}")
    rows = [lambda c=CONFIGS[name]: measure(c, args.repeats, max(3, args.repeats // 4))
            for name in configs] + ([model_row] if model_row else [])
    for measure_row in rows:
        row = measure_row()
        row["sgemm_gflops"] = round(peak, 1)
        row["fraction_of_sgemm"] = round(row["gflops"] / peak, 2)
        if args.json:
            print(json.dumps(dict(row, blas=blas)), flush=True)
        else:
            _print_row(row)
    if model_row and not args.json:
        options = f" {json.dumps(row['planner_options'])}" if row["planner_options"] else ""
        print(f"model: {row['model_dir']} ({row['task']}, {row['planner']}{options}, "
              f"K={row['num_samples']}, H={row['horizon']}, "
              f"{row['members']} member(s), {row['model_steps_per_plan']} model steps per plan; "
              f"observations from {row['observations']})")
    if args.startup:
        row = measure_startup()
        if args.json:
            print(json.dumps(row))
        else:
            print(f"time to first action (fresh process, cheetah_rs): cold cache {row['cold_s']} s, "
                  f"warm cache {row['warm_s']} s")
    return 0
