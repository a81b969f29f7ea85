"""The embeddable MPC controller: a saved dynamics model, a task's reward and planner settings.

`Controller.load(run_dir)` needs neither gymnasium nor the training code, only this package.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, as_array, check_positive_int
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.models.function import FunctionModel
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import read_json, write_json
from fastmbrl.limits import ResourceLimitError
from fastmbrl.kernels.rollout import PackedModel
from fastmbrl.planning.planners import (DEFAULT_HORIZON, DEFAULT_PLANNER, PLANNERS, Planner,
                                       check_deadline)
from fastmbrl.tasks import Task, get_task
from fastmbrl.tasks.task import RewardFn


CONTROLLER_FILE = "controller.json"
MODEL_FILE = "model.npz"
CONTROLLER_FORMAT = 1
#: controller.json's "model" of a controller that plans with its task's known dynamics
KNOWN_DYNAMICS = "known_dynamics"
#: the planner arguments build_planner sets itself (not options)
_SET_BY_CONTROLLER = ("model", "reward_fn", "terminated_fn", "horizon", "action_low",
                      "action_high", "seed")


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def planner_keywords(name: str) -> dict[str, Any]:
    """{keyword: default} of every option of the planner called `name`: the arguments of its
    constructor that a Controller does not set itself."""
    return {p.name: p.default for p in inspect.signature(PLANNERS[name]).parameters.values()
            if p.name not in _SET_BY_CONTROLLER}


def check_planner_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` as keyword arguments of the planner called `name`, each one it takes
    (FastMBRLError naming the planner or option otherwise); a config can call it to refuse
    them before anything is written. Their values are checked when the planner is built."""
    if name not in PLANNERS:
        raise FastMBRLError(f"unknown planner {name!r}; choose one of {', '.join(PLANNERS)}")
    if not isinstance(options, dict):
        raise FastMBRLError(f"planner_options must be a mapping, got {options!r}")
    takes = list(planner_keywords(name))
    for key in options:
        if key not in takes:
            raise FastMBRLError(f"planner_options: {name} takes no option {key!r} (its "
                                f"options: {', '.join(takes)})")
    return dict(options)


def planning_objective(task: Task, shaping: bool = True) -> RewardFn:
    """The reward function planners maximise: the task's planning reward when it has one and
    `shaping` is on, else the environment's reward."""
    if not isinstance(shaping, bool):
        raise FastMBRLError(f"shaping must be True or False, got {shaping!r}")
    return task.planning_reward if shaping and task.planning_reward is not None else task.reward


def build_planner(name: str, model: DynamicsModel | FunctionModel | PackedModel, task: Task, horizon: int,
                  num_samples: int | None, seed: int, options: Mapping[str, Any] | None = None,
                  shaping: bool = True) -> Planner:
    """Construct the planner called `name` on `model` with `task`'s objective and bounds;
    `num_samples` None leaves the planner's own default, `options` are its other arguments."""
    kwargs = check_planner_options(name, options or {})
    if num_samples is not None:
        # options saved under the old name: the setting overrides them, as it always did
        budget = "population" if "population" in kwargs else "num_samples"
        kwargs[budget] = check_positive_int(num_samples, "num_samples")
    return PLANNERS[name](
        model,
        planning_objective(task, shaping),
        task.terminated,
        horizon=check_positive_int(horizon, "horizon"),
        action_low=task.action_low,
        action_high=task.action_high,
        seed=_check_seed(seed),
        **kwargs,
    )


