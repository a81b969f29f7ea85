"""Algorithm 1: random trajectories, then alternate model fitting and MPC episodes.

    D  <- random trajectories
    repeat: fit f on D; run MPC episodes with f; add their transitions to D

A run directory holds config.json, metrics.jsonl (one object per iteration), model.npz,
controller.json, buffer.npz and state.json; it is rewritten after every iteration, so an
interrupted run resumes from its last finished iteration. state.json also keeps the random
phase's episodes (`random_phase`, read back with `read_random_phase`).
"""
from __future__ import annotations

import dataclasses
import time

from pathlib import Path
from typing import Any

import numpy as np

from fastmbrl._validate import StrPath
from fastmbrl.algorithms.base import Log, Run, run_episode
from fastmbrl.algorithms.rundir import committed_file, read_run_config, read_state
from fastmbrl.algorithms.config import (Config, boolean, fraction, mapping, non_negative, one_of,
                                        optional, positive, positive_int, setting, widths)
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.limits import ResourceLimitError
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.models.dynamics import (DEFAULT_PARTICLES, DEFAULT_PROPAGATION, PROPAGATIONS,
                                      DynamicsModel)
from fastmbrl.models.mlp import ACTIVATION_NAMES
from fastmbrl.planning import planners
from fastmbrl.planning.controller import Controller, check_planner_options
from fastmbrl.tasks import get_task


@dataclasses.dataclass
class MBRLConfig(Config):
    """Settings of one MBRL run; None fields take the task's preset, else the default."""

    ALGO = "mbrl"

    #: the first fit needs data, so at least one random step
    random_steps: int | None = setting(
        2000, "steps of uniformly random actions before the first model fit", positive_int,
        "int")
    steps_per_iteration: int | None = setting(
        1000, "MPC steps collected between two model fits", positive_int, "int")
    steps: int | None = setting(
        lambda v: v["random_steps"] + 10 * v["steps_per_iteration"],
        "total environment steps, random phase included (default: random steps + 10 "
        "iterations)", positive_int, "int")
    episode_length: int | None = setting(
        None, "episode cap (default: the environment's own time limit)", optional(positive_int),
        "int")
    planner: str | None = setting(
        planners.DEFAULT_PLANNER, "planner", one_of(*planners.PLANNERS), "str")
    horizon: int | None = setting(planners.DEFAULT_HORIZON, "planning horizon", positive_int,
                                  "int")
    num_samples: int | None = setting(
        lambda v: planners.PLANNERS[v["planner"]].DEFAULT_NUM_SAMPLES,
        "candidate sequences per plan (per iteration for cem, icem and mppi; CEM's population)",
        positive_int, "int")
    planner_options: dict | None = setting(
        lambda v: {}, "the planner's other options as JSON, e.g. '{\"iterations\": 4}'", mapping, "json")
    hidden: tuple | None = setting((200, 200), "model hidden widths, e.g. 200,200", widths,
                                   "widths")
    activation: str | None = setting("relu", "model hidden activation",
                                     one_of(*ACTIVATION_NAMES), "str")
    epochs: int | None = setting(50, "model epochs per fit", positive_int, "int")
    model: str | None = setting(
        "deterministic", "dynamics model: deterministic networks, or probabilistic ones "
        "(a mean and a log-variance each, PETS) rolled out by trajectory sampling",
        one_of("deterministic", "probabilistic"), "str")
    ensemble_size: int | None = setting(
        lambda v: 5 if v["model"] == "probabilistic" else 1,
        "members of the bootstrap model ensemble; plans average over them (default 1; 5 "
        "for a probabilistic model, as PETS)", positive_int, "int")
    num_elites: int | None = setting(
        lambda v: v["ensemble_size"], "members planners use: the best by validation loss "
        "after each fit (default: every member)", positive_int, "int")
    particles: int | None = setting(
        DEFAULT_PARTICLES, "particles per candidate (probabilistic model; a multiple of "
        "num_elites)", positive_int, "int")
    propagation: str | None = setting(
        DEFAULT_PROPAGATION, "how particles use the members (probabilistic model): ts1 "
        "re-draws each particle's member every step, tsinf keeps it, expectation propagates "
        "every member's mean without sampling", one_of(*PROPAGATIONS), "str")
    risk: float | None = setting(
        0.0, "risk aversion λ: a candidate scores mean - λ std of its particles' returns",
        non_negative, "float")
    batch_size: int | None = setting(256, "model minibatch size", positive_int, "int")
    lr: float | None = setting(1e-3, "model learning rate (Adam)", positive, "float")
    patience: int | None = setting(
        5, "epochs without validation gain before a fit stops", positive_int, "int")
    validation_ratio: float | None = setting(
        0.1, "share of the transitions held out to validate each fit", fraction, "float")
    shaping: bool | None = setting(
        True, "plan with the task's planning reward when it has one (see docs/tasks.md); "
        "--no-shaping plans with the environment's reward", boolean, "bool")

    @property
    def label(self) -> str:
        return self.planner

    def adjust_preset(self, preset: dict) -> dict:
        if self.planner is not None and self.planner != preset.get("planner",
                                                                    planners.DEFAULT_PLANNER):
            preset.pop("planner_options", None)  # a preset's options belong to its own planner
        return preset

    def validate(self) -> None:
        if self.random_steps >= self.steps:
            raise FastMBRLError(
                f"random_steps ({self.random_steps}) must be below steps ({self.steps})")
        check_planner_options(self.planner, self.planner_options)
        task = get_task(self.task)
        try:  # their values too, before anything is written or trained
            planners.check_settings(self.planner, self.horizon, self.num_samples,
                                    self.planner_options, task.action_low, task.action_high)
        except (TypeError, ValueError) as exc:
            raise FastMBRLError(f"planner {self.planner}: {exc}") from None
        if self.num_elites > self.ensemble_size:
            raise FastMBRLError(f"num_elites ({self.num_elites}) must be at most ensemble_size "
                                f"({self.ensemble_size})")
        if (self.model == "probabilistic" and self.propagation != "expectation"
                and self.particles % self.num_elites):
            raise FastMBRLError(f"particles ({self.particles}) must be a multiple of num_elites "
                                f"({self.num_elites}): each elite carries as many particles")
        if self.validation_ratio > 0 and self.random_steps < 2:
            # the first fit would have no row to validate on
            raise FastMBRLError(
                f"random_steps={self.random_steps} leaves no transition for validation "
                f"(validation_ratio={self.validation_ratio}): use random_steps >= 2, or "
                "validation_ratio=0")


