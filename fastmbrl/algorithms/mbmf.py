"""Model-based initialisation of model-free fine-tuning (MB-MF, Nagabandi et al. 2018).

    1. mbrl:    Algorithm 1 (an MBRLRun): fit a dynamics model, act by MPC
    2. bc:      fit the TRPO policy's mean network to the MPC's own (state, action) pairs
       dagger:  roll out the policy, label the visited states with MPC actions, aggregate, refit
    3. trpo:    TRPO from the imitated policy, with a small initial σ

Every phase's environment steps count on one env_steps axis, so the curve compares with TRPO
from scratch at equal experience. A run directory holds config.json ("algo": "mbmf"),
metrics.jsonl (rows with a "phase" field), policy.npz (the current policy: what `fastmbrl eval`
runs), imitation.npz (the aggregated imitation data), state.json, and the sub-run directories
mbrl/ (an MBRL run) and trpo/ (a TRPO run starting from the imitated policy). An interrupted
run resumes inside the MBRL and TRPO phases at their iterations, and between imitation rounds.
"""
from __future__ import annotations

import dataclasses
import math
import time

from pathlib import Path
from typing import Any

import numpy as np

from fastmbrl._validate import as_array, check_positive_int
from fastmbrl._validate import StrPath
from fastmbrl.algorithms.base import Log, Run, run_episode
from fastmbrl.algorithms.config import (Config, non_negative_int, positive, positive_int,
                                        setting)
from fastmbrl.algorithms.mbrl import MBRLConfig, MBRLRun
from fastmbrl.algorithms.trpo import TRPOConfig, TRPORun
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.models.mlp import Adam, train_mse_epoch
from fastmbrl.models.policies import GaussianPolicy, PolicyController

DATA_KIND, DATA_VERSION = "mbmf_imitation", 1
# The fine-tuning policy starts with σ = e^-1 ≈ 0.37 (TRPO from scratch: 1): exploration noise
# large enough for TRPO's gradient, small enough not to undo the imitated behaviour.
FINE_TUNE_LOG_STD = -1.0
#: DAgger episodes are seeded apart from the model-based phase's
DAGGER_SEED_OFFSET = 50_000


# -- imitation ------------------------------------------------------------------------------------
def behaviour_clone(policy: GaussianPolicy, obs, actions, epochs, batch_size=256, lr=1e-3,
                    rng=None) -> float:
    """Fit the policy's mean network to `actions` on raw states `obs` by minibatch Adam on the
    mean squared error (with the observation statistics fixed); returns the last epoch's loss.
    """
    obs = as_array(obs, "obs", (None, policy.obs_dim), np.float64)
    actions = as_array(actions, "actions", (obs.shape[0], policy.act_dim), np.float64)
    if obs.shape[0] == 0:
        raise ValueError("obs: expected at least one state")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    rng = np.random.default_rng(rng)
    x = policy.obs_norm.normalize(obs)
    opt = Adam(policy.net.params, lr=lr)
    loss = float("nan")
    for _ in range(epochs):
        loss = train_mse_epoch(policy.net, opt, x, actions, batch_size, rng)
        if not math.isfinite(loss):
            raise FastMBRLError("behaviour cloning diverged (loss is not finite); lower bc_lr")
    return loss


def dagger_rollouts(env, act, expert, steps, seeds, episode_length=None):
    """Run `act` on `env` for `steps` steps (episodes seeded from the iterator `seeds`, the last
    cut short) and label every visited state with `expert.act(state)`; the expert is reset
    (`expert.reset(seed)`) at each episode start. Returns (states, expert actions, the learner's
    actions, episode returns, seconds spent labelling)."""
    steps = check_positive_int(steps, "steps")
    states, labels, taken, returns = [], [], [], []
    label_s = 0.0

    def act_and_label(obs):
        nonlocal label_s
        t0 = time.perf_counter()
        labels.append(np.asarray(expert.act(obs), np.float64))
        label_s += time.perf_counter() - t0
        states.append(np.asarray(obs, np.float64))
        taken.append(act(obs))
        return taken[-1]

    while len(states) < steps:
        cap = steps - len(states)
        if episode_length is not None:
            cap = min(cap, episode_length)
        seed = next(seeds)
        expert.reset(seed)
        ret, _, _, _ = run_episode(env, act_and_label, seed, cap)
        returns.append(ret)
    return np.array(states), np.array(labels), np.array(taken, np.float64), returns, label_s


