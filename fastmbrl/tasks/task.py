"""The task type and the registry of tasks.

A task is an environment, the reward and termination of its transitions as compiled functions
(the contract is in fastmbrl.tasks.builtin and docs/tasks.md), and facts about its observation
that a model needs: which entries are absolute positions (the model must not see them) and which
are free angles. The settings that suit an algorithm on a task are not the task's: they are the
algorithm's presets (fastmbrl.algorithms.presets).
"""
from __future__ import annotations

import dataclasses
import difflib
import operator
import types
import warnings
from collections.abc import Mapping

import numba
import numpy as np

from fastmbrl._validate import as_array, check_positive_int
from fastmbrl.errors import FastMBRLError, MissingExtraError, require

__all__ = ["Task", "register_task", "get_task", "list_tasks"]

#: the keys a Task's deprecated `defaults` may hold (MBRL settings under their old names)
LEGACY_DEFAULT_KEYS = (
    "random_steps", "iterations", "steps_per_iteration", "episode_length", "model_hidden",
    "model_activation", "model_epochs", "model_ensemble", "model_batch_size", "model_patience",
    "planner", "horizon", "num_samples", "ignore_obs_dims", "angle_obs_dims", "planner_options",
)


def _obs_dims(dims, name: str, obs_dim: int) -> tuple:
    try:
        dims = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise FastMBRLError(f"{name} must be a sequence of indices, got {dims!r}") from None
    if any(not 0 <= d < obs_dim for d in dims) or len(set(dims)) != len(dims):
        raise FastMBRLError(f"{name} must be distinct indices in [0, {obs_dim}), got {dims}")
    return dims


