"""Compiled loops of TRPO that do not vectorise: generalised advantage estimation."""
from __future__ import annotations

import numba

from . import FASTMATH


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def gae(rewards, values, next_values, terminated, episode_end, gamma, lam, out):
    """Backward recursion A_t = δ_t + γλ·A_{t+1}, cut where an episode (or the batch) ends.

    δ_t = r_t + γ·V(s_{t+1})·(1 - terminated_t) - V(s_t); float64 1-D arrays, `out` written.
    """
    acc = 0.0
    for t in range(rewards.shape[0] - 1, -1, -1):
        if episode_end[t]:
            acc = 0.0
        bootstrap = 0.0 if terminated[t] else gamma * next_values[t]
        acc = rewards[t] + bootstrap - values[t] + gamma * lam * acc
        out[t] = acc