# -- configuration --------------------------------------------------------------------------------
def _nested(config_class, name, exclude=(), why=""):
    """Check of a dict of `config_class` settings for one phase: not its task or seed (the
    run's), nor the `exclude`d ones. The CLI reads `config_class` and `exclude` to offer the
    phase's options."""
    def check(value, field):
        if not isinstance(value, dict):
            raise FastMBRLError(f"{field} must be a dict of {name} settings, got {value!r}")
        if {"task", "seed"} & set(value):
            raise FastMBRLError(f"{field} settings must not repeat task or seed")
        unknown = set(value) - (config_class.setting_names() - set(exclude))
        if unknown:
            raise FastMBRLError(f"unknown {field} setting(s): {', '.join(sorted(unknown))}{why}")
        return dict(value)
    check.config_class, check.exclude = config_class, tuple(exclude)
    return check


_MBRL_SETTINGS = _nested(MBRLConfig, "mbrl")
_TRPO_SETTINGS = _nested(TRPOConfig, "trpo", exclude=("steps",),
                         why=" (the fine-tuning gets the steps the other phases leave)")


def _default_steps(v):
    """By default TRPO fine-tunes with its own budget for the task."""
    trpo = TRPOConfig(task=v["task"], seed=v["seed"]).resolved()
    return v["mbrl"]["steps"] + v["dagger_rounds"] * v["dagger_steps"] + trpo.steps


@dataclasses.dataclass
class MBMFConfig(Config):
    """Settings of one MB-MF run; None fields take the defaults (the task's where it has them).

    `mbrl` and `trpo` hold the model-based phase's MBRLConfig settings (its `steps` is that
    phase's budget) and the fine-tuning's TRPOConfig settings (init_log_std defaults to -1 here,
    not 0; its steps are what the other phases leave).
    """

    ALGO = "mbmf"

    mbrl: dict | None = setting(lambda v: {}, "settings of the model-based phase", _MBRL_SETTINGS,
                                cli=False)
    trpo: dict | None = setting(lambda v: {}, "settings of the TRPO fine-tuning",
                                _TRPO_SETTINGS, cli=False)
    bc_epochs: int | None = setting(
        30, "imitation passes per fit (behaviour cloning, then after each DAgger round)",
        positive_int, "int")
    bc_batch_size: int | None = setting(256, "imitation minibatch size", positive_int, "int")
    bc_lr: float | None = setting(1e-3, "imitation learning rate", positive, "float")
    dagger_rounds: int | None = setting(
        3, "DAgger rounds after behaviour cloning (0: behaviour cloning only)", non_negative_int,
        "int")
    dagger_steps: int | None = setting(
        lambda v: v["mbrl"]["steps_per_iteration"], "policy rollout steps per DAgger round, "
        "each labelled by MPC (default: the model-based phase's steps per iteration)",
        positive_int, "int")
    steps: int | None = setting(
        _default_steps, "total environment steps over all phases; TRPO fine-tunes with what "
        "the others leave", positive_int, "int")

    def resolved(self) -> "MBMFConfig":
        """The phases' settings resolved first: the model-based phase completely (so that the
        run directory records them), the fine-tuning's as given plus its initial log σ."""
        mbrl = _MBRL_SETTINGS(self.mbrl or {}, "mbrl")
        trpo = _TRPO_SETTINGS(self.trpo or {}, "trpo")
        mb = MBRLConfig(task=self.task, seed=self.seed, **mbrl).resolved()
        trpo.setdefault("init_log_std", FINE_TUNE_LOG_STD)
        mbrl = {k: v for k, v in dataclasses.asdict(mb).items() if k not in ("task", "seed")}
        return Config.resolved(dataclasses.replace(self, mbrl=mbrl, trpo=trpo))

    def validate(self) -> None:
        if self.fine_tune_steps <= 0:
            raise FastMBRLError(
                f"steps ({self.steps}) must exceed the model-based phase ({self.mbrl['steps']}) "
                f"plus DAgger ({self.dagger_rounds} x {self.dagger_steps}) steps")
        self.trpo_config()  # validates the fine-tuning settings

    @property
    def fine_tune_steps(self) -> int:
        return self.steps - self.mbrl["steps"] - self.dagger_rounds * self.dagger_steps

    def trpo_config(self) -> TRPOConfig:
        return TRPOConfig(task=self.task, seed=self.seed, steps=self.fine_tune_steps,
                          **self.trpo).resolved()


class _FineTune(TRPORun):
    """The TRPO phase: each finished iteration is also recorded in the MB-MF run."""

    parent: "MBMFRun"

    def save(self, row=None) -> None:
        super().save(row)
        self.parent._mirror("trpo", self.metrics)


