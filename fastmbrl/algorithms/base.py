"""One run lifecycle for every algorithm: configuration, seeding, the environment, the run
directory with state.json as the commit point, resume, and the training loop.

An algorithm subclasses `Run` with its `Config` class and supplies `iterate()` (one iteration,
returning its metrics row) and the files it keeps (`save_files`, `load_files`, `extra_state`).
A run directory holds config.json, metrics.jsonl (one row per finished iteration) and
metrics.csv (the same rows as a table), the algorithm's files and state.json; each iteration
commits as one atomic step (rundir.commit), and a resume starts from the last commit. A run
started with `tensorboard=True` also writes DIR/tensorboard/ (fastmbrl.algorithms.tensorboard).
A run holds the directory's lock while it trains, commits or recovers, so that two processes
never write one directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath

from fastmbrl.algorithms.config import Config

_Config = Config  # inside Run, `Config` is the class attribute (the algorithm's own)
from fastmbrl.algorithms.rundir import (METRICS_CSV, RunLock, RunLockedError, commit,
                                        import_run_tasks, read_run_config, read_state, recover,
                                        run_logs_tensorboard, write_metrics_csv,
                                        write_run_config)
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.tasks import task_source

if TYPE_CHECKING:
    import gymnasium

    from fastmbrl.algorithms.tensorboard import EventLog
    from fastmbrl.data.buffer import ReplayBuffer

#: where a run writes its log lines (print by default)
Log = Callable[[str], object]
_R = TypeVar("_R", bound="Run")

#: episode e of a run with seed s is reset with seed s * EPISODE_SEED_STRIDE + e, so that runs of
#: different seeds never share an episode seed (below 100,003 episodes)
EPISODE_SEED_STRIDE = 100_003


def run_episode(env: gymnasium.Env, act: Callable[[Any], npt.ArrayLike] | None, seed: int,
                max_steps: int | None = None, buffer: ReplayBuffer | None = None,
                rng: np.random.Generator | None = None) -> tuple[float, int, float, bool]:
    """Run one episode with `act(obs) -> action` (or uniform random actions when `act` is None).

    Returns (return, steps, seconds spent in `act`, whether the environment ended the episode
    itself: terminated or its own time limit, not `max_steps`). Transitions go into `buffer`.
    """
    obs, _ = env.reset(seed=int(seed))
    total, steps, act_s = 0.0, 0, 0.0
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]  # a Box
    while True:
        t0 = time.perf_counter()
        action = (rng.uniform(low, high).astype(np.float32)  # type: ignore[union-attr]  # needs rng
                  if act is None else act(obs))
        act_s += time.perf_counter() - t0
        next_obs, reward, terminated, env_truncated, _ = env.step(action)
        steps += 1
        truncated = env_truncated or (max_steps is not None and steps >= max_steps)
        reward = float(reward)
        if buffer is not None:
            buffer.add(obs, action, next_obs, reward, terminated, truncated)
        total += reward
        obs = next_obs
        if terminated or truncated:
            return total, steps, act_s, bool(terminated or env_truncated)


def config_record(config: Config) -> tuple[dict[str, Any], list[str]]:
    """The "config" entry and the "imports" of config.json for a run of the resolved `config`
    (rundir.run_config_meta)."""
    source = task_source(config.lookup_task(config.task).name)
    return {"algo": config.ALGO, **dataclasses.asdict(config)}, [source] if source else []


def _commit_id(state) -> str | None:
    """What identifies a committed state: its stage's name ("" for a state written before
    commits named one; None for no state)."""
    if state is None:
        return None
    return (state.get("commit") or {}).get("stage", "")


class Run:
    """One training run bound to a run directory (or to none, for library use)."""

    Config: ClassVar[type[Config]] = Config
    #: the algorithm's name in log lines (default: the config's label)
    title: ClassVar[str] = ""

    def __init__(self, config: _Config, out: StrPath | None = None, log: Log = print) -> None:
        if not isinstance(config, self.Config):
            raise FastMBRLError(f"config: expected a {self.Config.__name__}, got "
                                f"{type(config).__name__}")
        self.config = config.resolved()
        self.task = self.config.lookup_task(self.config.task)
        self.out = Path(out) if out is not None else None
        self.log = log
        self.iteration = 0
        self.episodes = 0
        self.metrics: list[dict] = []
        self.rng = np.random.default_rng(self.rng_seed())
        self._steps = 0
        self._env: gymnasium.Env | None = None
        self._lock = None if self.out is None else RunLock(self.out)
        self._commit: str | None = None  # _commit_id of the state this run loaded or last wrote
        #: called as progress(env_steps, total_steps) after each episode and iteration
        self.progress: Callable[[int, int], None] | None = None
        #: write TensorBoard event files (set before write_config, which records it)
        self.tensorboard = False
        self._events: EventLog | None = None  # the open EventLog while training with tensorboard

    def rng_seed(self) -> int | list[int]:
        """Seed of the run's own stream (actions, minibatches): the config's seed by default."""
        return self.config.seed

    @property
    def env(self) -> gymnasium.Env:
        if self._env is None:
            self._env = self.task.make_env()
        return self._env

    @property
    def env_steps(self) -> int:
        return self._steps

    def episode_seed(self, offset: int = 0) -> int:
        self.episodes += 1
        return self.config.seed * EPISODE_SEED_STRIDE + offset + self.episodes

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> list[dict]:
        """Iterate until the step budget is spent, recording each iteration; returns the rows.
        The run directory's lock is released when it returns, however it returns."""
        with self.locked(), self._event_log():
            if (self._commit is not None and self.out is not None
                    and not (self.out / METRICS_CSV).exists()):
                self.save()  # a directory of fastmbrl 0.1.0: the table of its rows so far
            return self.loop()

    def loop(self) -> list[dict]:
        self.begin()
        while not self.finished():
            self.record(self.iterate())
        return self.metrics

    def begin(self) -> None:
        """Hook: work before the first iteration (skipped by a resume that is past it)."""

    def finished(self) -> bool:
        return self.env_steps >= self.config.steps

    def iterate(self) -> dict:
        """One iteration; returns its metrics row (at least iteration, env_steps, mean_return)."""
        raise NotImplementedError

    def describe(self, row: dict[str, Any]) -> str | None:
        """The log line of a finished iteration (None: nothing to log)."""
        ret = row.get("mean_return")
        return (f"iteration {row['iteration']}: {row['env_steps']}/{self.config.steps} steps, "
                f"return {'-' if ret is None else f'{ret:.2f}'}")

    def record(self, row: dict) -> None:
        self.metrics.append(row)
        line = self.describe(row)
        if line is not None:
            self.log(line)
        self.save(row)
        self.report_progress()

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.env_steps, self.config.steps)

    # -- run directories ----------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's lock for the block (RunLockedError if another process, or
        another Run of this one, holds it); re-entrant."""
        if self._lock is None or self._lock.held or self.out is None:  # (a lock has an out)
            yield
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _event_log(self) -> Iterator[None]:
        """The TensorBoard event log for the block, if the run writes one."""
        if not self.tensorboard or self.out is None:
            yield
            return
        from fastmbrl.algorithms.tensorboard import EventLog

        self._events = EventLog(self.out, self.metrics)
        try:
            yield
        finally:
            events, self._events = self._events, None
            events.close()

    def save(self, row: dict | None = None) -> None:
        """Commit `row` (the last of `self.metrics`: `record` appends it) and the algorithm's
        files with the state, as one atomic step; metrics.csv is rewritten whole with every
        commit (a few hundred rows take a millisecond)."""
        if self.out is None:
            return

        def write_files(stage):
            write_metrics_csv(stage / METRICS_CSV, self.metrics)
            self.save_files(stage)

        with self.locked():
            self._check_current()
            state = commit(self.out, {
                "iteration": self.iteration, "episodes": self.episodes,
                "env_steps": self.env_steps, "rng": self.rng.bit_generator.state,
                **self.extra_state()}, write_files, row)
            self._commit = _commit_id(state)
        if row is not None and self._events is not None:
            self._events.add(row)  # after the commit: the log never runs ahead of the run

    def _check_current(self) -> None:
        """Refuse to commit over a state this run did not load or write: another process (or
        Run) trained the directory between this run's resume and its train."""
        if _commit_id(read_state(self.out)) != self._commit:
            raise RunLockedError(f"{self.out} was trained by another run since this one was "
                                 "loaded; resume it again to continue from its last commit")

    def save_files(self, stage: Path) -> None:
        """Hook: write the files of this commit into `stage` (a fresh directory; each file
        replaces the run directory's own of that name once the commit is made)."""

    def extra_state(self) -> dict:
        """Hook: what state.json keeps besides the counters and the run's random state."""
        return {}

    def load_files(self, out: Path, state: dict) -> None:
        """Hook: read back what `save_files` and `extra_state` kept."""

    @classmethod
    def check_saved(cls, out: Path, config: dict) -> None:
        """Hook: refuse (FormatError) a config.json whose sizes disagree with the saved files,
        before the run allocates anything from them: a crafted config cannot then make it
        allocate more than the files hold."""

    def write_config(self) -> None:
        """Start the run directory (refused if it already holds a run)."""
        self._check_tensorboard()
        if self.out is not None:
            with self.locked():
                write_run_config(self.out, *config_record(self.config),
                                 tensorboard=self.tensorboard)

    def _check_tensorboard(self) -> None:
        if self.tensorboard is not True and self.tensorboard is not False:
            raise FastMBRLError(f"tensorboard must be True or False, got {self.tensorboard!r}")
        if self.tensorboard:
            if self.out is None:
                raise FastMBRLError("tensorboard=True needs a run directory (out) to log into")
            from fastmbrl.algorithms.tensorboard import require_writer

            require_writer()  # before anything is written: a missing extra is said first

    def resume_message(self) -> str:
        return (f"resuming {self.out} at iteration {self.iteration}, {self.env_steps} env "
                "steps")

    @classmethod
    def resume(cls: type[_R], out: StrPath, log: Log = print) -> _R:
        """The run saved in `out`, at its last finished iteration."""
        out = Path(out)
        config = dict(read_run_config(out, cls.Config.ALGO))
        missing = {"task", "seed"} - set(config)
        if missing:
            raise FormatError(f"{out}/config.json has no {' or '.join(sorted(missing))}")
        import_run_tasks(out)
        config.pop("algo")
        unknown = set(config) - cls.Config.setting_names() - {"task", "seed"}
        if unknown:
            raise FormatError(f"{out}/config.json has settings this fastmbrl does not know: "
                              f"{', '.join(sorted(unknown))}")
        lock = RunLock(out).acquire()
        try:
            state, rows = recover(out)
            cls.check_saved(out, config)  # the committed files, before the run sizes anything
            run = cls(cls.Config(**config), out, log)
            run.tensorboard = run_logs_tensorboard(out)
            run._check_tensorboard()
            if state is None:
                return run  # stopped before its first commit: start over
            run._commit = _commit_id(state)
            run.iteration, run.episodes = state["iteration"], state["episodes"]
            run._steps = state["env_steps"]
            try:
                run.rng.bit_generator.state = state["rng"]
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(f"{out}/state.json: rng is not a random generator's state "
                                  f"({exc})") from None
            run.load_files(out, state)
        finally:
            lock.release()
        run.metrics = rows
        log(run.resume_message())
        return run

    @classmethod
    def start(cls: type[_R], task: str, out: StrPath | None = None, log: Log = print,
              tensorboard: bool = False, **settings: Any) -> _R:
        """A new run of `task` (settings are the Config's fields, seed included) whose run
        directory, if any, is started now; `tensorboard`: it also writes TensorBoard event
        files into out/tensorboard/."""
        run = cls(cls.Config.create(task, **settings), out, log)
        run.tensorboard = tensorboard
        run.write_config()
        return run

    @classmethod
    def run(cls: type[_R], task: str, out: StrPath | None = None, log: Log = print,
            tensorboard: bool = False, **settings: Any) -> _R:
        """Start a run and train it to the end; returns the finished run."""
        run = cls.start(task, out, log, tensorboard, **settings)
        run.train()
        return run
