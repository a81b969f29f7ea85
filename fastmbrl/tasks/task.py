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
import importlib
import operator
import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from fastmbrl._validate import as_array, check_positive_int
from fastmbrl.errors import FastMBRLError, MissingExtraError, require
from fastmbrl.tasks import learned

if TYPE_CHECKING:
    import gymnasium

__all__ = ["Task", "register_task", "get_task", "list_tasks", "import_tasks", "task_source"]

#: a task's reward: a numba-compiled ``f(obs, act, next_obs, out)`` writing float32 rewards
#: (N,) for float32 batches obs (N, obs_dim), act (N, act_dim), next_obs (N, obs_dim)
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
#: a task's termination: the same signature, writing np.bool_ flags (N,) into `out`
TerminatedFn = RewardFn
#: a task's known dynamics: a numba-compiled ``f(obs, act, next_obs)`` writing the next
#: observation of every row into next_obs (N, obs_dim) float32
DynamicsFn = Callable[[np.ndarray, np.ndarray, np.ndarray], None]

#: the entry-point group an installed package names its tasks in (name = the task's name,
#: value = "module:attribute" of a Task or of a function returning one)
ENTRY_POINT_GROUP = "fastmbrl.tasks"

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
    absolute_obs_dims: observation entries a model predicts as values rather than as changes
        (a learned reward column: fastmbrl.tasks.learned).
    dynamics: optional njit function (obs, act, next_obs) writing the environment's next
        observation of every row, when its physics is known exactly (a FunctionModel plans with
        it: the upper bound of what a learned model can reach).
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
    reward: RewardFn
    terminated: TerminatedFn | None = None
    planning_reward: RewardFn | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ignore_obs_dims: tuple[int, ...] = ()
    angle_obs_dims: tuple[int, ...] = ()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    absolute_obs_dims: tuple[int, ...] = ()
    dynamics: DynamicsFn | None = None

    def __post_init__(self) -> None:
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
        for field in ("terminated", "planning_reward", "dynamics"):
            fn = getattr(self, field)
            if fn is not None and not _is_compiled(fn):
                args = "(obs, act, next_obs" + ("" if field == "dynamics" else ", out") + ")"
                raise FastMBRLError(
                    f"Task {self.name!r}: {field} must be None or a numba.njit function "
                    f"{args}, got {fn!r}")
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
        set_(self, "absolute_obs_dims",
             _obs_dims(self.absolute_obs_dims, "absolute_obs_dims", obs_dim))
        if set(self.absolute_obs_dims) & set(self.angle_obs_dims):
            raise FastMBRLError(f"Task {self.name!r}: absolute_obs_dims and angle_obs_dims must "
                                "not share an index")
        # read-only, so that a registered task cannot change under the runs that use it
        legacy = {k: v for k, v in defaults.items() if k not in ("ignore_obs_dims",
                                                                   "angle_obs_dims")}
        if isinstance(legacy.get("planner_options"), Mapping):
            legacy["planner_options"] = types.MappingProxyType(dict(legacy["planner_options"]))
        set_(self, "defaults", types.MappingProxyType(legacy))

    def make_env(self, **overrides: Any) -> gymnasium.Env:
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
    def from_env(cls, env_id: str | Callable[..., gymnasium.Env], reward: RewardFn,
                 terminated: TerminatedFn | None = None, *, name: str | None = None,
                 env_kwargs: dict[str, Any] | None = None, planning_reward: RewardFn | None = None,
                 ignore_obs_dims: Iterable[int] = (), angle_obs_dims: Iterable[int] = (),
                 defaults: dict[str, Any] | None = None,
                 absolute_obs_dims: Iterable[int] = (),
                 dynamics: DynamicsFn | None = None) -> Task:
        """Build a task for a Gymnasium environment with a continuous (Box) action space.

        `env_id` is a registered Gymnasium id, or an environment class or a function returning
        an environment, which is registered with Gymnasium under `name` (default: the class's
        name + "-v0"). Makes the environment once to read its spaces. Refuses discrete or
        unbounded action spaces with a FastMBRLError.
        """
        gym = require("gymnasium", "envs", f"building a task from {env_id!r}")
        if not isinstance(env_id, str):
            env_id = _register_env(gym, env_id, name)
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
                   ignore_obs_dims=tuple(ignore_obs_dims), angle_obs_dims=tuple(angle_obs_dims),
                   defaults=defaults or {}, absolute_obs_dims=tuple(absolute_obs_dims),
                   dynamics=dynamics)