# -- the run --------------------------------------------------------------------------------------
class MBMFRun(Run):
    """One MB-MF run bound to a run directory (or to none, for library use)."""

    Config = MBMFConfig
    config: MBMFConfig
    title = "MB-MF"

    def __init__(self, config: MBMFConfig, out: StrPath | None = None, log: Log = print) -> None:
        super().__init__(config, out, log)
        cfg = self.config
        self.phase = "mbrl"  # the phase to run next: mbrl, imitation, trpo or done
        self.rounds = 0  # imitation fits done (behaviour cloning counts as the first)
        tcfg = cfg.trpo_config()
        self.policy = GaussianPolicy(self.task.obs_dim, self.task.act_dim, tcfg.hidden,
                                     tcfg.activation, tcfg.init_log_std,
                                     rng=np.random.default_rng([cfg.seed, 3]))
        self.data_obs = np.empty((0, self.task.obs_dim))
        self.data_act = np.empty((0, self.task.act_dim))
        self.mbrl_run: MBRLRun | None = None
        self.trpo_run: _FineTune | None = None

    def rng_seed(self) -> list[int]:
        return [self.config.seed, 2]

    def _sub(self, name):
        return None if self.out is None else self.out / name

    # -- phases -------------------------------------------------------------------------------
    def loop(self) -> list[dict]:
        if self.phase == "mbrl":
            self._model_based()
        if self.phase == "imitation":
            self._imitate()
        if self.phase == "trpo":
            self._fine_tune()
        return self.metrics

    def finished(self) -> bool:
        return self.phase == "done"

    def _mbrl(self) -> MBRLRun:
        """The model-based sub-run (resumed from its directory when there is one)."""
        if self.mbrl_run is None:
            sub = self._sub("mbrl")
            if sub is not None and (sub / "config.json").exists():
                self.mbrl_run = MBRLRun.resume(sub, self.log)
            else:
                self.mbrl_run = MBRLRun(MBRLConfig(task=self.config.task, seed=self.config.seed,
                                                   **self.config.mbrl), sub, self.log)
                self.mbrl_run.write_config()
        return self.mbrl_run

    def _model_based(self) -> None:
        self.log("phase 1: model-based RL with MPC")
        mb = self._mbrl()
        mb.train()
        self._mirror("mbrl", mb.metrics)
        self.phase = "imitation"
        self.save()

    def _imitate(self) -> None:
        cfg = self.config
        mb = self._mbrl()
        if self.rounds == 0:
            # the MPC's own transitions: every stored one after the random phase
            idx = mb.buffer.indices()[mb.config.random_steps:]
            batch = mb.buffer.get(idx)
            self.data_obs = batch.obs.astype(np.float64)
            self.data_act = batch.action.astype(np.float64)
            self.policy.obs_norm.update(self.data_obs)
            t0 = time.perf_counter()
            loss = behaviour_clone(self.policy, self.data_obs, self.data_act, cfg.bc_epochs,
                                   cfg.bc_batch_size, cfg.bc_lr, self.rng)
            self.rounds = 1
            self._record_imitation({"phase_iteration": 0, "env_steps": 0, "mean_return": None,
                                    "episode_returns": [], "imitation_loss": loss,
                                    "samples": len(self.data_obs),
                                    "fit_s": round(time.perf_counter() - t0, 3)})
        env = self.task.make_env()
        try:
            while self.rounds <= cfg.dagger_rounds:
                self._dagger_round(env, mb)
        finally:
            env.close()
        self.phase = "trpo"
        self.save()

    def _dagger_seeds(self):
        while True:
            yield self.episode_seed(DAGGER_SEED_OFFSET)

    def _dagger_round(self, env, mb: MBRLRun) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        learner = PolicyController(self.policy, self.task.name, self.task.action_low,
                                   self.task.action_high)
        states, labels, taken, returns, label_s = dagger_rollouts(
            env, learner.act, mb.controller, cfg.dagger_steps, self._dagger_seeds(),
            mb.config.episode_length)
        gap = float(np.mean((taken - labels) ** 2))  # the learner's error where it goes
        self.data_obs = np.concatenate([self.data_obs, states])
        self.data_act = np.concatenate([self.data_act, labels])
        self.policy.obs_norm.update(states)
        t1 = time.perf_counter()
        loss = behaviour_clone(self.policy, self.data_obs, self.data_act, cfg.bc_epochs,
                               cfg.bc_batch_size, cfg.bc_lr, self.rng)
        self.rounds += 1
        self._record_imitation({
            "phase_iteration": self.rounds - 1, "env_steps": len(states),
            "episode_returns": [round(r, 4) for r in returns],
            "mean_return": float(np.mean(returns)), "policy_expert_mse": gap,
            "imitation_loss": loss, "samples": len(self.data_obs),
            "label_ms": round(1e3 * label_s / len(states), 4),
            "fit_s": round(time.perf_counter() - t1, 3), "rollout_s": round(t1 - t0, 3)})

    def _fine_tune(self) -> None:
        self.log("phase 3: TRPO fine-tuning from the imitated policy")
        sub = self._sub("trpo")
        if sub is not None and (sub / "state.json").exists():
            run = _FineTune.resume(sub, self.log)
        else:
            self.policy.log_std[:] = self.config.trpo_config().init_log_std
            run = _FineTune(self.config.trpo_config(), sub, self.log, initial_policy=self.policy)
            if sub is not None and not (sub / "config.json").exists():
                run.write_config()
        run.parent = self
        self.trpo_run, self.policy = run, run.policy
        self._mirror("trpo", run.metrics)  # rows a crash left unrecorded here
        run.train()
        self.phase = "done"
        self.save()

    # -- bookkeeping --------------------------------------------------------------------------
    def _mirror(self, phase, rows) -> None:
        """Record the rows of sub-run `phase` (mbrl or trpo) not recorded yet."""
        cfg = self.config
        offset = 0 if phase == "mbrl" else cfg.mbrl["steps"] + cfg.dagger_rounds * cfg.dagger_steps
        done = sum(1 for r in self.metrics if r["phase"] == phase)
        for row in rows[done:]:
            self._record({**row, "phase": phase, "phase_iteration": row["iteration"],
                          "env_steps": offset + row["env_steps"]})

    def _record_imitation(self, row) -> None:
        row = {**row, "phase": "bc" if row["phase_iteration"] == 0 else "dagger",
               "env_steps": self.env_steps + row["env_steps"]}
        ret = row["mean_return"]
        self.log(f"{row['phase']} round {row['phase_iteration']}: {row['env_steps']} env steps, "
                 f"policy return {'-' if ret is None else f'{ret:.2f}'}, imitation loss "
                 f"{row['imitation_loss']:.4g} on {row['samples']} samples")
        self._record(row)

    def _record(self, row) -> None:
        self.iteration += 1
        self._steps = row["env_steps"]
        self.record({**row, "iteration": self.iteration})

    def describe(self, row: dict[str, Any]) -> None:
        return None  # the sub-runs and imitation rounds log their own lines

    # -- run directories ----------------------------------------------------------------------
    def save_files(self, out: Path) -> None:
        if self.rounds > 0:  # before imitation the policy is untrained: nothing to evaluate
            self.policy.save(out / "policy.npz", self.task.name, self.task.action_low,
                             self.task.action_high)
        if self.phase == "imitation" and self.rounds > 0:
            save_npz(out / "imitation.npz", DATA_KIND, DATA_VERSION, {"rounds": self.rounds},
                     {"obs": self.data_obs, "actions": self.data_act})

    def extra_state(self) -> dict:
        return {"phase": self.phase, "rounds": self.rounds}

    def load_files(self, out: Path, state: dict[str, Any]) -> None:
        if state.get("phase") not in ("mbrl", "imitation", "trpo", "done"):
            raise FormatError(f"{out}/state.json has an unknown phase {state.get('phase')!r}")
        self.phase, self.rounds = state["phase"], state["rounds"]
        if self.rounds > 0:
            policy, header, _ = GaussianPolicy.load(out / "policy.npz")
            if header["task"] != self.task.name or policy.net.hidden != self.policy.net.hidden:
                raise FormatError(f"{out}/policy.npz does not match the run's configuration")
            self.policy = policy
        if self.phase == "imitation" and self.rounds > 0:
            dheader, arrays = load_npz(out / "imitation.npz", DATA_KIND, (DATA_VERSION,))
            if dheader.get("rounds") != self.rounds:
                raise FormatError(f"{out}: imitation.npz and state.json are from different rounds")
            try:
                self.data_obs = as_array(arrays["obs"], "obs", (None, self.task.obs_dim),
                                         np.float64)
                self.data_act = as_array(arrays["actions"], "actions",
                                         (self.data_obs.shape[0], self.task.act_dim), np.float64)
            except (KeyError, ValueError) as exc:
                raise FormatError(f"{out}/imitation.npz is not valid imitation data: {exc}") \
                    from exc

    def resume_message(self) -> str:
        return (f"resuming {self.out} in phase {self.phase} at row {self.iteration}, "
                f"{self.env_steps} env steps")


def train(task: str, out: StrPath | None = None, log: Log = print, **settings: Any) -> MBMFRun:
    """Run MB-MF on `task`; `settings` are MBMFConfig fields. Returns the finished run."""
    return MBMFRun.run(task, out, log, **settings)
