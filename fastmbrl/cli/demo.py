"""`fastmbrl demo`: fit a dynamics model on Pendulum-v1 transitions and report its error.

Transitions come from gymnasium when it is installed, else from the pendulum's own equations
(the same as Gymnasium's Pendulum-v1: g = 10, m = l = 1, dt = 0.05, |u| <= 2, |θ̇| <= 8).
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.errors import FastMBRLError

EPISODE_STEPS = 200


def _pendulum_step(th, thdot, u):
    g, m, l, dt = 10.0, 1.0, 1.0, 0.05
    u = np.clip(u, -2.0, 2.0)
    thdot = np.clip(thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l * l) * u) * dt, -8.0, 8.0)
    return th + thdot * dt, thdot


def _obs(th, thdot):
    return np.array([np.cos(th), np.sin(th), thdot], np.float32)


def pendulum_episodes(steps: int, seed: int = 0, use_gymnasium: bool | None = None):
    """Random-action Pendulum-v1 episodes of 200 steps, `steps` transitions in all, as a list of
    (obs (T + 1, 3), actions (T, 1), rewards (T,)). Actions are uniform in [-2, 2] from a
    Generator seeded with `seed`; gymnasium is used when available unless told otherwise."""
    steps = check_positive_int(steps, "steps")
    if use_gymnasium is None:
        use_gymnasium = importlib.util.find_spec("gymnasium") is not None
    rng = np.random.default_rng(seed)
    env = None
    if use_gymnasium:
        import gymnasium

        env = gymnasium.make("Pendulum-v1")
    episodes, left, ep = [], steps, 0
    while left > 0:
        n = min(EPISODE_STEPS, left)
        acts = rng.uniform(-2.0, 2.0, size=(n, 1)).astype(np.float32)
        obs = np.empty((n + 1, 3), np.float32)
        rew = np.empty(n, np.float32)
        if env is not None:
            obs[0], _ = env.reset(seed=int(rng.integers(2**31)))
            for t in range(n):
                obs[t + 1], rew[t], *_ = env.step(acts[t])
        else:
            th, thdot = rng.uniform(-np.pi, np.pi), rng.uniform(-1.0, 1.0)
            obs[0] = _obs(th, thdot)
            for t in range(n):
                u = float(acts[t, 0])
                ang = (th + np.pi) % (2 * np.pi) - np.pi
                rew[t] = -(ang ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2)
                th, thdot = _pendulum_step(th, thdot, u)
                obs[t + 1] = _obs(th, thdot)
        episodes.append((obs, acts, rew))
        left -= n
        ep += 1
    if env is not None:
        env.close()
    return episodes


def pendulum_buffer(steps: int, seed: int = 0, use_gymnasium: bool | None = None) -> ReplayBuffer:
    """A ReplayBuffer filled by `pendulum_episodes` (episode ends marked truncated)."""
    buf = ReplayBuffer(3, 1, capacity=steps)
    for obs, acts, rew in pendulum_episodes(steps, seed, use_gymnasium):
        trunc = np.zeros(len(acts), bool)
        trunc[-1] = True
        buf.add_batch(obs[:-1], acts, obs[1:], rew, truncated=trunc)
    return buf


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=10_000, help="training transitions (default 10000)")
    parser.add_argument("--epochs", type=int, default=30, help="maximum training epochs (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, split and weights")


def run(args) -> int:
    from fastmbrl.models.dynamics import DynamicsModel

    steps = check_positive_int(args.steps, "--steps")
    epochs = check_positive_int(args.epochs, "--epochs")
    if args.seed < 0:  # numpy's own message would not name the option
        raise FastMBRLError(f"--seed must be a non-negative integer, got {args.seed}")
    t0 = time.perf_counter()
    buf = pendulum_buffer(steps, seed=args.seed)
    held_out = [(o, a) for o, a, _ in pendulum_episodes(10 * EPISODE_STEPS, seed=args.seed + 1)]
    print(f"collected {len(buf)} Pendulum-v1 transitions + {len(held_out)} held-out episodes "
          f"in {time.perf_counter() - t0:.1f}s")
    model = DynamicsModel(3, 1, hidden=(200, 200), seed=args.seed)
    hist = model.fit(buf, epochs=epochs, batch_size=256, lr=1e-3, validation_ratio=0.1,
                     patience=5, verbose=True)
    best = hist["best_epoch"] - 1
    print(f"validation MSE (next observation): {hist['val_mse'][best]:.3g} at epoch {best + 1}; "
          f"fit took {sum(hist['seconds']):.1f}s")
    report = model.prediction_error(held_out, horizon=20)
    print("open-loop prediction error on held-out episodes (MSE vs horizon):")
    for k in (1, 2, 5, 10, 20):
        print(f"  {k:>2} steps: {report['mse'][k - 1]:.3g}")
    return 0
