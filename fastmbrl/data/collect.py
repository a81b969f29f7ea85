"""Random-policy rollouts into a frame store (World Models' data), seeded and resumable.

Episode `e` of a collection with seed `s` resets the environment with a seed drawn from
SeedSequence([s, e]) and draws its actions from SeedSequence([s, e, 1]), so an episode is
the same whichever process collects it and whatever ran before. After every episode the
chunk being filled is rewritten with it (atomically), so a collection that is killed loses
at most the episode it was in; run it again with the same arguments and it collects only
the episodes that are missing. A pool can split a collection by calling `collect` with
disjoint episode ranges on the same directory.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fastmbrl._validate import StrPath, check_finite_float, check_positive_int
from fastmbrl.data.frames import (CHUNK_FRAMES, Episode, check_episode, list_chunks,
                                  open_store, write_chunk)
from fastmbrl.errors import FastMBRLError
from fastmbrl.progress import Progress

POLICIES = ("brownian", "uniform")
#: the brownian walk's step (in units of the half-range of each action): about 25 steps from
#: one bound to the other, so a steering or gas value persists for a second of CarRacing
DEFAULT_SIGMA = 0.2
_TMP_RE = re.compile(r"\.chunk-\d{7}-\d{7}\.npz\.(\d+)\.tmp")


class PixelEnv(Protocol):
    """What `collect` needs of an environment: Gymnasium's reset/step/close, uint8 frames
    as observations, and an action_space with low and high."""
    action_space: Any

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict]: ...
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]: ...
    def close(self) -> None: ...


class RandomPolicy:
    """Random actions within [low, high].

    kind "uniform": each action drawn independently and uniformly. kind "brownian" (the
    default): a clipped random walk, u_0 ~ U(-1, 1), u_{t+1} = clip(u_t + sigma * N(0, 1),
    -1, 1) per action entry, mapped linearly onto [low, high]. Uniform noise at 50 Hz mostly
    cancels out (a CarRacing car brakes as often as it accelerates and barely moves); the
    walk holds a steering or gas value for many steps, so the car drives and turns, and the
    frames show more of the track.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, kind: str = "brownian",
                 sigma: float = DEFAULT_SIGMA) -> None:
        if kind not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {kind!r}")
        self.low = np.asarray(low, np.float32).reshape(-1)
        self.high = np.asarray(high, np.float32).reshape(-1)
        if self.low.shape != self.high.shape or not (np.isfinite(self.low).all()
                                                     and np.isfinite(self.high).all()
                                                     and (self.low <= self.high).all()):
            raise ValueError("RandomPolicy: action bounds must be finite with low <= high")
        self.kind = kind
        self.sigma = check_finite_float(sigma, "sigma", 0.0, low_open=True)
        self._u = np.zeros(self.low.shape, np.float64)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "brownian":
            out["sigma"] = self.sigma
        return out

    def reset(self, rng: np.random.Generator) -> None:
        self._u = rng.uniform(-1.0, 1.0, self.low.shape)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "uniform":
            u = rng.uniform(-1.0, 1.0, self.low.shape)
        else:
            u = self._u
            self._u = np.clip(u + self.sigma * rng.standard_normal(u.shape), -1.0, 1.0)
        return (self.low + (u + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)


def episode_seeds(seed: int, episode: int) -> tuple[int, np.random.Generator]:
    """(the environment's reset seed, the policy's generator) of an episode."""
    env_seed = int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])
    return env_seed, np.random.default_rng(np.random.SeedSequence([seed, episode, 1]))


def run_episode(env: PixelEnv, policy: RandomPolicy, seed: int, episode: int,
                max_steps: int | None = None) -> Episode:
    """One rollout of `policy` in `env`; ends when the environment terminates or truncates,
    or after max_steps (then flagged truncated)."""
    env_seed, rng = episode_seeds(seed, episode)
    obs, _ = env.reset(seed=env_seed)
    policy.reset(rng)
    frames, actions, rewards = [np.asarray(obs)], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = policy(rng)
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(np.asarray(obs))
        actions.append(action)
        rewards.append(float(reward))
        if max_steps is not None and len(actions) >= max_steps:
            truncated = True
    n = len(actions)
    flag = np.zeros(n, np.bool_)
    term, trunc = flag.copy(), flag.copy()
    term[-1], trunc[-1] = bool(terminated), bool(truncated) and not bool(terminated)
    shape = frames[0].shape
    return check_episode(np.stack(frames), np.stack(actions), np.array(rewards, np.float32),
                         term, trunc, shape, actions[0].shape[0])


