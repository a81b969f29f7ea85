"""`fastmbrl eval DIR`: run a saved controller on fresh episodes of its task."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastmbrl.algorithms.mbrl import run_episode
from fastmbrl.planning.controller import Controller
from fastmbrl.errors import FastMBRLError
from fastmbrl.algorithms.rundir import read_run_config
from fastmbrl.algorithms.trpo import PolicyController


def load_controller(path, **overrides):
    """The acting object saved at `path`: an MPC Controller, or a TRPO (or MB-MF) policy."""
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    if (directory / "config.json").exists() and read_run_config(directory)["algo"] in ("trpo",
                                                                                       "mbmf"):
        if overrides:
            raise FastMBRLError("a policy has no planner settings to override")
        return PolicyController.load(path)
    return Controller.load(path, **overrides)


def evaluate(path, episodes=5, seed=1_000_000, log=None, **overrides) -> dict:
    """Mean, std and list of returns of the controller saved at `path` over `episodes` episodes."""
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    controller = load_controller(path, **overrides)
    env = controller.task.make_env()
    returns, act_s, steps = [], 0.0, 0
    for i in range(episodes):
        controller.reset()
        ret, k, s, _ = run_episode(env, controller.act, seed + i)
        returns.append(ret)
        act_s += s
        steps += k
        if log:
            log(f"episode {i + 1}/{episodes}: return {ret:.2f} over {k} steps")
    env.close()
    planner = getattr(controller, "planner", None)
    return {
        "task": controller.task.name,
        "planner": controller.settings["planner"],
        # the planner maximised the task's planning reward, not its reward (a policy has none)
        "shaped_objective": planner is not None and planner.reward_fn is not controller.task.reward,
        "episodes": episodes,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "returns": [float(r) for r in returns],
        "ms_per_act": 1e3 * act_s / max(steps, 1),
    }


def add_arguments(p):
    p.add_argument("run_dir", metavar="DIR", help="run directory (or its model.npz)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    result = evaluate(args.run_dir, args.episodes, args.seed,
                      log=None if args.json else (lambda m: print(m, flush=True)))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']}: mean return {result['mean_return']:.2f} ± "
              f"{result['std_return']:.2f} over {args.episodes} episodes "
              f"({result['ms_per_act']:.2f} ms per action)")
    return 0
