"""World Models as an algorithm (Ha & Schmidhuber 2018): V, M and C, and the evaluation of a
CMA-ES population of controllers in the real environment, its episodes spread over processes or
a Ray cluster by fastmbrl.executor. (The staged `--algo worldmodels` run is to come.)"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath
from fastmbrl.algorithms.base import run_episode
from fastmbrl.errors import FastMBRLError
from fastmbrl.executor import run_jobs
from fastmbrl.models.mdnrnn import MDNRNN
from fastmbrl.models.wm_controller import WorldModelAgent, WorldModelController

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
    population = np.atleast_2d(np.asarray(population, np.float32))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: at least one episode seed, each once, got {seeds}")
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