def _register_env(gym, factory, name) -> str:
    """Register an environment class or factory with Gymnasium; returns its id."""
    if not callable(factory):
        raise FastMBRLError(f"Task.from_env: env_id must be a Gymnasium id, an environment "
                            f"class or a function returning an environment, got {factory!r}")
    env_id = name or f"{getattr(factory, '__name__', 'Env')}-v0"
    spec = gym.envs.registry.get(env_id)
    if spec is not None and spec.entry_point is not factory:
        raise FastMBRLError(f"Task.from_env: the Gymnasium id {env_id!r} is taken by "
                            f"{spec.entry_point!r}; pass another name=")
    if spec is None:
        try:
            gym.register(id=env_id, entry_point=factory)
        except gym.error.Error as exc:
            raise FastMBRLError(f"Task.from_env: cannot register {env_id!r} with Gymnasium: "
                                f"{exc} (name= must look like 'Name-v0')") from exc
    return env_id


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
    if task.dynamics is not None:
        try:
            result = task.dynamics(obs, act, obs.copy())
        except Exception as exc:
            raise FastMBRLError(
                f"task {task.name!r}: dynamics(obs (2, {task.obs_dim}), act (2, {task.act_dim}), "
                f"next_obs (2, {task.obs_dim})) failed: {exc}") from exc
        if result is not None:
            raise FastMBRLError(f"task {task.name!r}: dynamics must write into `next_obs` and "
                                f"return None, it returned {type(result).__name__}")


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
    """The task called `name`: a registered one; `learned-reward/ENV_ID` (made now: any
    continuous-action Gymnasium environment, reward and termination learned by the model); one
    an installed package names in the `fastmbrl.tasks` entry-point group; else a FastMBRLError
    that says how to add one."""
    task = _REGISTRY.get(name) if isinstance(name, str) else None
    if task is None and learned.base_id(name):
        task = register_task(_learned_task(name))
    if task is None and isinstance(name, str):
        task = _entry_point_task(name)
    if task is None:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FastMBRLError(
            f"unknown task {name!r}.{hint} Known tasks: {', '.join(list_tasks())}. To use "
            "another continuous-action Gymnasium environment, write its reward as a numba.njit "
            "function reward(obs, act, next_obs, out) and register it in a module of yours with "
            "register_task(Task.from_env(ENV_ID, reward)); then pass --import MODULE to "
            "fastmbrl, or name the task MODULE:ATTRIBUTE (docs/tasks.md). Or let the model "
            f"learn the reward: {learned.PREFIX}ENV_ID (--learned-reward).")
    return task


def _learned_task(name: str) -> Task:
    """The Task `learned-reward/ENV_ID` (fastmbrl.tasks.learned), with the facts of ENV_ID's
    registered task when there is one."""
    env_id = learned.base_id(name)
    if not env_id or ":" in env_id or learned.base_id(env_id):
        # Gymnasium would import the module named before a ':'; a name read from a file must not
        raise FastMBRLError(f"{name!r}: expected {learned.PREFIX}ENV_ID with ENV_ID a "
                            "Gymnasium id")
    base = _REGISTRY.get(env_id)
    env_kwargs = {} if base is None else dict(base.env_kwargs)
    learned.register_env(name, env_id if base is None else base.env_id)
    gym = require("gymnasium", "envs", f"the task {name}")
    try:
        env = gym.make(name, **env_kwargs)
    except gym.error.Error as exc:
        gym.envs.registry.pop(name, None)  # nothing left of a name that does not work
        raise FastMBRLError(f"cannot make Gymnasium environment {env_id!r}: {exc}") from None
    try:
        n = _continuous_spaces(env, env_id)[0]
    finally:
        env.close()
    extra = (n - 2, n - 1)
    if env_id in _SOURCES:  # a task of the user's: a resume must import its module again
        _SOURCES[name] = _SOURCES[env_id]
    return Task.from_env(name, learned.learned_reward, learned.learned_terminated, name=name,
                         env_kwargs=env_kwargs,
                         angle_obs_dims=() if base is None else base.angle_obs_dims,
                         ignore_obs_dims=(() if base is None else base.ignore_obs_dims) + extra,
                         absolute_obs_dims=extra)


