"""Algorithm 1: random trajectories, then alternate model fitting and MPC episodes.

    D  <- random trajectories
    repeat: fit f on D; run MPC episodes with f; add their transitions to D

A run directory holds config.json, metrics.jsonl (one object per iteration), model.npz,
controller.json, buffer.npz and state.json; it is rewritten after every iteration, so an
interrupted run resumes from its last finished iteration.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.algorithms import trpo
from fastmbrl.planning.controller import Controller
from fastmbrl.planning.planners import PLANNERS
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.errors import FastMBRLError
from fastmbrl.io import read_json, write_json
from fastmbrl.algorithms.rundir import (append_metrics, fill_defaults, finished_metrics, read_run_config,
                     write_run_config)
from fastmbrl.tasks import get_task

@dataclasses.dataclass
class TrainConfig:
    """Settings of one MBRL run; fields left None take the task's defaults."""

    task: str
    seed: int = 0
    #: total environment steps, random phase included
    steps: int | None = None
    #: steps of uniformly random actions collected before the first model fit
    random_steps: int | None = None
    #: MPC steps collected between two model fits
    steps_per_iteration: int | None = None
    #: episode cap (None: the environment's own time limit)
    episode_length: int | None = None
    #: planner name: rs, cem, mppi or icem
    planner: str | None = None
    horizon: int | None = None
    #: candidate sequences per plan (population per iteration for cem/icem)
    num_samples: int | None = None
    planner_options: dict | None = None
    hidden: tuple | None = None
    activation: str | None = None
    epochs: int | None = None
    #: members of the bootstrap model ensemble (1: a single network)
    ensemble_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    patience: int | None = None
    validation_ratio: float | None = None
    #: plan with the task's planning reward (when it has one) rather than the environment's
    shaping: bool | None = None

    def resolved(self) -> "TrainConfig":
        """A copy with every None replaced by the task's default (or the library's)."""
        defaults = {**LIBRARY_DEFAULTS, **task_defaults(get_task(self.task))}
        if self.planner not in (None, defaults["planner"]):
            defaults["planner_options"] = {}  # the task's options belong to its own planner
        values = fill_defaults(self, defaults, ("hidden",))
        values["planner_options"] = dict(values["planner_options"] or {})
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.planner not in PLANNERS:
            raise FastMBRLError(f"unknown planner {self.planner!r}; choose one of {', '.join(PLANNERS)}")
        # random_steps must be positive too: the first fit needs data
        for name in ("steps", "random_steps", "steps_per_iteration", "horizon", "num_samples",
                     "epochs", "ensemble_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FastMBRLError(f"{name} must be a positive integer, got {value!r}")
        if self.random_steps >= self.steps:
            raise FastMBRLError(
                f"random_steps ({self.random_steps}) must be below steps ({self.steps})")
        if not isinstance(self.shaping, bool):
            raise FastMBRLError(f"shaping must be True or False, got {self.shaping!r}")
        if self.episode_length is not None and self.episode_length <= 0:
            raise FastMBRLError(f"episode_length must be positive, got {self.episode_length}")


TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"task", "seed"}
LIBRARY_DEFAULTS = {"lr": 1e-3, "validation_ratio": 0.1, "shaping": True}


def task_defaults(task) -> dict:
    """The task's defaults in TrainConfig's terms."""
    d = task.defaults
    return {
        "steps": d["random_steps"] + d["iterations"] * d["steps_per_iteration"],
        "random_steps": d["random_steps"], "steps_per_iteration": d["steps_per_iteration"],
        "episode_length": d["episode_length"], "planner": d["planner"], "horizon": d["horizon"],
        "num_samples": d["num_samples"], "hidden": d["model_hidden"],
        "activation": d["model_activation"], "epochs": d["model_epochs"],
        "ensemble_size": d["model_ensemble"], "batch_size": d["model_batch_size"],
        "patience": d["model_patience"],
        "planner_options": d["planner_options"],
    }


