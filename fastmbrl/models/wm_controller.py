"""World Models' C, a linear controller on [z, h], and the dream that scores a population of them
inside M (the MDN-RNN) in one parallel kernel (``kernels/dream.py``).

C maps the latent z (Z,) and M's hidden state h (H,) to a = low + (high - low) (tanh(W [z, h] +
b) + 1) / 2, within the action bounds; its parameters are flat, [W (A, Z + H) row-major, b (A,)],
the vector CMA-ES searches (867 numbers for CarRacing: Z = 32, H = 256, A = 3). A controller is
saved as one .npz (kind ``wm_controller``, docs/formats.md) and loads with numpy alone.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, as_array, check_finite_float, check_positive_int
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels.dream import dream_returns
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.models.mdnrnn import MDNRNN

_KIND = "wm_controller"
_VERSION = 1


def num_params(z_dim: int, hidden: int, act_dim: int) -> int:
    """Length of a controller's parameter vector."""
    return act_dim * (z_dim + hidden) + act_dim


class WorldModelController:
    """C of World Models. params: the flat vector (default zeros: the middle of the bounds)."""

    def __init__(self, z_dim: int, hidden: int, act_dim: int, action_low: npt.ArrayLike,
                 action_high: npt.ArrayLike, params: npt.ArrayLike | None = None) -> None:
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.hidden = check_positive_int(hidden, "hidden")
        self.act_dim = check_positive_int(act_dim, "act_dim")
        self.action_low = as_array(action_low, "action_low", (self.act_dim,), np.float32)
        self.action_high = as_array(action_high, "action_high", (self.act_dim,), np.float32)
        if not (self.action_low < self.action_high).all():
            raise ValueError("action_low must be below action_high in every dimension")
        n = num_params(self.z_dim, self.hidden, self.act_dim)
        self.params = (np.zeros(n, np.float32) if params is None
                       else as_array(params, "params", (n,), np.float32).copy())

    @property
    def num_params(self) -> int:
        return int(self.params.size)

    def act(self, z: npt.ArrayLike, h: npt.ArrayLike) -> np.ndarray:
        """Actions (N, A) for latents z (N, Z) and hidden states h (N, H) (or one row each:
        (A,))."""
        z = np.asarray(z, np.float32)
        h = np.asarray(h, np.float32)
        one = z.ndim == 1
        z = as_array(np.atleast_2d(z), "z", (None, self.z_dim), np.float32)
        h = as_array(np.atleast_2d(h), "h", (z.shape[0], self.hidden), np.float32)
        a = self.act_dim
        w = self.params[:a * (self.z_dim + self.hidden)].reshape(a, -1)
        s = np.concatenate([z, h], axis=1) @ w.T + self.params[-a:]
        out = self.action_low + (self.action_high - self.action_low) * (np.tanh(s) + 1) / 2
        return out[0] if one else out

    def save(self, path: StrPath) -> Path:
        """The sizes, bounds and parameters in one .npz (see docs/formats.md)."""
        header = {"z_dim": self.z_dim, "hidden": self.hidden, "act_dim": self.act_dim}
        return save_npz(path, _KIND, _VERSION, header,
                        {"params": self.params, "action_low": self.action_low,
                         "action_high": self.action_high})

    @classmethod
    def load(cls, path: StrPath) -> WorldModelController:
        header, arrays = load_npz(path, _KIND, (_VERSION,))
        try:
            if set(arrays) != {"params", "action_low", "action_high"}:
                raise ValueError(f"arrays {sorted(arrays)}, expected action_high, action_low, "
                                 "params")
            return cls(header["z_dim"], header["hidden"], header["act_dim"],
                       arrays["action_low"], arrays["action_high"], arrays["params"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: not a valid World Models controller ({exc})") from None


def dream(model: MDNRNN, population: npt.ArrayLike, z0: npt.ArrayLike, horizon: int,
          action_low: npt.ArrayLike, action_high: npt.ArrayLike, temperature: float = 1.0,
          done_threshold: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (P, R) and steps run (P, R) of each of the P controllers of `population`
    (P, num_params) rolled out `horizon` steps inside `model` from each of the R start latents
    z0 (R, Z), every candidate from the same starts with the same draws (a generation's fair
    comparison). The draws come from `seed`; the sum over a rollout's steps stops after the
    first whose done probability exceeds `done_threshold`."""
    dtype = model.dtype
    z0 = as_array(np.atleast_2d(z0), "z0", (None, model.z_dim), dtype)
    n = num_params(model.z_dim, model.hidden, model.act_dim)
    population = as_array(np.atleast_2d(population), "population", (None, n), dtype)
    horizon = check_positive_int(horizon, "horizon")
    temperature = check_finite_float(temperature, "temperature", 0)
    done_threshold = check_finite_float(done_threshold, "done_threshold", 0, 1)
    low = as_array(action_low, "action_low", (model.act_dim,), dtype)
    high = as_array(action_high, "action_high", (model.act_dim,), dtype)
    p, r = population.shape[0], z0.shape[0]
    shape = (p, r, horizon, model.z_dim)
    check_bytes(f"dream(population={p}, rollouts={r}, horizon={horizon})",
                {"draws (population x rollouts x horizon x z_dim x 2)":
                 2 * array_bytes(*shape, itemsize=dtype.itemsize)}, "horizon")
    rng = np.random.default_rng([int(seed), 11])
    pick = rng.random(shape, dtype=dtype)
    noise = rng.standard_normal(shape, dtype=dtype)
    returns = np.zeros((p, r), np.float64)
    steps = np.zeros((p, r), np.int64)
    prm = model.params
    dream_returns(population, z0, prm["W"], prm["b"], prm["Wo"], prm["bo"], low, high,
                  model.n_mix, pick, noise, temperature, done_threshold, returns, steps)
    return returns, steps


class WorldModelAgent:
    """V, M and C acting on frames: each frame is encoded to z (V's mean), C acts on [z, h], and
    M steps on [z, a] to carry its hidden state (h, c) to the next frame. `reset()` at an
    episode's start."""

    def __init__(self, vae: Any, mdnrnn: MDNRNN, controller: WorldModelController) -> None:
        if (vae.config.z_size, mdnrnn.hidden, mdnrnn.act_dim) != (
                controller.z_dim, controller.hidden, controller.act_dim) \
                or mdnrnn.z_dim != vae.config.z_size:
            raise ValueError(f"sizes disagree: V's z {vae.config.z_size}, M's (z, hidden, "
                             f"actions) ({mdnrnn.z_dim}, {mdnrnn.hidden}, {mdnrnn.act_dim}), "
                             f"C's ({controller.z_dim}, {controller.hidden}, "
                             f"{controller.act_dim})")
        self.vae, self.mdnrnn, self.controller = vae, mdnrnn, controller
        self.reset()

    def reset(self) -> None:
        self.h, self.c = self.mdnrnn.initial_state(1)

    def act(self, frame: npt.ArrayLike) -> np.ndarray:
        """The action (A,) float32 for one (size, size, 3) frame."""
        z, _ = self.vae.encode(np.asarray(frame)[None])
        action = self.controller.act(z[0], self.h[0]).astype(np.float32)
        _, _, _, self.h, self.c = self.mdnrnn.step(z, action[None], self.h, self.c)
        return action


_LOADED: dict[tuple, tuple] = {}  # a worker's V and M, read once per file version


def _models(vae_path: str, mdnrnn_path: str) -> tuple:
    from fastmbrl.models.vae import ConvVAE

    key = tuple((p, os.stat(p).st_mtime_ns) for p in (vae_path, mdnrnn_path))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = (ConvVAE.load(vae_path), MDNRNN.load(mdnrnn_path))
    return _LOADED[key]


def episode_return(job: dict) -> float:
    """The return of one episode of controller `job["params"]` in the real environment (a job of
    `evaluate_population`; top-level so that worker processes can run it)."""
    from fastmbrl.algorithms.base import run_episode

    vae, mdnrnn = _models(job["vae"], job["mdnrnn"])
    task = job["task"]
    env = task.make_env()
    try:
        low, high = env.action_space.low, env.action_space.high
        controller = WorldModelController(mdnrnn.z_dim, mdnrnn.hidden, mdnrnn.act_dim, low,
                                          high, job["params"])
        agent = WorldModelAgent(vae, mdnrnn, controller)
        total, _, _, _ = run_episode(env, agent.act, job["seed"], job["max_steps"])
    finally:
        env.close()
    return total


def evaluate_population(vae_path: StrPath, mdnrnn_path: StrPath, task: Any,
                        population: npt.ArrayLike, seeds: Sequence[int],
                        max_steps: int | None = None, **executor: Any) -> np.ndarray:
    """Mean return over the episodes `seeds` of each controller of `population` (P, n) in the
    real environment of `task` (a PixelTask), every candidate on the same seeds; the P x len(seeds)
    episodes go through fastmbrl.executor.run_jobs (`executor`: backend, workers, threads,
    address), V and M read from their files by each worker. A failed episode raises
    FastMBRLError naming it."""
    from fastmbrl.errors import FastMBRLError
    from fastmbrl.executor import run_jobs

    population = np.atleast_2d(np.asarray(population, np.float32))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: at least one episode seed")
    jobs, keys = [], []
    for p, params in enumerate(population):
        for s in seeds:
            jobs.append({"vae": str(vae_path), "mdnrnn": str(mdnrnn_path), "task": task,
                         "params": params, "seed": s, "max_steps": max_steps})
            keys.append((p, s))
    returns = np.zeros((len(population), len(seeds)))
    for outcome in run_jobs(episode_return, jobs, keys=keys, **executor):
        if not outcome.ok:
            raise FastMBRLError(f"candidate {outcome.key[0]}, episode seed {outcome.key[1]}: "
                                f"{outcome.error}")
        p, s = outcome.key
        returns[p, seeds.index(s)] = outcome.value
    return returns.mean(axis=1)