def _remove_stale_temps(root: Path) -> None:
    """Temp files of writers killed mid-write (their process is gone)."""
    for p in root.iterdir():
        m = _TMP_RE.fullmatch(p.name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except OSError:  # exists but not ours
            alive = True
        if not alive:
            with contextlib.suppress(OSError):
                p.unlink()


def collect(path: StrPath, make_env: Callable[[], PixelEnv], episodes: int | range,
            seed: int = 0, policy: str = "brownian", sigma: float = DEFAULT_SIGMA,
            max_steps: int | None = None, chunk_frames: int = CHUNK_FRAMES,
            meta: Mapping[str, Any] | None = None,
            progress: bool | Callable[[int, int], None] = True) -> dict[str, int]:
    """Collect the episodes `episodes` (a count n for ids 0..n-1, or a range of ids) of a
    random policy into the frame store directory `path`, skipping those already there.

    make_env: a callable with no arguments returning the environment (e.g. a
    fastmbrl.tasks.pixels.PixelTask, which pickles, so that a pool can pass it on). The
    settings (seed, policy, sigma, max_steps and `meta`, e.g. the task's name) are recorded
    in store.json; continuing a store with other settings is refused. Returns counts:
    {"collected", "skipped", "steps", "frames"}.
    """
    if isinstance(episodes, range):
        if episodes.step != 1 or episodes.start < 0:
            raise ValueError(f"episodes: expected a count or a range of ids with step 1 from "
                             f">= 0, got {episodes!r}")
        ids = episodes
    else:
        ids = range(check_positive_int(episodes, "episodes"))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if max_steps is not None:
        max_steps = check_positive_int(max_steps, "max_steps")
    chunk_frames = check_positive_int(chunk_frames, "chunk_frames")
    root = Path(path)
    env = make_env()
    try:
        act = RandomPolicy(env.action_space.low, env.action_space.high, policy, sigma)
        settings = {"seed": int(seed), "policy": act.settings(), "max_steps": max_steps,
                    **dict(meta or {})}
        obs_space = getattr(env, "observation_space", None)
        shape = tuple(getattr(obs_space, "shape", ()) or ())
        if len(shape) != 3:
            raise FastMBRLError(f"collect: the environment's observations have shape {shape}; "
                                "a frame store holds (height, width, channels) frames")
        open_store(root, shape, act.low.shape[0], settings, create=True)
        _remove_stale_temps(root)
        present = {i for first, last, _ in list_chunks(root, remove_superseded=True)
                   for i in range(first, last + 1)}
        todo = [i for i in ids if i not in present]
        bar: Callable[[int, int], None] | None
        if progress is True:
            bar = Progress("collect", unit="episodes")
        else:
            bar = progress or None
        if isinstance(bar, Progress) and len(todo) < len(ids):
            bar.print(f"{root}: {len(ids) - len(todo)} of {len(ids)} episodes already "
                      f"collected, collecting the other {len(todo)}")
        done = len(ids) - len(todo)
        chunk: list[Episode] = []
        chunk_first, previous = -1, None
        counts = {"collected": 0, "skipped": done, "steps": 0, "frames": 0}
        if bar is not None:
            bar(done, len(ids))
        for e in todo:
            if chunk and (e != chunk_first + len(chunk)
                          or sum(ep.frames.shape[0] for ep in chunk) >= chunk_frames):
                chunk, previous = [], None  # that chunk is final
            ep = run_episode(env, act, int(seed), e, max_steps)
            if ep.frames.shape[1:] != shape:
                raise FastMBRLError(f"collect: the environment returned frames of shape "
                                    f"{ep.frames.shape[1:]}, its observation space says {shape}")
            if not chunk:
                chunk_first = e
            chunk.append(ep)
            written = write_chunk(root, chunk_first, chunk)
            if previous is not None and previous != written:
                previous.unlink(missing_ok=True)
            previous = written
            counts["collected"] += 1
            counts["steps"] += ep.actions.shape[0]
            counts["frames"] += ep.frames.shape[0]
            done += 1
            if bar is not None:
                bar(done, len(ids))
        if isinstance(bar, Progress):
            bar.close()
        return counts
    finally:
        env.close()


__all__ = ["RandomPolicy", "collect", "run_episode", "episode_seeds"]