def run_episode(env, act, seed, max_steps=None, buffer=None, rng=None):
    """Run one episode with `act(obs) -> action` (or uniform random actions when `act` is None).

    Returns (return, steps, seconds spent in `act`, whether the environment ended the episode
    itself: terminated or its own time limit, not `max_steps`). Transitions go into `buffer`.
    """
    obs, _ = env.reset(seed=int(seed))
    total, steps, act_s = 0.0, 0, 0.0
    low, high = env.action_space.low, env.action_space.high
    while True:
        t0 = time.perf_counter()
        action = rng.uniform(low, high).astype(np.float32) if act is None else act(obs)
        act_s += time.perf_counter() - t0
        next_obs, reward, terminated, env_truncated, _ = env.step(action)
        steps += 1
        truncated = env_truncated or (max_steps is not None and steps >= max_steps)
        if buffer is not None:
            buffer.add(obs, action, next_obs, reward, terminated, truncated)
        total += float(reward)
        obs = next_obs
        if terminated or truncated:
            return total, steps, act_s, bool(terminated or env_truncated)


class Run:
    """One training run bound to a run directory (or to none, for library use)."""

    def __init__(self, config: TrainConfig, out=None, log=print):
        self.config = config.resolved()
        self.task = get_task(self.config.task)
        self.out = Path(out) if out is not None else None
        self.log = log
        cfg = self.config
        self.buffer = ReplayBuffer(self.task.obs_dim, self.task.act_dim, capacity=cfg.steps)
        self.model = DynamicsModel(
            self.task.obs_dim, self.task.act_dim, hidden=cfg.hidden, activation=cfg.activation,
            ignore_obs_dims=self.task.defaults["ignore_obs_dims"], seed=cfg.seed,
            angle_obs_dims=self.task.defaults["angle_obs_dims"],
            ensemble_size=cfg.ensemble_size,
        )
        self.iteration = 0
        self.episodes = 0
        self.metrics: list[dict] = []
        self.rng = np.random.default_rng(cfg.seed)
        self.controller = None
        self._env = None

    # -- the loop -----------------------------------------------------------------------------
    @property
    def env(self):
        if self._env is None:
            self._env = self.task.make_env()
        return self._env

    @property
    def env_steps(self) -> int:
        return len(self.buffer)

    def _episode_seed(self) -> int:
        self.episodes += 1
        return self.config.seed * 100_003 + self.episodes

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
            seed = self._episode_seed()
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
        return returns, lengths, cut, act_s, n

    def train(self):
        cfg = self.config
        if self.iteration == 0 and self.env_steps == 0:
            if cfg.shaping and self.task.planning_reward is not None:
                self.log("planning with the task's shaped objective (docs/tasks.md); "
                         "shaping=False (--no-shaping) plans with the environment's reward")
            t0 = time.perf_counter()
            returns, _, _, _, _ = self._collect(cfg.random_steps, None)
            self.log(f"random phase: {self.env_steps} steps, mean return "
                     f"{np.mean(returns):.2f} ({time.perf_counter() - t0:.1f} s)")
            self._save()
        while self.env_steps < cfg.steps:
            self.iteration += 1
            t0 = time.perf_counter()
            self.log(f"iteration {self.iteration}: fitting the model on {self.env_steps} transitions")
            history = self.model.fit(
                self.buffer, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                validation_ratio=cfg.validation_ratio, patience=cfg.patience,
            )
            fit_s = time.perf_counter() - t0
            if self.controller is None:
                self.controller = self._make_controller()
            t1 = time.perf_counter()
            returns, lengths, cut, act_s, n = self._collect(cfg.steps_per_iteration,
                                                            self.controller.act)
            # an episode the step budget cut short would pull the mean down: leave it out
            # unless it is the only one
            whole = returns[:-1] if cut and len(returns) > 1 else returns
            row = {
                "iteration": self.iteration,
                "env_steps": self.env_steps,
                "episode_returns": [round(r, 4) for r in returns],
                "episode_steps": lengths,
                "last_episode_cut": cut,
                "mean_return": float(np.mean(whole)) if whole else None,
                "train_loss": float(history["train_loss"][-1]),
                "val_loss": float(min(history["val_loss"])),
                "fit_s": round(fit_s, 3),
                "plan_ms": round(1e3 * act_s / max(n, 1), 4),
                "wall_s": round(time.perf_counter() - t0, 3),
            }
            self.metrics.append(row)
            self.log(f"iteration {self.iteration}: {self.env_steps}/{cfg.steps} steps, "
                     f"return {row['mean_return']:.2f}, val loss {row['val_loss']:.3g}, "
                     f"fit {fit_s:.1f} s, {row['plan_ms']:.2f} ms/plan, "
                     f"{time.perf_counter() - t1:.1f} s acting")
            self._save(row)
        return self.metrics

    def _make_controller(self) -> Controller:
        cfg = self.config
        return Controller(self.model, self.task, planner=cfg.planner, horizon=cfg.horizon,
                          num_samples=cfg.num_samples, seed=cfg.seed,
                          planner_options=cfg.planner_options, shaping=cfg.shaping)

    # -- run directories ----------------------------------------------------------------------
    def _save(self, row=None):
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if row is not None:
            append_metrics(self.out, row)
        if self.iteration > 0:
            self.controller.save(self.out)
        self.buffer.save(self.out / "buffer.npz")
        state = {"iteration": self.iteration, "episodes": self.episodes,
                 "env_steps": self.env_steps, "rng": self.rng.bit_generator.state,
                 "model_rng": self.model.rng.bit_generator.state}
        write_json(self.out / "state.json", state)

    def write_config(self):
        if self.out is None:
            return
        write_run_config(self.out, {"algo": "mbrl", **dataclasses.asdict(self.config)})

    @classmethod
    def resume(cls, out, log=print) -> "Run":
        out = Path(out)
        config = dict(read_run_config(out, "mbrl"))
        config.pop("algo")
        run = cls(TrainConfig(**config), out, log)
        state_path = out / "state.json"
        if not state_path.exists():
            return run  # stopped before the random phase was saved: start over
        state = read_json(state_path, f"no state.json in {out}")
        run.buffer = ReplayBuffer.load(out / "buffer.npz")
        run.iteration, run.episodes = state["iteration"], state["episodes"]
        run.rng.bit_generator.state = state["rng"]
        if run.iteration > 0:
            run.model = DynamicsModel.load(out / "model.npz")
            run.controller = run._make_controller()
        if "model_rng" in state:  # absent from runs saved before it was kept
            run.model.rng.bit_generator.state = state["model_rng"]
        run.metrics = finished_metrics(out, run.iteration)
        log(f"resuming {out} at iteration {run.iteration}, {run.env_steps} env steps")
        return run