def _whole_mean(returns, cut) -> float | None:
    """Mean return of a phase's episodes: an episode the step budget cut short would pull it
    down, so it is left out unless it is the only one."""
    whole = returns[:-1] if cut and len(returns) > 1 else returns
    return float(np.mean(whole)) if whole else None


def _phase_record(env_steps, returns, lengths, cut) -> dict[str, Any]:
    """The random phase as state.json keeps it (the fields of a metrics row, at iteration 0)."""
    return {"env_steps": env_steps, "episode_returns": [round(r, 4) for r in returns],
            "episode_steps": lengths, "last_episode_cut": cut,
            "mean_return": _whole_mean(returns, cut)}


def _phase_from_buffer(buffer: ReplayBuffer, random_steps: int) -> dict[str, Any]:
    """The random phase of a run saved before state.json kept it: its first `random_steps`
    transitions. Whether the budget cut the last episode is not stored; it is taken as cut when
    shorter than an earlier episode that a time limit ended."""
    n = min(random_steps, len(buffer))
    ends = np.flatnonzero(buffer.terminated[:n] | buffer.truncated[:n])
    if not len(ends) or ends[-1] != n - 1:  # an unfinished episode (should not happen)
        ends = np.append(ends, n - 1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    reward = buffer.reward[:n].astype(np.float64)
    returns = [float(reward[a:b + 1].sum()) for a, b in zip(starts, ends)]
    lengths = [int(b - a + 1) for a, b in zip(starts, ends)]
    limited = [k for k, e in zip(lengths[:-1], ends[:-1]) if not buffer.terminated[e]]
    cut = bool(not buffer.terminated[ends[-1]] and limited and lengths[-1] < max(limited))
    return _phase_record(n, returns, lengths, cut)


def read_random_phase(out: StrPath) -> dict[str, Any] | None:
    """The random phase of the MBRL run in `out` (read-only): env_steps, episode_returns,
    episode_steps, last_episode_cut and mean_return (as of a metrics row); from state.json, or
    for a run saved before it kept them, from buffer.npz's first random_steps transitions.
    None before the phase was committed."""
    out = Path(out)
    state = read_state(out)
    if state is None:
        return None
    phase = state.get("random_phase")
    if phase is not None:
        ok = (isinstance(phase, dict) and type(phase.get("env_steps")) is int
              and isinstance(phase.get("episode_returns"), list)
              and all(isinstance(r, (int, float)) and not isinstance(r, bool)
                      for r in phase["episode_returns"])
              and (phase.get("mean_return") is None
                   or isinstance(phase["mean_return"], (int, float))))
        if not ok:
            raise FormatError(f"{out}/state.json: random_phase is not a record of the random "
                              "phase's episodes")
        return phase
    random_steps = read_run_config(out, MBRLConfig.ALGO).get("random_steps")
    buffer_path = committed_file(out, state, "buffer.npz")
    if type(random_steps) is not int or random_steps < 1 or not buffer_path.exists():
        return None
    return _phase_from_buffer(ReplayBuffer.load(buffer_path), random_steps)


class MBRLRun(Run):
    """One MBRL run (Algorithm 1) bound to a run directory (or to none, for library use)."""

    Config = MBRLConfig
    config: MBRLConfig

    def __init__(self, config: MBRLConfig, out: StrPath | None = None, log: Log = print) -> None:
        super().__init__(config, out, log)
        cfg, task = self.config, self.task
        try:
            self.buffer = ReplayBuffer(task.obs_dim, task.act_dim, capacity=cfg.steps)
        except ResourceLimitError as exc:  # name the setting the user gave
            raise ResourceLimitError(f"steps={cfg.steps}: the replay buffer keeps every "
                                     f"transition; {exc}") from None
        self.model = DynamicsModel(
            task.obs_dim, task.act_dim, hidden=cfg.hidden, activation=cfg.activation,
            ignore_obs_dims=task.ignore_obs_dims, angle_obs_dims=task.angle_obs_dims,
            absolute_obs_dims=task.absolute_obs_dims,
            seed=cfg.seed, ensemble_size=cfg.ensemble_size,
            probabilistic=cfg.model == "probabilistic", num_elites=cfg.num_elites)
        self.controller = None
        #: the random phase's episodes (_phase_record), kept in state.json
        self.random_phase: dict[str, Any] | None = None

    @property
    def env_steps(self) -> int:
        return len(self.buffer)

    # -- the loop -----------------------------------------------------------------------------
    def _collect(self, steps, act):
        """Run episodes until `steps` more transitions are stored. Returns (returns, lengths,
        whether the step budget cut the last episode short, seconds acting, steps)."""
        returns, lengths, cut, act_s, n = [], [], False, 0.0, 0
        target = min(self.env_steps + steps, self.config.steps)
        limit = self.config.episode_length
        while self.env_steps < target:
            cap = target - self.env_steps
            if limit is not None:
                cap = min(cap, limit)
            seed = self.episode_seed()
            if self.controller is not None:
                # reseeding per episode makes a resumed run plan exactly as an uninterrupted one
                self.controller.reset(seed)
            ret, k, s, ended = run_episode(self.env, act, seed, cap, self.buffer, self.rng)
            cut = not ended and (limit is None or k < limit)
            returns.append(ret)
            lengths.append(k)
            act_s += s
            n += k
            if act is not None:
                self.log(f"  episode {self.episodes}: return {ret:9.2f} over {k} steps, "
                         f"{1e3 * s / k:.2f} ms/plan" + (" (step budget reached)" if cut else ""))
            self.report_progress()
        return returns, lengths, cut, act_s, n

    def begin(self) -> None:
        cfg = self.config
        if self.iteration > 0 or self.env_steps > 0:
            return
        if cfg.shaping and self.task.planning_reward is not None:
            self.log("planning with the task's shaped objective (docs/tasks.md); "
                     "shaping=False (--no-shaping) plans with the environment's reward")
        t0 = time.perf_counter()
        returns, lengths, cut, _, _ = self._collect(cfg.random_steps, None)
        self.random_phase = _phase_record(self.env_steps, returns, lengths, cut)
        self.log(f"random phase: {self.env_steps} steps, mean return "
                 f"{np.mean(returns):.2f} ({time.perf_counter() - t0:.1f} s)")
        self.save()

    def iterate(self) -> dict:
        cfg = self.config
        self.iteration += 1
        t0 = time.perf_counter()
        self.log(f"iteration {self.iteration}: fitting the model on {self.env_steps} transitions")
        history = self.model.fit(
            self.buffer, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            validation_ratio=cfg.validation_ratio, patience=cfg.patience)
        fit_s = time.perf_counter() - t0
        if self.controller is None:
            self.controller = self._make_controller()
        t1 = time.perf_counter()
        returns, lengths, cut, act_s, n = self._collect(cfg.steps_per_iteration,
                                                        self.controller.act)
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "episode_returns": [round(r, 4) for r in returns],
            "episode_steps": lengths,
            "last_episode_cut": cut,
            "mean_return": _whole_mean(returns, cut),
            "train_loss": float(history["train_loss"][-1]),
            # None without validation rows (validation_ratio=0)
            "val_loss": float(min(history["val_loss"])) if history["val_loss"] else None,
            "fit_s": round(fit_s, 3),
            "plan_ms": round(1e3 * act_s / max(n, 1), 4),
            "acting_s": round(time.perf_counter() - t1, 3),
            "wall_s": round(time.perf_counter() - t0, 3),
        }

    def describe(self, row: dict[str, Any]) -> str:
        val = "-" if row["val_loss"] is None else f"{row['val_loss']:.3g}"
        return (f"{super().describe(row)}, val loss {val}, fit "
                f"{row['fit_s']:.1f} s, {row['plan_ms']:.2f} ms/plan, {row['acting_s']:.1f} s "
                "acting")

    def _make_controller(self) -> Controller:
        cfg = self.config
        return Controller(self.model, self.task, planner=cfg.planner, horizon=cfg.horizon,
                          num_samples=cfg.num_samples, seed=cfg.seed,
                          planner_options=cfg.planner_options, shaping=cfg.shaping,
                          particles=cfg.particles, propagation=cfg.propagation, risk=cfg.risk)

    # -- run directories ----------------------------------------------------------------------
    def save_files(self, out: Path) -> None:
        if self.iteration > 0:
            self.controller.save(out)
        self.buffer.save(out / "buffer.npz")

    def extra_state(self) -> dict:
        state: dict[str, Any] = {"model_rng": self.model.rng.bit_generator.state}
        if self.random_phase is not None:  # None for a run resumed from before it was kept
            state["random_phase"] = self.random_phase
        return state

    @classmethod
    def check_saved(cls, out: Path, config: dict[str, Any]) -> None:
        if not (out / "model.npz").exists():
            return
        model = DynamicsModel.load(out / "model.npz")
        checks = [("hidden", list(model.hidden)), ("ensemble_size", model.ensemble_size)]
        if "model" in config:  # configs written before these settings have neither
            checks.append(("model", "probabilistic" if model.probabilistic else "deterministic"))
        if "num_elites" in config:
            checks.append(("num_elites", model.num_elites))
        for key, saved in checks:
            if config.get(key) != saved:
                raise FormatError(f"{out}/config.json: {key} {config.get(key)!r} disagrees with "
                                  f"model.npz's {saved!r}")

    def load_files(self, out: Path, state: dict[str, Any]) -> None:
        buffer = ReplayBuffer.load(out / "buffer.npz")
        if buffer.capacity != self.config.steps:  # it keeps every step: the budget is its size
            raise FormatError(f"{out}/config.json: steps {self.config.steps} disagrees with "
                              f"buffer.npz's capacity {buffer.capacity}")
        self.buffer = buffer
        self.random_phase = state.get("random_phase")
        if self.iteration > 0:
            self.model = DynamicsModel.load(out / "model.npz")
            self.controller = self._make_controller()
        if "model_rng" in state:  # absent from runs saved before it was kept
            try:
                self.model.rng.bit_generator.state = state["model_rng"]
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(f"{out}/state.json: model_rng is not a random generator's "
                                  f"state ({exc})") from None


def train(task: str, out: StrPath | None = None, log: Log = print, **settings: Any) -> MBRLRun:
    """Run Algorithm 1 on `task`; `settings` are MBRLConfig fields. Returns the finished run."""
    return MBRLRun.run(task, out, log, **settings)
