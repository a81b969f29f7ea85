"""Evaluation: a saved controller (MPC or policy) on fresh episodes of its task."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.algorithms.base import run_episode
from fastmbrl.algorithms.config import non_negative_int
from fastmbrl.planning.controller import CONTROLLER_FILE, MODEL_FILE, Controller
from fastmbrl.errors import FastMBRLError, FormatError, MissingFileError
from fastmbrl.algorithms.rundir import import_run_tasks, read_run_config
from fastmbrl.models.policies import PolicyController


def load_controller(path, **overrides):
    """The acting object saved at `path`: an MPC Controller, or a TRPO (or MB-MF) policy."""
    path = Path(path)
    if not path.exists():  # not the parent's controller: a typo must not evaluate the parent
        raise MissingFileError(f"{path} does not exist (expected a run directory or its "
                               "model.npz or policy.npz)")
    directory = path if path.is_dir() else path.parent
    if (directory / "config.json").exists():
        import_run_tasks(directory)  # a task of the user's that the run remembers
        algo = read_run_config(directory)["algo"]
    elif (directory / CONTROLLER_FILE).exists():
        algo = None  # a Controller.save directory: no run around it
    else:
        raise MissingFileError(f"{directory} is not a fastmbrl run directory (no config.json "
                               f"or {CONTROLLER_FILE})")
    if algo in ("trpo", "mbmf"):
        if overrides:
            raise FastMBRLError("a policy has no planner settings to override")
        policy_file = directory / "policy.npz" if path.is_dir() else path
        if not policy_file.exists():
            raise MissingFileError(f"{directory}/config.json names a {algo} run but there is no "
                                   f"{policy_file} (no policy trained yet?)")
        controller = PolicyController.load(policy_file)
        try:
            task, policy = controller.task, controller.policy
        except FastMBRLError as exc:
            raise FormatError(f"{policy_file}: {exc}") from None
        if (task.obs_dim, task.act_dim) != (policy.obs_dim, policy.act_dim):
            raise FormatError(f"{policy_file}: the policy's sizes (obs {policy.obs_dim}, act "
                              f"{policy.act_dim}) do not fit task {task.name}")
        return controller
    if algo is not None and path.is_dir() and not (directory / MODEL_FILE).exists():
        raise MissingFileError(f"{directory}/config.json names an {algo} run but there is no "
                               f"{directory / MODEL_FILE} (no iteration finished yet?)")
    return Controller.load(path, **overrides)


def evaluate(path, episodes=5, seed=1_000_000, log=None, **overrides) -> dict:
    """Mean, std and list of returns of the controller saved at `path` over `episodes` episodes."""
    check_positive_int(episodes, "episodes")
    non_negative_int(seed, "seed")  # environments refuse negative seeds, after loading
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