def train(task: str, out=None, log=print, **settings) -> Run:
    """Run Algorithm 1 on `task`; `settings` are TrainConfig fields. Returns the finished Run."""
    unknown = set(settings) - TRAIN_FIELDS - {"seed"}
    if unknown:
        raise FastMBRLError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    run = Run(TrainConfig(task=task, **settings), out, log)
    run.write_config()
    run.train()
    return run


# -- CLI: fastmbrl train -------------------------------------------------------------------------
# the parser's defaults that are not None (--resume tells a given option by its value)
_UNSET = {"algo": "mbrl", "seed": 0}
_PLANNING_ARGS = ("planner", "random_steps", "horizon", "num_samples", "epochs", "ensemble_size",
                  "shaping")


def add_arguments(p):
    p.add_argument("task", nargs="?", help="task name, e.g. Pendulum-v1 (omit with --resume)")
    p.add_argument("--algo", choices=("mbrl", "trpo", "mbmf"), default=_UNSET["algo"],
                   help="mbrl: model-based RL with MPC (default); trpo: model-free TRPO; "
                        "mbmf: MPC imitated by a policy, then fine-tuned by TRPO")
    p.add_argument("--planner", choices=sorted(PLANNERS), help="planner (default: the task's)")
    p.add_argument("--steps", type=int, help="total environment steps")
    p.add_argument("--random-steps", type=int, help="random-action steps before the first fit")
    p.add_argument("--steps-per-iteration", type=int, help="MPC steps between model fits")
    p.add_argument("--horizon", type=int, help="planning horizon")
    p.add_argument("--num-samples", type=int, help="candidates per plan (population for cem/icem)")
    p.add_argument("--epochs", type=int, help="model epochs per fit")
    p.add_argument("--ensemble-size", type=int, metavar="B",
                   help="bootstrap ensemble of B models; plans average over them")
    p.add_argument("--no-shaping", dest="shaping", action="store_false", default=None,
                   help="plan with the environment's reward even if the task has a planning "
                        "reward (see docs/tasks.md)")
    p.add_argument("--seed", type=int, default=_UNSET["seed"])
    p.add_argument("--out", help="run directory (default: runs/TASK-PLANNER-sSEED)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    trpo.add_arguments(p)
    from fastmbrl.algorithms import mbmf  # mbmf imports this module
    mbmf.add_arguments(p)


def new_run(args, log) -> Run:
    """A new run directory from `fastmbrl train` arguments."""
    settings = {k: getattr(args, k) for k in ("planner", "steps", "random_steps",
                "steps_per_iteration", "horizon", "num_samples", "epochs", "ensemble_size",
                "shaping") if getattr(args, k) is not None}
    cfg = TrainConfig(task=args.task, seed=args.seed, **settings).resolved()
    out = args.out or f"runs/{cfg.task}-{cfg.planner}-s{cfg.seed}"
    r = Run(cfg, out, log)
    r.write_config()
    log(f"training {cfg.task} with {cfg.planner} for {cfg.steps} steps into {out}")
    return r


def _flag(dest: str) -> str:
    return "--no-shaping" if dest == "shaping" else f"--{dest.replace('_', '-')}"


# options that --resume may come with; every other one would be silently ignored
_RESUME_OPTIONS = {"command", "task", "resume", "quiet", "_run"}


def run(args) -> int:
    from fastmbrl.algorithms import mbmf

    algos = {"mbrl": (Run, new_run), "trpo": (trpo.TRPORun, trpo.new_run),
             "mbmf": (mbmf.MBMFRun, mbmf.new_run)}
    if args.resume and args.task:
        raise FastMBRLError("give either a task or --resume DIR, not both")
    if args.resume:
        given = [_flag(k) for k, v in vars(args).items()
                 if k not in _RESUME_OPTIONS and v != _UNSET.get(k)]
        if given:
            raise FastMBRLError(
                f"--resume continues a run with the settings saved in {args.resume}; "
                f"drop {', '.join(given)} (or start a new run to change them)")
    algo = read_run_config(args.resume)["algo"] if args.resume else args.algo
    if algo == "trpo":
        given = [_flag(k) for k in _PLANNING_ARGS if getattr(args, k) is not None]
        if given:
            raise FastMBRLError(f"{', '.join(given)} only apply to --algo mbrl or mbmf")
    if not args.resume and not args.task:
        raise FastMBRLError(f"a task name is required, e.g. fastmbrl train Pendulum-v1 --algo {algo}")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    run_class, start = algos[algo]
    r = run_class.resume(args.resume, log) if args.resume else start(args, log)
    t0 = time.perf_counter()
    r.train()
    last = next((m["mean_return"] for m in reversed(r.metrics) if m.get("mean_return") is not None),
                float("nan"))
    print(f"done: {r.env_steps} steps in {time.perf_counter() - t0:.0f} s, last mean return "
          f"{last:.2f}; evaluate with: fastmbrl eval {r.out}")
    return 0
