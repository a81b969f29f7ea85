"""The settings that suit each algorithm on each task, in the configurations' own field names.

A run's setting comes from what was given, else from here, else from the field's declared
default (fastmbrl.algorithms.config). Users add presets for their own tasks (or replace ours)
with `fastmbrl.algorithms.register_preset`.
"""
from __future__ import annotations

from collections.abc import Mapping

from fastmbrl.errors import FastMBRLError

# MBRL (Algorithm 1). Sources: Nagabandi et al. 2018 (random rollouts, K, H, epochs, aggregation
# rounds for Swimmer, HalfCheetah, Hopper), PETS / mbrl-lib (CEM population 400-500, horizon
# 25-30, SiLU); steps meet the budgets of issue 4. Episodes last the environment's own limit.
MBRL = {
    # H = 40, not 25: every one of seeds 0-9 then reaches >= -200 on 20 held-out episodes
    # (mean -162; exact dynamics on the same episodes -157); at H = 25 one seed fell to -215
    "Pendulum-v1": dict(
        steps=5_000, random_steps=1000, steps_per_iteration=400, hidden=(64, 64),
        activation="silu", epochs=50, planner="cem", horizon=40, num_samples=400),
    # the +100 of the goal is only seen by plans long enough to pump there (H = 150); strongly
    # colored noise (beta 2.5) and a wide initial std make such smooth bang-bang sequences
    # likely among 400 candidates (200 missed the goal in some evaluation episodes of one seed)
    "MountainCarContinuous-v0": dict(
        steps=11_990, random_steps=2000, steps_per_iteration=999, hidden=(64, 64),
        activation="silu", epochs=200, batch_size=32, patience=20, planner="icem", horizon=150,
        num_samples=400,
        planner_options={"noise_beta": 2.5, "init_std": 1.0, "iterations": 3, "elites": 10}),
    # measured over seeds 0-2 (bench/learning.py). Batch 32 and 400 epochs fit the model ~5x
    # better than batch 256 and 50; MPPI with small noise keeps the cart steadier than CEM, whose
    # elite means are noisy when every candidate survives the flat reward. Planning with the
    # centring term of inverted_pendulum_planning_reward keeps the pole up for 1000 steps.
    "InvertedPendulum-v5": dict(
        steps=5_000, random_steps=1000, steps_per_iteration=1000, hidden=(200, 200),
        activation="silu", epochs=400, batch_size=32, patience=30, planner="mppi", horizon=30,
        num_samples=500, planner_options={"noise_std": 0.15}),
    "Reacher-v5": dict(
        steps=20_000, random_steps=2000, steps_per_iteration=1000, activation="silu", epochs=50,
        planner="cem", horizon=25, num_samples=400),
    # random shooting with one model reached 442 at 50k steps; CEM on one model exploits its
    # errors and turns the cheetah over. A 3-member ensemble and longer fits let CEM work.
    "HalfCheetah-v5": dict(
        steps=50_000, random_steps=10_000, steps_per_iteration=5000, hidden=(200, 200),
        activation="silu", epochs=150, ensemble_size=3, batch_size=128, patience=15,
        planner="cem", horizon=20, num_samples=200, planner_options={"iterations": 4}),
    # HalfCheetah's ensemble and CEM, planning with the task's shaped objective (a fall penalty,
    # a height and a joint-posture cost: builtin.hopper_planning_reward). With the reward alone
    # the hopper sinks into a crouch over ~150 steps, which 30-step plans see too late.
    "Hopper-v5": dict(
        steps=100_000, random_steps=5000, steps_per_iteration=5000, hidden=(200, 200),
        activation="silu", epochs=150, ensemble_size=3, batch_size=128, patience=15,
        planner="cem", horizon=30, num_samples=200, planner_options={"iterations": 4}),
    "Swimmer-v5": dict(
        steps=85_000, random_steps=25_000, steps_per_iteration=10_000, epochs=30, planner="rs",
        horizon=20, num_samples=5000),
    "InvertedDoublePendulum-v5": dict(
        steps=6_000, random_steps=1000, steps_per_iteration=1000, epochs=50, planner="cem",
        horizon=20, num_samples=400),
    "Pusher-v5": dict(
        steps=22_000, random_steps=2000, steps_per_iteration=1000, activation="silu", epochs=50,
        planner="cem", horizon=25, num_samples=500),
}

