"""Tasks whose reward and termination the dynamics model learns, for any continuous-action
Gymnasium environment, with no reward function written.

`learned-reward/ENV_ID` is ENV_ID with two columns appended to its observation: the reward and
the termination flag (0 or 1) of the step that led to it (both 0 after a reset). The model
predicts them as values (`absolute_obs_dims`), not as changes, and never sees them as inputs
(`ignore_obs_dims`), so it learns r(s, a) and done(s, a) beside the dynamics; the planner's
reward and termination read them from the predicted next observation, inside the same fused
kernel. Evaluation still scores the environment's own reward. When ENV_ID is a registered task,
its facts (environment options, ignored and angle entries) and MBRL preset carry over.
"""
from __future__ import annotations

import numba
import numpy as np

from fastmbrl.errors import FastMBRLError, require
from fastmbrl.kernels import FASTMATH

PREFIX = "learned-reward/"

#: a learned termination column above this is a termination
DONE_THRESHOLD = np.float32(0.5)


@numba.njit(cache=True, fastmath=FASTMATH)
def learned_reward(obs, act, next_obs, out):
    col = next_obs.shape[1] - 2
    for i in range(next_obs.shape[0]):
        out[i] = next_obs[i, col]


@numba.njit(cache=True, fastmath=FASTMATH)
def learned_terminated(obs, act, next_obs, out):
    col = next_obs.shape[1] - 1
    for i in range(next_obs.shape[0]):
        out[i] = next_obs[i, col] > DONE_THRESHOLD


def base_id(name: str) -> str | None:
    """ENV_ID of a `learned-reward/ENV_ID` name (None for another name)."""
    if isinstance(name, str) and name.startswith(PREFIX):
        return name[len(PREFIX):]
    return None


def _wrapped(env_id: str, kwargs: dict):
    gym = require("gymnasium", "envs", f"the environment of {PREFIX}{env_id}")

    class RewardInObservation(gym.Wrapper):  # type: ignore[name-defined]  # imported at run time
        """Appends (reward, terminated) of the last step to the observation."""

        def __init__(self, env):
            super().__init__(env)
            space = env.observation_space
            low = np.concatenate([space.low, [-np.inf, 0]]).astype(space.dtype)
            high = np.concatenate([space.high, [np.inf, 1]]).astype(space.dtype)
            self.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)

        def reset(self, *, seed=None, options=None):
            obs, info = self.env.reset(seed=seed, options=options)
            return np.concatenate([obs, [0, 0]]).astype(obs.dtype), info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            extra = [reward, 1.0 if terminated else 0.0]
            return np.concatenate([obs, extra]).astype(obs.dtype), reward, terminated, \
                truncated, info

    return RewardInObservation(gym.make(env_id, **kwargs))


def register_env(name: str, base_env_id: str) -> None:
    """Register `learned-reward/ENV_ID` with Gymnasium: `base_env_id` made with the given
    options, wrapped so that its observation carries the reward and termination columns."""
    gym = require("gymnasium", "envs", f"the task {name}")
    if name not in gym.envs.registry:
        try:  # the environment inside is checked by its own gym.make
            gym.register(id=name, entry_point=lambda **kw: _wrapped(base_env_id, kw),
                         disable_env_checker=True)
        except gym.error.Error as exc:
            raise FastMBRLError(f"{name!r}: not a Gymnasium id ({exc})") from None
