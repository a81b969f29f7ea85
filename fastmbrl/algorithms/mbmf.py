"""Model-based initialisation of model-free fine-tuning (MB-MF, Nagabandi et al. 2018).

    1. mbrl:    Algorithm 1 (agent.Run): fit a dynamics model, act by MPC
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

import numpy as np

from fastmbrl._validate import as_array, check_positive_int
from fastmbrl.algorithms.mbrl import Run, TrainConfig, run_episode
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import load_npz, read_json, save_npz, write_json
from fastmbrl.models.mlp import Adam, train_mse_epoch
from fastmbrl.algorithms.rundir import append_metrics, finished_metrics, read_run_config, write_run_config
from fastmbrl.tasks import get_task
from fastmbrl.algorithms.trpo import GaussianPolicy, TRPOConfig, TRPORun

DATA_KIND, DATA_VERSION = "mbmf_imitation", 1
# The fine-tuning policy starts with σ = e^-1 ≈ 0.37 (TRPO from scratch: 1): exploration noise
# large enough for TRPO's gradient, small enough not to undo the imitated behaviour.
FINE_TUNE_LOG_STD = -1.0


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


def policy_actor(policy: GaussianPolicy, action_low, action_high):
    """obs -> the policy's mean action, clipped to the bounds, float32 (deterministic)."""
    low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)

    def act(obs):
        mu = policy.mean(np.asarray(obs, np.float64)[None])[0]
        return np.clip(mu, low, high).astype(np.float32)

    return act


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
@dataclasses.dataclass
class MBMFConfig:
    """Settings of one MB-MF run; None fields take defaults (the task's where it has them)."""

    task: str
    seed: int = 0
    #: total environment steps over all phases; TRPO fine-tunes with what the others leave
    steps: int | None = None
    #: agent.TrainConfig settings of the model-based phase (its `steps` is that phase's budget)
    mbrl: dict | None = None
    #: trpo.TRPOConfig settings of the fine-tuning (init_log_std defaults to -1 here, not 0)
    trpo: dict | None = None
    #: passes over the imitation data per fit (behaviour cloning, then after each DAgger round)
    bc_epochs: int = 30
    bc_batch_size: int = 256
    bc_lr: float = 1e-3
    #: DAgger rounds after behaviour cloning (0: behaviour cloning only)
    dagger_rounds: int = 3
    #: environment steps of policy rollouts per DAgger round, each state labelled by MPC
    dagger_steps: int | None = None

    def resolved(self) -> "MBMFConfig":
        mbrl = dict(self.mbrl or {})
        trpo = dict(self.trpo or {})
        for name, given in (("mbrl", mbrl), ("trpo", trpo)):
            if {"task", "seed"} & set(given):
                raise FastMBRLError(f"{name} settings must not repeat task or seed")
        unknown = set(trpo) - {f.name for f in dataclasses.fields(TRPOConfig)}
        if unknown or "steps" in trpo:
            names = ", ".join(sorted(unknown or {"steps"}))
            raise FastMBRLError(f"unknown trpo setting(s): {names} (the fine-tuning gets the "
                                "steps the other phases leave)")
        try:
            mb = TrainConfig(task=self.task, seed=self.seed, **mbrl).resolved()
        except TypeError as exc:
            raise FastMBRLError(f"unknown mbrl setting: {exc}") from None
        trpo.setdefault("init_log_std", FINE_TUNE_LOG_STD)
        mbrl = {k: v for k, v in dataclasses.asdict(mb).items() if k not in ("task", "seed")}
        values = {**dataclasses.asdict(self), "mbrl": mbrl, "trpo": trpo}
        if values["dagger_steps"] is None:
            values["dagger_steps"] = mb.steps_per_iteration
        if values["steps"] is None:  # by default fine-tune with TRPO's budget for the task
            values["steps"] = (mb.steps + values["dagger_rounds"] * values["dagger_steps"]
                               + TRPOConfig(task=self.task, seed=self.seed).resolved().steps)
        cfg = MBMFConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("steps", "bc_epochs", "bc_batch_size", "dagger_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FastMBRLError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.dagger_rounds, int) or self.dagger_rounds < 0:
            raise FastMBRLError(f"dagger_rounds must be a non-negative integer, got "
                                f"{self.dagger_rounds!r}")
        if not (isinstance(self.bc_lr, (int, float)) and self.bc_lr > 0):
            raise FastMBRLError(f"bc_lr must be positive, got {self.bc_lr!r}")
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


MBMF_FIELDS = {f.name for f in dataclasses.fields(MBMFConfig)} - {"task"}


class _FineTune(TRPORun):
    """The TRPO phase: each finished iteration is also recorded in the MB-MF run."""

    parent: "MBMFRun"

    def _save(self, row) -> None:
        super()._save(row)
        self.parent._mirror("trpo", self.metrics)


# -- the run --------------------------------------------------------------------------------------
class MBMFRun:
    """One MB-MF run bound to a run directory (or to none, for library use)."""

    def __init__(self, config: MBMFConfig, out=None, log=print):
        self.config = cfg = config.resolved()
        self.task = get_task(cfg.task)
        self.out = Path(out) if out is not None else None
        self.log = log
        self.phase = "mbrl"  # the phase to run next: mbrl, imitation, trpo or done
        self.iteration = 0  # rows recorded, all phases together
        self.env_steps = 0
        self.rounds = 0  # imitation fits done (behaviour cloning counts as the first)
        self.episodes = 0  # DAgger episodes
        self.metrics: list[dict] = []
        self.rng = np.random.default_rng([cfg.seed, 2])
        tcfg = cfg.trpo_config()
        self.policy = GaussianPolicy(self.task.obs_dim, self.task.act_dim, tcfg.hidden,
                                     tcfg.activation, tcfg.init_log_std,
                                     rng=np.random.default_rng([cfg.seed, 3]))
        self.data_obs = np.empty((0, self.task.obs_dim))
        self.data_act = np.empty((0, self.task.act_dim))
        self.mbrl_run: Run | None = None
        self.trpo_run: _FineTune | None = None
        self._env = None

    def _sub(self, name):
        return None if self.out is None else self.out / name

    # -- phases -------------------------------------------------------------------------------
    def train(self) -> list[dict]:
        if self.phase == "mbrl":
            self._model_based()
        if self.phase == "imitation":
            self._imitate()
        if self.phase == "trpo":
            self._fine_tune()
        return self.metrics

    def _mbrl(self) -> Run:
        """The model-based sub-run (resumed from its directory when there is one)."""
        if self.mbrl_run is None:
            sub = self._sub("mbrl")
            if sub is not None and (sub / "config.json").exists():
                self.mbrl_run = Run.resume(sub, self.log)
            else:
                self.mbrl_run = Run(TrainConfig(task=self.config.task, seed=self.config.seed,
                                                **self.config.mbrl), sub, self.log)
                self.mbrl_run.write_config()
        return self.mbrl_run

    def _model_based(self) -> None:
        self.log("phase 1: model-based RL with MPC")
        mb = self._mbrl()
        mb.train()
        self._mirror("mbrl", mb.metrics)
        self.phase = "imitation"
        self._save_state()

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
        self._save_state()

    def _dagger_seeds(self):
        while True:
            self.episodes += 1
            yield self.config.seed * 100_003 + 50_000 + self.episodes

    def _dagger_round(self, env, mb: Run) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        act = policy_actor(self.policy, self.task.action_low, self.task.action_high)
        states, labels, taken, returns, label_s = dagger_rollouts(
            env, act, mb.controller, cfg.dagger_steps, self._dagger_seeds(),
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
        self._save_state()

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
        if self.out is not None:  # the data first: state.json (written last) must not outrun it
            save_npz(self.out / "imitation.npz", DATA_KIND, DATA_VERSION,
                     {"rounds": self.rounds}, {"obs": self.data_obs, "actions": self.data_act})
        self._record(row)

    def _record(self, row) -> None:
        self.iteration += 1
        self.env_steps = row["env_steps"]
        row = {**row, "iteration": self.iteration}
        self.metrics.append(row)
        if self.out is not None:
            append_metrics(self.out, row)
            self._save_state()

    def _save_state(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rounds > 0:  # before imitation the policy is untrained: nothing to evaluate
            self.policy.save(self.out / "policy.npz", self.task.name, self.task.action_low,
                             self.task.action_high)
        write_json(self.out / "state.json", {
            "phase": self.phase, "iteration": self.iteration, "env_steps": self.env_steps,
            "rounds": self.rounds, "episodes": self.episodes,
            "rng": self.rng.bit_generator.state})  # written last: the commit point

    def write_config(self) -> None:
        if self.out is not None:
            write_run_config(self.out, {"algo": "mbmf", **dataclasses.asdict(self.config)})

    @classmethod
    def resume(cls, out, log=print) -> "MBMFRun":
        out = Path(out)
        config = dict(read_run_config(out, "mbmf"))
        config.pop("algo")
        run = cls(MBMFConfig(**config), out, log)
        if not (out / "state.json").exists():
            return run  # nothing recorded yet: the MBRL sub-run resumes on its own
        state = read_json(out / "state.json", f"no state.json in {out}")
        if state.get("phase") not in ("mbrl", "imitation", "trpo", "done"):
            raise FormatError(f"{out}/state.json has an unknown phase {state.get('phase')!r}")
        if state["rounds"] > 0:
            policy, header, _ = GaussianPolicy.load(out / "policy.npz")
            if header["task"] != run.task.name or policy.net.hidden != run.policy.net.hidden:
                raise FormatError(f"{out}/policy.npz does not match the run's configuration")
            run.policy = policy
        if state["phase"] == "imitation" and state["rounds"] > 0:
            dheader, arrays = load_npz(out / "imitation.npz", DATA_KIND, (DATA_VERSION,))
            if dheader.get("rounds") != state["rounds"]:
                raise FormatError(f"{out}: imitation.npz and state.json are from different rounds")
            try:
                run.data_obs = as_array(arrays["obs"], "obs", (None, run.task.obs_dim),
                                        np.float64)
                run.data_act = as_array(arrays["actions"], "actions",
                                        (run.data_obs.shape[0], run.task.act_dim), np.float64)
            except (KeyError, ValueError) as exc:
                raise FormatError(f"{out}/imitation.npz is not valid imitation data: {exc}") \
                    from exc
        run.phase, run.iteration = state["phase"], state["iteration"]
        run.env_steps, run.rounds = state["env_steps"], state["rounds"]
        run.episodes = state["episodes"]
        run.rng.bit_generator.state = state["rng"]
        run.metrics = finished_metrics(out, run.iteration)
        log(f"resuming {out} in phase {run.phase} at row {run.iteration}, "
            f"{run.env_steps} env steps")
        return run


def train(task: str, out=None, log=print, **settings) -> MBMFRun:
    """Run MB-MF on `task`; `settings` are MBMFConfig fields. Returns the finished run."""
    unknown = set(settings) - MBMF_FIELDS
    if unknown:
        raise FastMBRLError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    run = MBMFRun(MBMFConfig(task=task, **settings), out, log)
    run.write_config()
    run.train()
    return run


# -- CLI: fastmbrl train ENV --algo mbmf ----------------------------------------------------------
_MBRL_ARGS = ("planner", "random_steps", "steps_per_iteration", "horizon", "num_samples", "epochs",
              "ensemble_size", "shaping")
_TRPO_ARGS = ("gamma", "lam", "max_kl", "damping", "cg_iters", "value_epochs")


def add_arguments(p) -> None:
    """MB-MF's own options (the MBRL `train` parser has the shared ones)."""
    g = p.add_argument_group("MB-MF (with --algo mbmf: --steps is the total over all phases, "
                             "the MBRL options set the model-based phase, the TRPO ones the "
                             "fine-tuning)")
    g.add_argument("--mbrl-steps", type=int, help="env steps of the model-based phase")
    g.add_argument("--dagger-rounds", type=int, help="DAgger rounds after behaviour cloning")
    g.add_argument("--dagger-steps", type=int, help="policy rollout steps per DAgger round")
    g.add_argument("--bc-epochs", type=int, help="imitation passes per fit")


def new_run(args, log) -> "MBMFRun":
    """A new run directory from `fastmbrl train ... --algo mbmf` arguments."""
    mbrl = {k: getattr(args, k) for k in _MBRL_ARGS if getattr(args, k, None) is not None}
    if args.mbrl_steps is not None:
        mbrl["steps"] = args.mbrl_steps
    trpo = {k: getattr(args, k) for k in _TRPO_ARGS if getattr(args, k, None) is not None}
    settings = {k: getattr(args, k) for k in ("steps", "dagger_rounds", "dagger_steps",
                                              "bc_epochs") if getattr(args, k) is not None}
    cfg = MBMFConfig(task=args.task, seed=args.seed, mbrl=mbrl, trpo=trpo, **settings).resolved()
    out = args.out or f"runs/{cfg.task}-mbmf-s{cfg.seed}"
    r = MBMFRun(cfg, out, log)
    r.write_config()
    log(f"training {cfg.task} with MB-MF for {cfg.steps} steps into {out}")
    return r
