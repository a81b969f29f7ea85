"""Slow, obviously-right NumPy twins of fastmbrl's compiled and vectorised code (append only)."""
from __future__ import annotations

import numpy as np


def gae_reference(rewards, values, next_values, terminated, episode_end, gamma, lam):
    """GAE as the explicit sum Â_t = Σ_l (γλ)^l δ_{t+l} up to the end of t's episode segment,
    with δ_t = r_t + γ V(s_{t+1}) (0 after a termination) - V(s_t). Twin of kernels.trpo.gae."""
    n = len(rewards)
    deltas = [rewards[t] + (0.0 if terminated[t] else gamma * next_values[t]) - values[t]
              for t in range(n)]
    out = np.zeros(n)
    for t in range(n):
        total, weight = 0.0, 1.0
        for u in range(t, n):
            total += weight * deltas[u]
            if episode_end[u]:
                break
            weight *= gamma * lam
        out[t] = total
    return out