# TRPO: the budgets of issue 5's targets; Pendulum's short horizon wants γ 0.9 as in the zoo.
TRPO = {
    "Pendulum-v1": dict(steps=200_000, gamma=0.9),
    "InvertedPendulum-v5": dict(steps=100_000),
    # measured here: log σ = -1 reached 1,500 at ~115k steps (2 seeds), log σ = 0 at 612k-784k
    "HalfCheetah-v5": dict(steps=1_000_000, init_log_std=-1.0),
}

# World Models: the paper's sizes for CarRacing with the data cut to what this machine collects
# (about 200 steps/s per core, Zen 4); the pixel Pendulum is small (its frames hold a rod on
# white).
WORLDMODELS = {
    # M: the paper's 20 epochs over 10,000 episodes are some 4,000 Adam steps; over 100 episodes
    # an epoch is 10 steps (batch 100, windows of 100), so M trains 300 epochs (about 15 min)
    "CarRacing-v3": dict(episodes=100, vae_epochs=10, rnn_epochs=300, generations=100,
                         rollouts=1, train_in="real"),
    # V at the paper's lr 1e-4 and batch 100 stayed at a blank frame whose z says nothing (the
    # rod is 1 % of the pixels); at 1e-3 and 32 it finds the angle within about 1,000 steps.
    # M: 30 epochs are only 600 Adam steps on 100 episodes (z NLL 1.27, reward MSE 1.3, a dream
    # C learned nothing from); 300 reach 0.85 and 0.04 in 70 s
    "Pendulum-v1": dict(episodes=100, z_size=8, rnn_hidden=64, vae_epochs=10, rnn_epochs=300,
                        vae_lr=1e-3, vae_batch_size=32,
                        seq_len=50, rnn_batch_size=20, generations=40, rollouts=4,
                        dream_temperature=1.0, train_in="real"),
}

_PRESETS = {"mbrl": MBRL, "trpo": TRPO, "mbmf": {}, "worldmodels": WORLDMODELS}


def store_preset(algo: str, task: str, settings: Mapping, overwrite: bool = False) -> None:
    """Keep `settings` as the preset of `algo` on `task` (fastmbrl.algorithms.register_preset
    checks the names against the algorithm's config first)."""
    if algo not in _PRESETS:
        raise FastMBRLError(f"unknown algorithm {algo!r}; choose one of {', '.join(_PRESETS)}")
    if task in _PRESETS[algo] and not overwrite:
        raise FastMBRLError(f"{task} already has a {algo} preset (pass overwrite=True to "
                            "replace it)")
    _PRESETS[algo][task] = dict(settings)


def preset(algo: str, task: str) -> dict:
    """A copy of the preset of `algo` on `task` (after a task's deprecated `defaults`)."""
    if algo not in _PRESETS:
        raise FastMBRLError(f"unknown algorithm {algo!r}; choose one of {', '.join(_PRESETS)}")
    from fastmbrl.tasks.learned import base_id

    out = {}
    if algo == "mbrl":
        from fastmbrl.tasks import get_task

        out.update(_from_legacy_defaults(get_task(task).defaults))
    # a learned-reward task takes its environment's preset
    out.update(_PRESETS[algo].get(base_id(task) or task, {}))
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in out.items()}


# Task(defaults=...) of earlier versions: MBRL settings under other names
_LEGACY_NAMES = {"model_hidden": "hidden", "model_activation": "activation",
                 "model_epochs": "epochs", "model_ensemble": "ensemble_size",
                 "model_batch_size": "batch_size", "model_patience": "patience"}


def _from_legacy_defaults(defaults: Mapping) -> dict:
    out = {_LEGACY_NAMES.get(k, k): v for k, v in defaults.items() if k != "iterations"}
    if {"iterations", "random_steps", "steps_per_iteration"} & set(defaults):
        # the budget was random_steps + iterations x steps_per_iteration, with these fallbacks
        out["steps"] = (defaults.get("random_steps", 2000)
                        + defaults.get("iterations", 10) * defaults.get("steps_per_iteration", 1000))
    return out