class Controller:
    """Model predictive control with a learned dynamics model (or known dynamics, a
    FunctionModel): `act(obs) -> action`.

    `num_samples` None takes the planner's DEFAULT_NUM_SAMPLES; the settings record the
    number used."""

    def __init__(self, model: DynamicsModel | FunctionModel, task: str | Task, planner: str = DEFAULT_PLANNER,
                 horizon: int = DEFAULT_HORIZON, num_samples: int | None = None, seed: int = 0,
                 planner_options: Mapping[str, Any] | None = None, shaping: bool = True,
                 deadline_ms: float | None = None, particles: int | None = None,
                 propagation: str | None = None, risk: float | None = None) -> None:
        if not isinstance(task, (str, Task)):
            raise FastMBRLError(f"task must be a task name or a Task, got {task!r}")
        self.task = get_task(task) if isinstance(task, str) else task
        if (model.obs_dim, model.act_dim) != (self.task.obs_dim, self.task.act_dim):
            raise FastMBRLError(
                f"model sizes (obs {model.obs_dim}, act {model.act_dim}) do not fit task "
                f"{self.task.name} (obs {self.task.obs_dim}, act {self.task.act_dim})"
            )
        if model.absolute_obs_dims != self.task.absolute_obs_dims:
            raise FastMBRLError(
                f"the model predicts entries {model.absolute_obs_dims} as values, task "
                f"{self.task.name} has {self.task.absolute_obs_dims}: a learned reward needs a "
                "model trained for it")
        self.model = model
        sampling = {}
        if isinstance(model, DynamicsModel):  # trajectory sampling (None: the model's own)
            model.set_sampling(particles, propagation, risk)
            sampling = {"particles": model.particles, "propagation": model.propagation,
                        "risk": model.risk}
        elif (particles, propagation, risk) != (None, None, None):
            raise FastMBRLError("particles, propagation and risk apply to a learned "
                                "(probabilistic) model, not to known dynamics")
        self.settings: dict[str, Any] = {  # as controller.json records them
            "planner": planner,
            "horizon": check_positive_int(horizon, "horizon"),
            "num_samples": None if num_samples is None else check_positive_int(num_samples,
                                                                                "num_samples"),
            "seed": _check_seed(seed),
            "planner_options": dict(planner_options or {}),
            "shaping": shaping,
            "deadline_ms": None if deadline_ms is None else check_deadline(deadline_ms),
            **sampling,
        }
        self.planner = build_planner(planner, model, self.task, horizon, num_samples, seed,
                                     planner_options, shaping)
        self.settings["num_samples"] = self.planner.num_samples
        self.planner.deadline_ms = self.settings["deadline_ms"]

    def act(self, obs: npt.ArrayLike, out: npt.NDArray[np.float32] | None = None,
            deadline_ms: float | None = None) -> npt.NDArray[np.float32]:
        """The action (A,) for observation `obs` (O,): a new float32 array, or `out` (a
        writeable float32 (A,) array) filled in place. With `out` and `obs` a float32 or
        float64 ndarray of shape (O,), a call allocates no NumPy array (the embedded path, see
        fastmbrl.planning.planners); without it, the one array returned. `deadline_ms`
        (default: the controller's): the planner stops refining (CEM, MPPI and iCEM
        iterations) once that much time is spent and acts on the best so far."""
        if out is not None:
            return self.planner.act(obs, out, deadline_ms)
        return self.planner.act(obs, None, deadline_ms).copy()

    def predict(self, obs: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Actions for observations, as Stable-Baselines3's `predict` gives them: `obs` (O,)
        gives (A,), a batch (N, O) gives (N, A), always a new array. A batch is planned row by
        row with this controller's warm start, as the steps of one trajectory are; give each
        independent environment a controller of its own."""
        arr = np.asarray(obs)
        if arr.ndim != 2:
            return self.act(obs)
        actions = np.empty((arr.shape[0], self.task.act_dim), np.float32)
        for i in range(arr.shape[0]):
            self.planner.act(arr[i], actions[i])
        return actions

    def reset(self, seed: int | None = None) -> None:
        """Forget the warm start between episodes; a seed makes the episode reproducible."""
        self.planner.reset(seed)

    def save(self, directory: StrPath) -> Path:
        """Write model.npz and controller.json into `directory`; a controller on its task's
        known dynamics writes controller.json only (its "model" says so)."""
        directory = Path(directory)
        model = self.model
        known = isinstance(model, FunctionModel)
        if isinstance(model, FunctionModel) and (model.task != self.task.name
                                                 or model.dynamics is not self.task.dynamics):
            raise FastMBRLError("a FunctionModel of a function of your own is code, not data: "
                                "only a controller on its task's own dynamics "
                                "(FunctionModel.of_task) can be saved")
        directory.mkdir(parents=True, exist_ok=True)
        if isinstance(model, DynamicsModel):
            model.save(directory / MODEL_FILE)
        meta = {"format_version": CONTROLLER_FORMAT, "task": self.task.name, **self.settings,
                # the task's, for readers without fastmbrl; a load checks they still agree
                "action_low": self.task.action_low.tolist(),
                "action_high": self.task.action_high.tolist()}
        if known:
            meta["model"] = KNOWN_DYNAMICS
        write_json(directory / CONTROLLER_FILE, meta)
        return directory

    @classmethod
    def load(cls, path: StrPath, **overrides: Any) -> Controller:
        """Load from a run directory (or its model.npz); `overrides` replace saved settings."""
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        model_path = path if path.is_file() else directory / MODEL_FILE
        meta_path = directory / CONTROLLER_FILE
        meta = None
        if path.is_dir() and meta_path.exists():
            meta = read_json(meta_path, "")
        known = meta is not None and meta.get("model") == KNOWN_DYNAMICS
        if not known and not model_path.exists():
            raise FastMBRLError(f"no saved model at {model_path}")
        if meta is None:
            meta = read_json(meta_path, f"no {CONTROLLER_FILE} beside {model_path}: not a "
                                        "fastmbrl run")
        if meta.get("format_version") != CONTROLLER_FORMAT:
            raise FormatError(
                f"{meta_path} has controller format {meta.get('format_version')}; "
                f"this fastmbrl reads {CONTROLLER_FORMAT}"
            )
        try:
            settings = {k: meta[k] for k in ("task", "planner", "horizon", "num_samples", "seed",
                                              "planner_options")}
        except KeyError as exc:
            raise FormatError(f"{meta_path} has no setting {exc}") from None
        settings["shaping"] = meta.get("shaping", True)  # absent from older controller files
        settings["deadline_ms"] = meta.get("deadline_ms")
        for key in ("particles", "propagation", "risk"):  # absent from older files
            if key in meta:
                settings[key] = meta[key]
        settings.update(overrides)
        if known:
            try:
                model = FunctionModel.of_task(settings["task"])
            except FastMBRLError as exc:
                raise FormatError(f"{meta_path}: {exc}") from None
        else:
            model = DynamicsModel.load(model_path)
        # the saved settings go through the constructor's checks and limits; name the file
        source = f"{meta_path}" + (f" (with overrides of {', '.join(overrides)})"
                                   if overrides else "")
        try:
            controller = cls(model, **settings)
        except ResourceLimitError as exc:
            raise ResourceLimitError(f"{source}: {exc}") from None
        except FormatError:
            raise
        except (ValueError, TypeError) as exc:
            raise FormatError(f"{source}: {exc}") from exc
        task = controller.task
        for key, bound in (("action_low", task.action_low), ("action_high", task.action_high)):
            if key in meta:  # absent from files written before they were kept
                try:
                    saved = as_array(meta[key], key, (task.act_dim,))
                except ValueError as exc:
                    raise FormatError(f"{meta_path}: {exc}") from None
                if not np.array_equal(saved, bound):
                    raise FormatError(f"{meta_path}: {key} {saved.tolist()} differs from task "
                                      f"{task.name}'s {bound.tolist()}")
        return controller
