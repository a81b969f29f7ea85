"""Evaluation: a saved controller (MPC or policy) on fresh episodes of its task, optionally
recorded as videos (Gymnasium's RecordVideo, the `video` extra)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.algorithms.base import run_episode
from fastmbrl.algorithms.config import non_negative_int
from fastmbrl.planning.controller import CONTROLLER_FILE, MODEL_FILE, Controller
from fastmbrl.errors import FastMBRLError, FormatError, MissingFileError, require
from fastmbrl.algorithms.rundir import import_run_tasks, read_run_config
from fastmbrl.models.function import FunctionModel
from fastmbrl.models.policies import PolicyController


def load_controller(path, **overrides):
    """The acting object saved at `path`: an MPC Controller, a TRPO (or MB-MF) policy, or a
    World Models agent.
    `path` may also be a Controller: a new one on its model with `overrides` of its settings."""
    if isinstance(path, Controller):
        return Controller(path.model, path.task, **{**path.settings, **overrides})
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
    if algo == "worldmodels":
        if overrides:
            raise FastMBRLError("a World Models controller has no planner settings to override")
        from fastmbrl.algorithms.worldmodels import WorldModelsAgent

        return WorldModelsAgent.load(directory)
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


def known_dynamics_controller(task, **settings) -> Controller:
    """A Controller planning with `task`'s own exact dynamics (FastMBRLError when it has none);
    `settings` are Controller arguments (planner, horizon, num_samples, ...)."""
    return Controller(FunctionModel.of_task(task), task, **settings)


#: video i of an evaluation is VIDEO_PREFIX-episode-i.mp4 (RecordVideo's naming)
VIDEO_PREFIX = "eval"


def video_files(directory, episodes) -> list[Path]:
    """The files an evaluation of `episodes` episodes recorded into `directory` writes."""
    return [Path(directory) / f"{VIDEO_PREFIX}-episode-{i}.mp4" for i in range(episodes)]


def recording_env(task, directory, episodes):
    """`task`'s environment rendering into RGB frames, each episode recorded into a video file
    in `directory` (created; files already there are not overwritten). FastMBRLError when
    moviepy is missing, the environment has no image rendering, or it cannot render here."""
    if not str(directory):
        raise FastMBRLError("--video must name a directory")
    require("moviepy", "video", "recording videos (--video)")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FastMBRLError(f"--video {directory} is a file, not a directory")
    taken = [f.name for f in video_files(directory, episodes) if f.exists()]
    if taken:
        raise FastMBRLError(f"--video {directory} already holds {', '.join(taken)}; give "
                            "another directory or remove them")
    env = task.make_env()
    modes = env.metadata.get("render_modes") or []
    env.close()
    if "rgb_array" not in modes:
        raise FastMBRLError(f"task {task.name}: its environment {task.env_id} cannot render "
                            f"images (render modes {modes or 'none'}), so it cannot be recorded")
    env = task.make_env(render_mode="rgb_array")
    try:
        env.reset(seed=0)
        frame = env.render()  # a display-less machine fails here, not in the first episode
    except Exception as exc:
        env.close()
        hint = (" (MuJoCo renders without a display with MUJOCO_GL=egl or MUJOCO_GL=osmesa)"
                if "mujoco" in type(exc).__module__ or "OpenGL" in str(exc) else "")
        raise FastMBRLError(f"task {task.name}: {task.env_id} cannot render here: "
                            f"{type(exc).__name__}: {exc}{hint}") from None
    if not hasattr(frame, "shape"):
        env.close()
        raise FastMBRLError(f"task {task.name}: {task.env_id} rendered {type(frame).__name__}, "
                            "not an image")
    from gymnasium.wrappers import RecordVideo

    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "overwriting existing videos": none is, checked above
        warnings.simplefilter("ignore")
        return RecordVideo(env, str(directory), episode_trigger=lambda _: True,
                           name_prefix=VIDEO_PREFIX)


def evaluate(path, episodes=5, seed=1_000_000, log=None, video=None, **overrides) -> dict:
    """Mean, std and list of returns of the controller saved at `path` (or of a Controller) over
    `episodes` episodes; `overrides` replace its planner settings; `video`: a directory to
    record each episode into, one .mp4 file per episode."""
    check_positive_int(episodes, "episodes")
    non_negative_int(seed, "seed")  # environments refuse negative seeds, after loading
    controller = load_controller(path, **overrides)
    task = controller.task
    if video is not None and getattr(task, "frame_size", None):
        raise FastMBRLError("--video records state tasks; a World Models run's frames, V's "
                            "reconstructions and M's dream are drawn by `fastmbrl plot DIR`")
    env = task.make_env() if video is None else recording_env(task, video, episodes)
    returns, act_s, steps = [], 0.0, 0
    try:
        for i in range(episodes):
            controller.reset()
            ret, k, s, _ = run_episode(env, controller.act, seed + i)
            returns.append(ret)
            act_s += s
            steps += k
            if log:
                log(f"episode {i + 1}/{episodes}: return {ret:.2f} over {k} steps")
    finally:
        env.close()  # a recording writes its last video here
    planner = getattr(controller, "planner", None)
    result = {
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
    if video is not None:
        result["videos"] = [str(f) for f in video_files(video, episodes)]
    return result
