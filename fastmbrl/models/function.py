"""Known dynamics as a model the planners can use: `FunctionModel`.

Controls engineers often have the equations. A FunctionModel wraps a numba step function
``dynamics(obs, act, next_obs)`` over a batch of rows (the contract of task rewards, writing the
next observations) so that every planner runs on it through the same fused rollout kernel and
interface as on a learned DynamicsModel. With a task's exact dynamics (`FunctionModel.of_task`,
built in for Pendulum-v1 and MountainCarContinuous-v0) it is the upper bound of what a learned
model can reach.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import as_array, check_positive_int
from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels.isa import Spec
from fastmbrl.kernels.rollout import PackedModel, pack_dynamics
from fastmbrl.tasks.task import DynamicsFn, Task, get_task


class FunctionModel:
    """The model ``next_obs = dynamics(obs, act)`` of a numba function over a batch of rows.

    It has one member, never changes (`version` 0) and has nothing to fit; `task` names the task
    whose dynamics it is, when it is one's (a saved controller records it).
    """

    version = 0
    num_members = 1
    ensemble_size = 1
    absolute_obs_dims: tuple[int, ...] = ()

    def __init__(self, dynamics: DynamicsFn, obs_dim: int, act_dim: int,
                 task: str | None = None) -> None:
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.act_dim = check_positive_int(act_dim, "act_dim")
        self.dynamics, self.task = dynamics, task
        self._packed: dict[str | None, PackedModel] = {}
        try:
            self.packed(None)  # refuses a function numba did not compile
        except TypeError as exc:
            raise FastMBRLError(str(exc)) from None

    @classmethod
    def of_task(cls, task: str | Task) -> FunctionModel:
        """The task's own exact dynamics (FastMBRLError when it has none)."""
        task = get_task(task) if isinstance(task, str) else task
        if task.dynamics is None:
            raise FastMBRLError(f"task {task.name} has no known dynamics (Task.dynamics); "
                                "plan with a learned model, or give a FunctionModel your own")
        return cls(task.dynamics, task.obs_dim, task.act_dim, task=task.name)

    def __repr__(self) -> str:
        name = getattr(getattr(self.dynamics, "py_func", None), "__qualname__", "?")
        return f"FunctionModel({name}, obs_dim={self.obs_dim}, act_dim={self.act_dim})"

    def packed(self, isa: str | Spec | None = None) -> PackedModel:
        """The kernel's form for an instruction-set spec (kept per spec)."""
        key = None if isa is None else str(getattr(isa, "key", isa))
        found = self._packed.get(key)
        if found is None:
            found = self._packed[key] = pack_dynamics(self.dynamics, self.obs_dim, self.act_dim,
                                                      isa)
        return found

    def predict(self, obs: npt.ArrayLike, act: npt.ArrayLike) -> np.ndarray:
        """Next observations (N, O) float32 of a batch, or (O,) of one row."""
        single = np.ndim(obs) == 1
        obs = as_array(np.atleast_2d(obs), "obs", (None, self.obs_dim))
        act = as_array(np.atleast_2d(act), "act", (obs.shape[0], self.act_dim))
        out = np.empty_like(obs)
        self.dynamics(obs, act, out)
        return out[0] if single else out