#: where the tasks that import_tasks added came from: task name -> the spec that added it
_SOURCES: dict[str, str] = {}
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_tasks(spec: str) -> list[Task]:
    """Load a user's tasks. `spec` is "module" (imported; it registers its tasks) or
    "module:attribute" (a Task, or a function returning one, registered here). The module is
    looked up on the Python path and then in the current directory, as `python -m` does.
    Returns the tasks this added or named; `task_source(name)` remembers the spec."""
    if not isinstance(spec, str):
        raise FastMBRLError(f"a task module must be named by a string, got {spec!r}")
    module_name, _, attr = spec.partition(":")
    if not _MODULE.fullmatch(module_name) or (attr and not _MODULE.fullmatch(attr)):
        raise FastMBRLError(f"{spec!r} is not a module name or MODULE:ATTRIBUTE")
    if module_name.partition(".")[0] in sys.stdlib_module_names:
        # a task module is never the standard library's, and some of those act when imported
        raise FastMBRLError(f"{module_name!r} is a standard-library module, not a task module")
    known = [_REGISTRY[n] for n, src in _SOURCES.items() if src == spec and n in _REGISTRY]
    if known:
        return known  # imported before (a factory is not called twice)
    before = set(_REGISTRY)
    module = _import(module_name)
    if attr:
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise FastMBRLError(f"task module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        task = _as_task(obj, spec)
        if _REGISTRY.get(task.name) is not task:
            register_task(task)
        added = [task]
    else:
        added = [_REGISTRY[n] for n in sorted(set(_REGISTRY) - before)]
        if not added:  # imported before (by the user's own code): its tasks are registered
            added = [t for t in _REGISTRY.values()
                     if getattr(getattr(t.reward, "py_func", t.reward), "__module__", None)
                     == module_name]
    for task in added:
        _SOURCES.setdefault(task.name, spec)
    return added


def task_source(name: str) -> str | None:
    """The import_tasks spec that added task `name` (None: built in, or registered directly)."""
    return _SOURCES.get(name)


def _import(module_name: str):
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise FastMBRLError(f"no task module {module_name!r} on the Python path or in "
                                f"{cwd}") from None
        raise FastMBRLError(f"task module {module_name!r} needs a module that is not "
                            f"installed: {exc}") from exc
    except FastMBRLError:
        raise
    except Exception as exc:
        raise FastMBRLError(f"importing task module {module_name!r} failed: "
                            f"{type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)


def _as_task(obj, where: str) -> Task:
    if not isinstance(obj, Task) and callable(obj):
        try:
            obj = obj()
        except FastMBRLError:
            raise
        except Exception as exc:
            raise FastMBRLError(f"{where}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, Task):
        raise FastMBRLError(f"{where} is not a Task or a function returning one, got "
                            f"{type(obj).__name__}")
    return obj


def _entry_point_task(name: str) -> Task | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != name:
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            raise FastMBRLError(f"task {name!r} of the installed package entry point "
                                f"{ep.value!r} failed to load: {type(exc).__name__}: "
                                f"{exc}") from exc
        task = _as_task(obj, f"entry point {ep.value!r}")
        if task.name != name:
            raise FastMBRLError(f"entry point {name!r} ({ep.value}) gives a task named "
                                f"{task.name!r}")
        if _REGISTRY.get(name) is not task:
            register_task(task)
        return task
    return None


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_REGISTRY)