def _is_compiled(fn) -> bool:
    return isinstance(fn, numba.core.dispatcher.Dispatcher)


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A control task: how to make its environment and how to score imagined transitions.

    name: registry key (the built-ins use the Gymnasium id).
    env_id, env_kwargs: `gymnasium.make(env_id, **env_kwargs)` builds the environment; the kwargs
        are part of the task because the reward may depend on them (e.g. exposing x).
    obs_dim, act_dim: sizes of the flat observation and action vectors.
    action_low, action_high: float32 (act_dim,) bounds the planner samples within.
    reward: njit function (obs, act, next_obs, out) writing float32 rewards (see module docs).
    terminated: njit function writing np.bool_ flags, or None when the task never terminates.
    planning_reward: optional njit function with reward's signature that planners maximise
        instead of `reward` (shaping from knowledge of the task); evaluation always uses the
        environment's reward, and a run or controller with shaping=False plans with `reward`.
    ignore_obs_dims: observation entries a model must not see (absolute positions exposed only
        for the reward, e.g. HalfCheetah's x).
    angle_obs_dims: observation entries that are free angles (a model sees their sine and
        cosine).
    defaults: deprecated; MBRL settings under their old names (model_hidden, iterations, ...).
        Register presets instead: ``fastmbrl.algorithms.presets.register_preset("mbrl", name,
        {...})`` in the configuration's own field names.
    """

    name: str
    env_id: str
    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    reward: object
    terminated: object = None
    planning_reward: object = None
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    ignore_obs_dims: tuple = ()
    angle_obs_dims: tuple = ()
    defaults: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: fields are normalised once, here
        for field in ("name", "env_id"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise FastMBRLError(f"Task {field} must be a non-empty string, got {value!r}")
        try:
            obs_dim = check_positive_int(self.obs_dim, "obs_dim")
            act_dim = check_positive_int(self.act_dim, "act_dim")
            low = as_array(self.action_low, "action_low", (act_dim,)).copy()
            high = as_array(self.action_high, "action_high", (act_dim,)).copy()
        except ValueError as exc:
            raise FastMBRLError(f"Task {self.name!r}: {exc}") from exc
        if not np.all(low < high):
            raise FastMBRLError(f"Task {self.name!r}: action_low must be below action_high")
        low.flags.writeable = high.flags.writeable = False
        if not _is_compiled(self.reward):
            raise FastMBRLError(
                f"Task {self.name!r}: reward must be a numba.njit function "
                f"(obs, act, next_obs, out), got {self.reward!r}")
        for field in ("terminated", "planning_reward"):
            fn = getattr(self, field)
            if fn is not None and not _is_compiled(fn):
                raise FastMBRLError(
                    f"Task {self.name!r}: {field} must be None or a numba.njit function "
                    f"(obs, act, next_obs, out), got {fn!r}")
        if not isinstance(self.env_kwargs, dict):
            raise FastMBRLError(f"Task {self.name!r}: env_kwargs must be a dict")
        set_(self, "obs_dim", obs_dim)
        set_(self, "act_dim", act_dim)
        set_(self, "action_low", low)
        set_(self, "action_high", high)
        set_(self, "env_kwargs", dict(self.env_kwargs))
        defaults = self.defaults
        if not isinstance(defaults, Mapping):
            raise FastMBRLError(f"Task {self.name!r}: defaults must be a dict, got "
                                f"{type(defaults).__name__}")
        unknown = sorted(set(defaults) - set(LEGACY_DEFAULT_KEYS))
        if unknown:
            raise FastMBRLError(f"Task {self.name!r}: defaults: unknown key(s) {unknown}; known "
                                f"keys: {sorted(LEGACY_DEFAULT_KEYS)}")
        if defaults:
            warnings.warn("Task(defaults=...) is deprecated: observation facts are the fields "
                          "ignore_obs_dims and angle_obs_dims, settings are presets "
                          "(fastmbrl.algorithms.presets.register_preset)", DeprecationWarning,
                          stacklevel=3)
        ignore = defaults.get("ignore_obs_dims", self.ignore_obs_dims)
        angles = defaults.get("angle_obs_dims", self.angle_obs_dims)
        set_(self, "ignore_obs_dims", _obs_dims(ignore, "ignore_obs_dims", obs_dim))
        set_(self, "angle_obs_dims", _obs_dims(angles, "angle_obs_dims", obs_dim))
        if set(self.ignore_obs_dims) & set(self.angle_obs_dims):
            raise FastMBRLError(f"Task {self.name!r}: ignore_obs_dims and angle_obs_dims must "
                                "not share an index")
        # read-only, so that a registered task cannot change under the runs that use it
        legacy = {k: v for k, v in defaults.items() if k not in ("ignore_obs_dims",
                                                                   "angle_obs_dims")}
        if isinstance(legacy.get("planner_options"), Mapping):
            legacy["planner_options"] = types.MappingProxyType(dict(legacy["planner_options"]))
        set_(self, "defaults", types.MappingProxyType(legacy))

    def make_env(self, **overrides):
        """Create the Gymnasium environment with `env_kwargs`, updated by `overrides`.

        Overrides are meant for things such as render_mode or max_episode_steps; one that changes
        the reward's parameters (weights, ranges) silently breaks parity with `reward`, and one
        that changes the observation or action size is refused.
        """
        gym = require("gymnasium", "envs", f"the environment of task {self.name!r}")
        try:
            env = gym.make(self.env_id, **{**self.env_kwargs, **overrides})
        except gym.error.DependencyNotInstalled as exc:  # MuJoCo tasks without mujoco
            raise MissingExtraError(
                "mujoco", "envs", f"the environment of task {self.name!r}") from exc
        try:
            obs_dim, act_dim, _, _ = _continuous_spaces(env, self.env_id)
            if (obs_dim, act_dim) != (self.obs_dim, self.act_dim):
                raise FastMBRLError(
                    f"task {self.name!r} expects observation size {self.obs_dim} and action size "
                    f"{self.act_dim}, but {self.env_id} made with {overrides or 'its kwargs'} has "
                    f"{obs_dim} and {act_dim}")
        except BaseException:
            env.close()
            raise
        return env

    @classmethod
    def from_env(cls, env_id: str, reward, terminated=None, *, name: str | None = None,
                 env_kwargs: dict | None = None, planning_reward=None, ignore_obs_dims=(),
                 angle_obs_dims=(), defaults: dict | None = None) -> "Task":
        """Build a task for a Gymnasium environment with a continuous (Box) action space.

        Makes the environment once to read its spaces. Refuses discrete or unbounded action
        spaces with a FastMBRLError.
        """
        gym = require("gymnasium", "envs", f"building a task from {env_id!r}")
        env_kwargs = dict(env_kwargs or {})
        try:
            env = gym.make(env_id, **env_kwargs)
        except gym.error.Error as exc:
            raise FastMBRLError(f"cannot make Gymnasium environment {env_id!r}: {exc}") from exc
        try:
            obs_dim, act_dim, low, high = _continuous_spaces(env, env_id)
        finally:
            env.close()
        return cls(name=name or env_id, env_id=env_id, obs_dim=obs_dim, act_dim=act_dim,
                   action_low=low, action_high=high, reward=reward, terminated=terminated,
                   planning_reward=planning_reward, env_kwargs=env_kwargs,
                   ignore_obs_dims=ignore_obs_dims, angle_obs_dims=angle_obs_dims,
                   defaults=defaults or {})


def _continuous_spaces(env, env_id: str):
    """(obs_dim, act_dim, low, high) of a Box-in, Box-out environment, or a FastMBRLError."""
    from gymnasium import spaces

    act_space, obs_space = env.action_space, env.observation_space
    if not isinstance(act_space, spaces.Box):
        raise FastMBRLError(
            f"{env_id} has a {type(act_space).__name__} action space ({act_space}); fastmbrl plans "
            "continuous actions and supports only Box action spaces")
    if len(act_space.shape) != 1 or not (np.isfinite(act_space.low).all()
                                         and np.isfinite(act_space.high).all()):
        raise FastMBRLError(
            f"{env_id}: the action space must be a 1-D Box with finite bounds, got {act_space}")
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise FastMBRLError(
            f"{env_id}: the observation space must be a 1-D Box (flatten it with a wrapper "
            f"first), got {obs_space}")
    return (int(obs_space.shape[0]), int(act_space.shape[0]),
            act_space.low.astype(np.float32), act_space.high.astype(np.float32))


_REGISTRY: dict[str, Task] = {}


def _check_functions(task: Task) -> None:
    """Call the task's functions on a tiny batch so that a wrong signature fails here, clearly."""
    obs = np.zeros((2, task.obs_dim), np.float32)
    act = np.zeros((2, task.act_dim), np.float32)
    for fn_name, dtype in (("reward", np.float32), ("terminated", np.bool_),
                           ("planning_reward", np.float32)):
        fn = getattr(task, fn_name)
        if fn is None:
            continue
        out = np.zeros(2, dtype)
        try:
            result = fn(obs, act, obs.copy(), out)
        except Exception as exc:
            raise FastMBRLError(
                f"task {task.name!r}: {fn_name}(obs (2, {task.obs_dim}), act (2, {task.act_dim}), "
                f"next_obs, out (2,) {np.dtype(dtype).name}) failed: {exc}") from exc
        if result is not None:
            raise FastMBRLError(
                f"task {task.name!r}: {fn_name} must write into `out` and return None, "
                f"it returned {type(result).__name__}")


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Add `task` to the registry under `task.name`; returns it.

    Its functions are called once on a tiny batch (compiling them) to catch a wrong signature
    now rather than inside the planner. A name already taken is refused unless overwrite=True.
    """
    if not isinstance(task, Task):
        raise FastMBRLError(f"register_task expects a Task, got {type(task).__name__}")
    if task.name in _REGISTRY and not overwrite:
        raise FastMBRLError(
            f"a task named {task.name!r} is already registered (pass overwrite=True to replace it)")
    _check_functions(task)
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called `name`; a FastMBRLError listing the known tasks otherwise."""
    task = _REGISTRY.get(name) if isinstance(name, str) else None
    if task is None:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FastMBRLError(
            f"unknown task {name!r}.{hint} Known tasks: {', '.join(list_tasks())}. Another "
            "continuous-action Gymnasium environment can be added with register_task "
            "(see docs/tasks.md).")
    return task


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_REGISTRY)


