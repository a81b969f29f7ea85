"""World Models as an algorithm (Ha & Schmidhuber 2018): `--algo worldmodels`, a staged run.

Stages, in order, each committed as the run's iterations (resume continues inside a stage, and a
finished stage's output is kept, never redone). A stage whose output is in a new run's directory
before it starts is skipped, or continued to the run's epochs: episodes already in DIR/frames/
are not collected again, and a DIR/vae.npz or DIR/mdnrnn.npz of the run's sizes is trained on
from the epochs it holds (copy them from another run to train only C, in the dream this time),
and a DIR/wm_controller.npz of the run's sizes and action bounds is where CMA-ES starts (a C
evolved in the dream, say, refined on real episodes):

* collect: random-policy episodes of the pixel task into the frame store DIR/frames/ (chunks,
  each written atomically, so a killed collection keeps its finished episodes); split over
  `workers` processes.
* vae: V, the convolutional VAE, one iteration per epoch (DIR/vae.npz); after its last epoch
  every frame is encoded once (DIR/latents.npz: mu and logvar per frame).
* mdnrnn: M, one iteration per epoch on latents drawn afresh from (mu, logvar) each epoch, as in
  the paper (DIR/mdnrnn.npz).
* controller: C evolved by CMA-ES, one iteration per generation (DIR/cmaes.npz, and
  DIR/wm_controller.npz holding the search's mean), scored in the real environment (episodes
  through fastmbrl.executor) or in M's dream (one parallel kernel); every `eval_every`
  generations the mean is run on fixed real episodes (the row's mean_return).

`WorldModelsAgent.load(DIR)` acts with the three files alone; `fastmbrl eval DIR` runs it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath
from fastmbrl.algorithms.base import EPISODE_SEED_STRIDE, Log, Run, run_episode
from fastmbrl.algorithms.config import (Config, mapping, non_negative, one_of, optional,
                                        positive, positive_int, setting)
from fastmbrl.data.collect import DEFAULT_SIGMA, POLICIES, collect
from fastmbrl.data.frames import FrameStore, stored_ids
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.executor import run_jobs
from fastmbrl.io import load_npz, save_npz
from fastmbrl.models.mdnrnn import MDNRNN
from fastmbrl.models.wm_controller import (WorldModelAgent, WorldModelController, dream,
                                           num_params)
from fastmbrl.progress import Progress
from fastmbrl.tasks.pixels import PixelTask, get_pixel_task

if TYPE_CHECKING:
    from fastmbrl.models.vae import VAEConfig

FRAMES_DIR, VAE_FILE, LATENTS_FILE = "frames", "vae.npz", "latents.npz"
MDNRNN_FILE, CMAES_FILE, CONTROLLER_FILE = "mdnrnn.npz", "cmaes.npz", "wm_controller.npz"
STAGES = ("collect", "vae", "mdnrnn", "controller", "done")
_LATENTS_KIND, _LATENTS_VERSION = "wm_latents", 1
#: evaluation episodes of the controller's mean are seeded from here on (training episodes
#: below it), the same ones at every evaluation so that the curve compares like with like
_EVAL_SEED_OFFSET = 90_000
#: VAEConfig fields the `vae` setting may hold (image_size, z_size, lr, kl_tolerance are
#: settings of their own)
_VAE_KEYS = ("enc_channels", "enc_kernels", "dense_size", "dec_channels", "dec_kernels",
             "stride")

_LOADED: dict[tuple, tuple] = {}  # a worker's V and M, read once per file version


def _models(vae_path: str, mdnrnn_path: str) -> tuple:
    from fastmbrl.models.vae import ConvVAE

    key = tuple((p, os.stat(p).st_mtime_ns) for p in (vae_path, mdnrnn_path))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = (ConvVAE.load(vae_path), MDNRNN.load(mdnrnn_path))
    return _LOADED[key]


class _StallCut:
    """An environment whose episodes end (truncated) after `steps` steps in a row without a
    positive reward; `stalled` and `last_reward` say how the last one ended."""

    def __init__(self, env: Any, steps: int) -> None:
        self.env, self.steps = env, steps
        self.action_space = env.action_space
        self.stalled, self.last_reward, self._since = False, 0.0, 0

    def reset(self, **kwargs: Any) -> tuple:
        self.stalled, self._since = False, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.last_reward = float(reward)
        self._since = 0 if reward > 0 else self._since + 1
        if self._since >= self.steps and not (terminated or truncated):
            self.stalled = truncated = True
        return obs, reward, terminated, truncated, info


def _episode_cap(max_steps: int | None, env: Any) -> int | None:
    """The steps an episode can last: the cap, or the environment's time limit, the lower."""
    limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    caps = [c for c in (max_steps, limit) if c]
    return min(caps) if caps else None


def episode_return(job: dict) -> tuple[float, int]:
    """(return, steps) of one episode of controller `job["params"]` in the real environment (a
    job of `evaluate_population`; top-level so that worker processes can run it). With
    `job["stall_steps"]`, an episode that earns no positive reward for that many steps in a row
    ends there and is credited its last reward for each step left to its cap."""
    vae, mdnrnn = _models(job["vae"], job["mdnrnn"])
    task = job["task"]
    env = task.make_env()
    try:
        low, high = env.action_space.low, env.action_space.high
        controller = WorldModelController(mdnrnn.z_dim, mdnrnn.hidden, mdnrnn.act_dim, low,
                                          high, job["params"], task.action_clip)
        agent = WorldModelAgent(vae, mdnrnn, controller)
        stall = job.get("stall_steps")
        cap = _episode_cap(job["max_steps"], env)
        if stall and cap is None:
            raise FastMBRLError("stall_steps needs an episode cap: set episode_length (this "
                                "environment has no time limit of its own)")
        run_env = _StallCut(env, stall) if stall else env
        total, steps, _, _ = run_episode(run_env, agent.act, job["seed"], job["max_steps"])
        if run_env is not env and run_env.stalled:
            total += run_env.last_reward * (cap - steps)
    finally:
        env.close()
    return total, steps


def population_returns(vae_path: StrPath, mdnrnn_path: StrPath, task: Any,
                       population: npt.ArrayLike, seeds: Sequence[int],
                       max_steps: int | None = None, stall_steps: int | None = None,
                       **executor: Any) -> tuple[np.ndarray, int]:
    """(returns (P, len(seeds)), environment steps taken) of `evaluate_population`'s episodes;
    `stall_steps`: episode_return's cut of stalled episodes (None: whole episodes).
    `executor` workers=1 runs them in this process (no pool to start)."""
    population = np.atleast_2d(np.asarray(population, np.float32))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: at least one episode seed, each once, got {seeds}")
    jobs, keys = [], []
    for p, params in enumerate(population):
        for s in seeds:
            jobs.append({"vae": str(vae_path), "mdnrnn": str(mdnrnn_path), "task": task,
                         "params": params, "seed": s, "max_steps": max_steps,
                         "stall_steps": stall_steps})
            keys.append((p, s))
    returns = np.zeros((len(population), len(seeds)))
    steps = 0
    if executor.get("workers") == 1 and executor.get("backend", "local") == "local":
        outcomes = ((key, episode_return(job)) for key, job in zip(keys, jobs))
    else:
        outcomes = _outcomes(run_jobs(episode_return, jobs, keys=keys, **executor))
    for (p, s), (ret, k) in outcomes:
        returns[p, seeds.index(s)] = ret
        steps += k
    return returns, steps


def _outcomes(results):
    for outcome in results:
        if not outcome.ok:
            raise FastMBRLError(f"candidate {outcome.key[0]}, episode seed {outcome.key[1]}: "
                                f"{outcome.error}")
        yield outcome.key, outcome.value


def evaluate_population(vae_path: StrPath, mdnrnn_path: StrPath, task: Any,
                        population: npt.ArrayLike, seeds: Sequence[int],
                        max_steps: int | None = None, **executor: Any) -> np.ndarray:
    """Mean return over the episodes `seeds` of each controller of `population` (P, n) in the
    real environment of `task` (a PixelTask), every candidate on the same seeds; the P x len(seeds)
    episodes go through fastmbrl.executor.run_jobs (`executor`: backend, workers, threads,
    address), V and M read from their files by each worker. A failed episode raises
    FastMBRLError naming it."""
    returns, _ = population_returns(vae_path, mdnrnn_path, task, population, seeds, max_steps,
                                    None, **executor)
    return returns.mean(axis=1)


# -- the run's settings ---------------------------------------------------------------------------
def _vae_sizes(value: Any, name: str) -> dict[str, Any]:
    value = mapping(value, name)
    unknown = sorted(set(value) - set(_VAE_KEYS))
    if unknown:
        raise FastMBRLError(f"{name}: unknown key(s) {', '.join(unknown)}; it holds "
                            f"{', '.join(_VAE_KEYS)} (frame_size, z_size, vae_lr and "
                            "kl_tolerance are settings of their own)")
    return value


def _at_least_two(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise FastMBRLError(f"{name} must be an integer >= 2, got {value!r}")
    return value


@dataclasses.dataclass
class WorldModelsConfig(Config):
    """Settings of one World Models run (the task: a pixel task, fastmbrl.tasks.pixels)."""

    ALGO = "worldmodels"
    lookup_task = staticmethod(get_pixel_task)

    # collect
    episodes: int | None = setting(
        100, "random-policy episodes collected for V and M [collect]", positive_int, "int")
    episode_length: int | None = setting(
        None, "episode cap (default: the environment's own time limit)", optional(positive_int),
        "int")
    collect_policy: str | None = setting(
        "brownian", "random policy of the collection: a clipped random walk or uniform noise",
        one_of(*POLICIES), "str")
    collect_sigma: float | None = setting(
        DEFAULT_SIGMA, "step of the brownian walk, in half-ranges of the actions", positive,
        "float")
    frame_size: int | None = setting(64, "side of the square frames", positive_int, "int")
    workers: int | None = setting(
        None, "processes collecting episodes and running real episodes of the controller "
        "(default: the cores)", optional(positive_int), "int")
    # V
    z_size: int | None = setting(32, "size of V's latent z", positive_int, "int")
    vae: dict | None = setting(
        lambda _: {}, "V's sizes other than the paper's, as JSON (enc_channels, enc_kernels, "
        "dense_size, dec_channels, dec_kernels, stride)", _vae_sizes, "json")
    vae_epochs: int | None = setting(10, "V's epochs over the frames [vae]", positive_int, "int")
    vae_batch_size: int | None = setting(100, "V's minibatch size", positive_int, "int")
    vae_lr: float | None = setting(1e-4, "V's Adam learning rate", positive, "float")
    kl_tolerance: float | None = setting(
        0.5, "V's KL floor per latent dimension (World Models' KL tolerance)",
        non_negative, "float")
    vae_frames: int | None = setting(
        None, "frames V trains on, drawn once from the store (default: all)",
        optional(positive_int), "int")
    # M
    rnn_hidden: int | None = setting(256, "M's LSTM units", positive_int, "int")
    n_mix: int | None = setting(5, "M's mixture components per latent dimension",
                                positive_int, "int")
    rnn_epochs: int | None = setting(20, "M's epochs over the episodes [mdnrnn]", positive_int,
                                     "int")
    rnn_batch_size: int | None = setting(100, "M's episodes per minibatch", positive_int, "int")
    seq_len: int | None = setting(100, "M's truncated-BPTT length", positive_int, "int")
    rnn_lr: float | None = setting(1e-3, "M's Adam learning rate", positive, "float")
    # C
    train_in: str | None = setting(
        "real", "where CMA-ES scores C: real episodes or M's dream", one_of("real", "dream"),
        "str")
    generations: int | None = setting(100, "CMA-ES generations [controller]", positive_int,
                                      "int")
    popsize: int | None = setting(
        None, "CMA-ES population (default 4 + 3 ln n)", optional(_at_least_two), "int")
    sigma0: float | None = setting(0.1, "CMA-ES initial step size", positive, "float")
    rollouts: int | None = setting(
        1, "episodes (or dreams) per candidate per generation, the same for every candidate",
        positive_int, "int")
    dream_temperature: float | None = setting(
        1.15, "temperature of M's draws in the dream", non_negative, "float")
    dream_horizon: int | None = setting(
        None, "steps of a dream (default: the episode cap, else the environment's limit)",
        optional(positive_int), "int")
    stall_steps: int | None = setting(
        None, "C's search on real episodes: an episode that earns no positive reward for this "
        "many steps in a row ends there, credited its last reward for each step left (CarRacing: "
        "-0.1 a frame off the track or standing); evaluations always run whole episodes",
        optional(positive_int), "int")
    eval_every: int | None = setting(
        10, "generations between real-environment evaluations of C's mean (the last is "
        "always evaluated)", positive_int, "int")
    eval_episodes: int | None = setting(5, "real episodes of each evaluation", positive_int,
                                        "int")

    def validate(self) -> None:
        try:
            self.vae_config()
        except (TypeError, ValueError) as exc:
            raise FastMBRLError(f"vae: {exc}") from None
        if self.stall_steps is not None and self.train_in != "real":
            raise FastMBRLError("stall_steps cuts real search episodes; with train_in "
                                f"{self.train_in!r} it would do nothing: leave it unset")

    def vae_config(self) -> VAEConfig:
        """V's sizes: the paper's, the `vae` setting's over them, the frame and z sizes."""
        from fastmbrl.models.vae import VAEConfig

        sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in self.vae.items()}
        return VAEConfig(image_size=self.frame_size, z_size=self.z_size, lr=self.vae_lr,
                         kl_tolerance=self.kl_tolerance, **sizes)

    def budget(self) -> str:
        return (f"{self.episodes} episodes, V {self.vae_epochs} epochs, M {self.rnn_epochs} "
                f"epochs, C {self.generations} generations ({self.train_in})")


def _collect_job(job: dict) -> dict:
    return collect(job["path"], job["task"], job["ids"], seed=job["seed"],
                   policy=job["policy"], sigma=job["sigma"], max_steps=job["max_steps"],
                   meta=job["meta"], progress=False)


def _split(n: int, parts: int) -> list[range]:
    """range(n) in `parts` consecutive pieces of near-equal length (none empty)."""
    parts = max(1, min(parts, n))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:])]


# -- the run --------------------------------------------------------------------------------------
class WorldModelsRun(Run):
    """A World Models run bound to a run directory (its frames live there, so one is needed)."""

    Config = WorldModelsConfig
    config: WorldModelsConfig
    title = "World Models"

    def __init__(self, config: WorldModelsConfig, out: StrPath | None = None,
                 log: Log = print) -> None:
        super().__init__(config, out, log)
        if self.out is None:
            raise FastMBRLError("a World Models run keeps its frames on disk: give it a run "
                                "directory (out)")
        cfg = self.config
        self.task: PixelTask = dataclasses.replace(self.task, frame_size=cfg.frame_size)
        self.stage = "collect"
        self.vae = None
        self.mdnrnn: MDNRNN | None = None
        self.es = None
        self._store: FrameStore | None = None
        self._latents: tuple[np.ndarray, np.ndarray] | None = None
        self._written: set[str] = set()
        self._space: tuple[np.ndarray, np.ndarray, int | None] | None = None

    # -- what the stages share -------------------------------------------------------------------
    @property
    def frames_dir(self) -> Path:
        return self.out / FRAMES_DIR

    def action_space(self) -> tuple[np.ndarray, np.ndarray, int | None]:
        """(low, high, the environment's step limit) of the task, read once."""
        if self._space is None:
            env = self.task.make_env()
            try:
                spec = getattr(env, "spec", None)
                self._space = (np.asarray(env.action_space.low, np.float32),
                               np.asarray(env.action_space.high, np.float32),
                               getattr(spec, "max_episode_steps", None))
            finally:
                env.close()
        return self._space

    @property
    def act_dim(self) -> int:
        return int(self.action_space()[0].size)

    def store(self) -> FrameStore:
        if self._store is None:
            self._store = FrameStore.load(self.frames_dir)
        return self._store

    def _bar(self, label: str, unit: str):
        """The progress callback of a stage (the CLI's bar restarted for it), or None."""
        bar = self.progress
        if isinstance(bar, Progress):
            bar.restart(label, unit)
        return bar

    def _workers(self, jobs: int) -> int:
        from fastmbrl.executor import available_cores

        return max(1, min(jobs, self.config.workers or available_cores()))

    # -- the loop --------------------------------------------------------------------------------
    def finished(self) -> bool:
        return self.stage == "done"

    def report_progress(self) -> None:
        """Each stage reports its own progress while it works."""

    def iterate(self) -> dict:
        self.iteration += 1
        self._written = set()
        t0 = time.perf_counter()
        row = getattr(self, f"_{self.stage}")()
        return {"iteration": self.iteration, "stage": row.pop("stage"),
                "env_steps": self.env_steps, **row,
                "wall_s": round(time.perf_counter() - t0, 3)}

    def _collect(self) -> dict:
        cfg = self.config
        low, high, _ = self.action_space()
        pieces = _split(cfg.episodes, self._workers(cfg.episodes))
        jobs = [{"path": str(self.frames_dir), "task": self.task, "ids": ids, "seed": cfg.seed,
                 "policy": cfg.collect_policy, "sigma": cfg.collect_sigma,
                 "max_steps": cfg.episode_length, "meta": self.task.describe()}
                for ids in pieces]
        bar = self._bar("collect", "episodes")
        if len(jobs) == 1:
            collect(self.frames_dir, self.task, jobs[0]["ids"], seed=cfg.seed,
                    policy=cfg.collect_policy, sigma=cfg.collect_sigma,
                    max_steps=cfg.episode_length, meta=self.task.describe(),
                    progress=bar or False)
        else:
            def tick():
                if bar is not None and self.frames_dir.exists():
                    bar(len(stored_ids(self.frames_dir)), cfg.episodes)

            for outcome in run_jobs(_collect_job, jobs, workers=len(jobs), threads=1,
                                    tick=tick):
                if not outcome.ok:
                    raise FastMBRLError(f"collecting episodes {outcome.key}: {outcome.error}")
            tick()
        store = self.store()
        returns = [float(store.episode(i).rewards.sum()) for i in range(len(store))]
        self._steps = store.num_steps
        self.episodes = len(store)
        self.stage = "vae"
        return {"stage": "collect", "episodes": len(store), "frames": store.num_frames,
                "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}

    def _vae_frames(self) -> np.ndarray:
        store, n = self.store(), self.config.vae_frames
        if n is None or n >= store.num_frames:
            return store.frames
        pick = np.random.default_rng([self.config.seed, 7]).choice(store.num_frames, n,
                                                                   replace=False)
        return store.frames[np.sort(pick)]

    def _vae(self) -> dict:
        from fastmbrl.models.vae import ConvVAE

        cfg = self.config
        row: dict[str, Any] = {"stage": "vae"}
        if self.vae is None:
            self.vae = self._given(VAE_FILE, ConvVAE.load, lambda v: v.config == cfg.vae_config(),
                                   "V's sizes")
            if self.vae is None:
                self.vae = ConvVAE(cfg.vae_config(), seed=cfg.seed)
                self.vae.init_output_bias(self._vae_frames())
            else:
                row["given"] = True
        if self.vae.epochs_done < cfg.vae_epochs:
            frames = self._vae_frames()
            epoch = self.vae.epochs_done + 1
            bar = self._bar(f"V epoch {epoch}/{cfg.vae_epochs}", "batches")
            hist = self.vae.fit(frames, 1, min(cfg.vae_batch_size, len(frames)),
                                progress=bar)[0]
            self._written.add(VAE_FILE)
            row.update(vae_loss=hist["loss"], r_loss=hist["r_loss"], kl_loss=hist["kl_loss"])
        row["epoch"] = self.vae.epochs_done
        if self.vae.epochs_done >= cfg.vae_epochs:
            mu, logvar = self.vae.encode(self.store().frames)
            self._latents = (mu, logvar)
            self._written.add(LATENTS_FILE)
            self.stage = "mdnrnn"
        return row

    def _episodes_of_latents(self, z: np.ndarray):
        """M's training arrays: z (E, T + 1, Z) padded, actions (E, T, A), rewards and dones
        (E, T), lengths (E,), from the store's episodes and per-frame latents `z`."""
        store = self.store()
        steps = store.episode_steps
        e, t = len(store), int(steps.max())
        zz = np.zeros((e, t + 1, z.shape[1]), np.float32)
        acts = np.zeros((e, t, store.act_dim), np.float32)
        rews = np.zeros((e, t), np.float32)
        dones = np.zeros((e, t), np.float32)
        for i in range(e):
            ep, f0, n = store.episode(i), int(store.frame_starts[i]), int(steps[i])
            zz[i, :n + 1] = z[f0:f0 + n + 1]
            acts[i, :n], rews[i, :n], dones[i, :n] = ep.actions, ep.rewards, ep.terminated
        return zz, acts, rews, dones, steps.astype(np.int64)

    def _draw_latents(self, rng: np.random.Generator) -> np.ndarray:
        mu, logvar = self._latents
        return (mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape)).astype(np.float32)

    def _mdnrnn(self) -> dict:
        cfg = self.config
        row: dict[str, Any] = {"stage": "mdnrnn"}
        if self.mdnrnn is None:
            sizes = (cfg.z_size, self.act_dim, cfg.rnn_hidden, cfg.n_mix)
            self.mdnrnn = self._given(
                MDNRNN_FILE, MDNRNN.load,
                lambda m: (m.z_dim, m.act_dim, m.hidden, m.n_mix) == sizes,
                "M's sizes (z_size, actions, rnn_hidden, n_mix)")
            if self.mdnrnn is None:
                self.mdnrnn = MDNRNN(*sizes, lr=cfg.rnn_lr, seed=cfg.seed)
            else:
                row["given"] = True
        if self.mdnrnn.epochs_trained < cfg.rnn_epochs:
            z, acts, rews, dones, lengths = self._episodes_of_latents(
                self._draw_latents(self.rng))
            epoch = self.mdnrnn.epochs_trained + 1
            bar = self._bar(f"M epoch {epoch}/{cfg.rnn_epochs}", "steps")
            hist = self.mdnrnn.fit(z, acts, rews, dones, epochs=1,
                                   batch_size=min(cfg.rnn_batch_size, len(lengths)),
                                   seq_len=cfg.seq_len, lengths=lengths, progress=bar)
            if not np.isfinite(hist["loss"][0]):
                raise FloatingPointError(f"M's loss diverged in epoch {epoch} (rnn_lr "
                                         f"{cfg.rnn_lr})")
            self._written.add(MDNRNN_FILE)
            row.update(rnn_loss=float(hist["loss"][0]), nll=float(hist["nll"][0]),
                       reward_loss=float(hist["reward"][0]), done_loss=float(hist["done"][0]))
        row["epoch"] = self.mdnrnn.epochs_trained
        if self.mdnrnn.epochs_trained >= cfg.rnn_epochs:
            if self._start_search():
                row["controller_given"] = True
            self.stage = "controller"
        return row

    def _given(self, name: str, load, fits, what: str):
        """The model file `name` placed in the run directory before its stage began (e.g.
        copied from another run, to train only what follows), checked against the settings;
        None when there is none."""
        path = self.out / name
        if not path.exists():
            return None
        model = load(path)
        if not fits(model):
            raise FastMBRLError(f"{path} was not trained with this run's settings ({what} "
                                "differ); remove it or start the run with its settings")
        return model

    def begin(self) -> None:
        # a placed controller that does not fit is said now, not after V's and M's training
        if STAGES.index(self.stage) < STAGES.index("controller"):
            self._given_controller()
        cfg = self.config
        if cfg.stall_steps is not None and not (cfg.episode_length or self.action_space()[2]):
            raise FastMBRLError(f"stall_steps needs an episode cap: {cfg.task} has no time "
                                "limit of its own, so set episode_length")

    def _given_controller(self) -> WorldModelController | None:
        cfg = self.config
        own = self.controller(np.zeros(num_params(cfg.z_size, cfg.rnn_hidden, self.act_dim)))
        return self._given(
            CONTROLLER_FILE, WorldModelController.load,
            lambda c: ((c.z_dim, c.hidden, c.act_dim) == (own.z_dim, own.hidden, own.act_dim)
                       and all(np.array_equal(getattr(c, k), getattr(own, k))
                               for k in ("action_low", "action_high", "action_clip"))),
            "C's sizes (z_size, rnn_hidden, actions), action bounds or clipped actions")

    def _start_search(self) -> bool:
        """CMA-ES from zeros (the middle of the action bounds), or from a controller placed in
        the directory; True in that case."""
        from fastmbrl.optim.cmaes import CMAES

        cfg = self.config
        given = self._given_controller()
        x0 = (np.zeros(num_params(cfg.z_size, cfg.rnn_hidden, self.act_dim)) if given is None
              else given.params.astype(np.float64))
        self.es = CMAES(x0, cfg.sigma0, popsize=cfg.popsize, seed=cfg.seed,
                        maxiter=cfg.generations)
        self._written |= {CMAES_FILE, CONTROLLER_FILE}
        return given is not None

    def controller(self, params: npt.ArrayLike | None = None) -> WorldModelController:
        """C with `params` (default: the search's mean)."""
        low, high, _ = self.action_space()
        cfg = self.config
        return WorldModelController(cfg.z_size, cfg.rnn_hidden, self.act_dim, low, high,
                                    self.es.mean if params is None else params,
                                    self.task.action_clip)

    def _real(self, population: np.ndarray, seeds: list[int], search: bool = False
              ) -> np.ndarray:
        cfg = self.config
        returns, steps = population_returns(
            self.out / VAE_FILE, self.out / MDNRNN_FILE, self.task, population, seeds,
            cfg.episode_length, cfg.stall_steps if search else None,
            workers=self._workers(len(population) * len(seeds)), threads=1)
        self._steps += steps
        return returns.mean(axis=1)

    def dream_horizon(self) -> int:
        cfg = self.config
        return cfg.dream_horizon or cfg.episode_length or self.action_space()[2] or 1000

    def _dreamed(self, population: np.ndarray) -> np.ndarray:
        cfg = self.config
        store = self.store()
        starts = self.rng.choice(len(store), cfg.rollouts)
        mu, logvar = self._latents
        first = store.frame_starts[starts]
        z0 = mu[first] + np.exp(0.5 * logvar[first]) * self.rng.standard_normal(
            (cfg.rollouts, cfg.z_size))
        low, high, _ = self.action_space()
        returns, _ = dream(self.mdnrnn, population, z0, self.dream_horizon(), low, high,
                           cfg.dream_temperature, seed=int(self.rng.integers(2 ** 31)),
                           action_clip=self.task.action_clip)
        return returns.mean(axis=1)

    def _controller(self) -> dict:
        cfg = self.config
        es = self.es
        generation = es.iterations + 1
        self._bar(f"C generation {generation}/{cfg.generations}", "generations")
        population = es.ask()
        if cfg.train_in == "dream":
            fitness = self._dreamed(population)
        else:
            first = cfg.seed * EPISODE_SEED_STRIDE + es.iterations * cfg.rollouts
            fitness = self._real(population, list(range(first + 1, first + 1 + cfg.rollouts)),
                                 search=True)
        es.tell(population, -fitness)
        self._written |= {CMAES_FILE, CONTROLLER_FILE}
        row: dict[str, Any] = {"stage": "controller", "generation": es.iterations,
                               "fitness_mean": float(fitness.mean()),
                               "fitness_best": float(fitness.max()),
                               "sigma": float(es.sigma)}
        last = es.iterations >= cfg.generations or bool(es.stop())
        if last or es.iterations % cfg.eval_every == 0:
            seeds = self.eval_seeds()
            row["mean_return"] = float(self._real(es.mean[None], seeds)[0])
        if last:
            self.stage = "done"
        if self.progress is not None:
            self.progress(es.iterations, cfg.generations)
        return row

    def eval_seeds(self) -> list[int]:
        first = self.config.seed * EPISODE_SEED_STRIDE + _EVAL_SEED_OFFSET
        return list(range(first, first + self.config.eval_episodes))

    def describe(self, row: dict[str, Any]) -> str | None:
        cfg, stage = self.config, row["stage"]
        wall = f"{row['wall_s']:.1f} s"
        if stage == "collect":
            return (f"collect: {row['episodes']} episodes, {row['frames']} frames, random "
                    f"return {row['mean_return']:.2f} ± {row['std_return']:.2f} ({wall})")
        given = (f"{self.out / (VAE_FILE if stage == 'vae' else MDNRNN_FILE)} was there "
                 f"already, trained {row.get('epoch')} epochs; ") if row.get("given") else ""
        if stage == "vae":
            if "vae_loss" not in row:
                return f"V: {given}kept as it is"
            return (f"V epoch {row['epoch']}/{cfg.vae_epochs}: {given}loss "
                    f"{row['vae_loss']:.3f} (reconstruction {row['r_loss']:.3f}, KL "
                    f"{row['kl_loss']:.3f}), {wall}")
        if stage == "mdnrnn":
            start = (f"; CMA-ES starts from {self.out / CONTROLLER_FILE}"
                     if row.get("controller_given") else "")
            if "rnn_loss" not in row:
                return f"M: {given}kept as it is{start}"
            return (f"M epoch {row['epoch']}/{cfg.rnn_epochs}: {given}loss "
                    f"{row['rnn_loss']:.4f} (z NLL {row['nll']:.4f}, reward "
                    f"{row['reward_loss']:.4f}, done {row['done_loss']:.4f}), {wall}{start}")
        line = (f"C generation {row['generation']}/{cfg.generations}: {cfg.train_in} return "
                f"mean {row['fitness_mean']:.2f}, best {row['fitness_best']:.2f}")
        if "mean_return" in row:
            line += f"; C's mean on {cfg.eval_episodes} real episodes {row['mean_return']:.2f}"
        return f"{line}, {wall}"

    def resume_message(self) -> str:
        return f"resuming {self.out} at stage {self.stage} (iteration {self.iteration})"

    # -- files -----------------------------------------------------------------------------------
    def save_files(self, stage: Path) -> None:
        if VAE_FILE in self._written:
            self.vae.save(stage / VAE_FILE)
        if LATENTS_FILE in self._written:
            mu, logvar = self._latents
            save_npz(stage / LATENTS_FILE, _LATENTS_KIND, _LATENTS_VERSION,
                     {"frames": int(mu.shape[0])}, {"mu": mu, "logvar": logvar})
        if MDNRNN_FILE in self._written:
            self.mdnrnn.save(stage / MDNRNN_FILE)
        if CMAES_FILE in self._written:
            self.es.save(stage / CMAES_FILE)
        if CONTROLLER_FILE in self._written:
            self.controller().save(stage / CONTROLLER_FILE)

    def extra_state(self) -> dict:
        return {"stage": self.stage}

    def load_files(self, out: Path, state: dict) -> None:
        from fastmbrl.models.vae import ConvVAE
        from fastmbrl.optim.cmaes import CMAES

        stage = state.get("stage")
        if stage not in STAGES:
            raise FormatError(f"{out}/state.json: stage must be one of {', '.join(STAGES)}, "
                              f"got {stage!r}")
        self.stage = stage
        self._steps = state["env_steps"]
        at = STAGES.index(stage)
        if at >= 1 and (out / VAE_FILE).exists():
            self.vae = ConvVAE.load(out / VAE_FILE)
        if at >= 2:
            self._latents = read_latents(out / LATENTS_FILE)
        if at >= 2 and (out / MDNRNN_FILE).exists():
            self.mdnrnn = MDNRNN.load(out / MDNRNN_FILE)
        if at >= 3:
            self.es = CMAES.load(out / CMAES_FILE)


def read_latents(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) of every frame, as the vae stage wrote them."""
    header, arrays = load_npz(path, _LATENTS_KIND, (_LATENTS_VERSION,))
    mu, logvar = arrays.get("mu"), arrays.get("logvar")
    if (mu is None or logvar is None or mu.ndim != 2 or mu.shape != logvar.shape
            or mu.shape[0] != header.get("frames")):
        raise FormatError(f"{path}: expected arrays mu and logvar of one shape (frames, z)")
    return mu, logvar


def world_model_strip(directory: StrPath, frames: int = 8, stride: int = 4, episode: int = 0,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """What people look at to judge a world model, from a run's files: `frames` frames of one
    stored episode every `stride` steps ("real", uint8), V's reconstructions of them ("recon"),
    and M's dream from the episode's first latent under the episode's own actions, decoded by V
    ("dream", floats in [0, 1]; M draws at the run's dream temperature, from `seed`), with
    "steps", the step of each column."""
    from fastmbrl.algorithms.rundir import read_run_config
    from fastmbrl.data.frames import list_chunks, read_chunk, read_store
    from fastmbrl.errors import MissingFileError
    from fastmbrl.models.vae import ConvVAE

    directory = Path(directory)
    cfg = read_run_config(directory, WorldModelsConfig.ALGO)
    for f in (VAE_FILE, MDNRNN_FILE):
        if not (directory / f).exists():
            raise MissingFileError(f"{directory} has no {f} yet: V and M are drawn once their "
                                   "stages have run")
    root = directory / FRAMES_DIR
    header = read_store(root)
    chunk = next(((a, b, p) for a, b, p in list_chunks(root) if a <= episode <= b), None)
    if chunk is None:
        raise FastMBRLError(f"{root} holds no episode {episode}")
    ep = read_chunk(chunk[2], header["frame_shape"], header["act_dim"], chunk[0],
                    chunk[1])[episode - chunk[0]]
    steps = np.arange(frames) * stride
    steps = steps[steps <= len(ep.actions)]
    vae, m = ConvVAE.load(directory / VAE_FILE), MDNRNN.load(directory / MDNRNN_FILE)
    real = ep.frames[steps]
    mu, _ = vae.encode(real)
    rng = np.random.default_rng(seed)
    temperature = cfg.get("dream_temperature")
    temperature = 1.0 if temperature is None else float(temperature)
    z, (h, c) = mu[:1], m.initial_state(1)
    dreamed = [z[0]]
    for t in range(1, int(steps[-1]) + 1):
        z, _, _, h, c = m.sample(z, ep.actions[t - 1][None], h, c, temperature, rng)
        if t in steps:
            dreamed.append(z[0])
    return {"real": real, "recon": vae.decode(mu), "dream": vae.decode(np.array(dreamed)),
            "steps": steps}


class WorldModelsAgent:
    """A trained World Models run's V, M and C acting on its pixel task: what `fastmbrl eval
    DIR` runs. `act(frame)`, `reset()` (at an episode's start), `task`."""

    def __init__(self, agent: WorldModelAgent, task: PixelTask) -> None:
        self.agent, self.task = agent, task
        self.settings = {"algo": "worldmodels", "planner": "controller"}

    @classmethod
    def load(cls, directory: StrPath) -> WorldModelsAgent:
        from fastmbrl.algorithms.rundir import read_run_config
        from fastmbrl.errors import MissingFileError
        from fastmbrl.models.vae import ConvVAE

        directory = Path(directory)
        cfg = read_run_config(directory, WorldModelsConfig.ALGO)
        missing = [f for f in (VAE_FILE, MDNRNN_FILE, CONTROLLER_FILE)
                   if not (directory / f).exists()]
        if missing:
            raise MissingFileError(f"{directory} has no {', '.join(missing)} yet (its "
                                   "controller stage has not started)")
        task = dataclasses.replace(get_pixel_task(cfg["task"]),
                                   frame_size=int(cfg.get("frame_size") or 64))
        agent = WorldModelAgent(ConvVAE.load(directory / VAE_FILE),
                                MDNRNN.load(directory / MDNRNN_FILE),
                                WorldModelController.load(directory / CONTROLLER_FILE))
        return cls(agent, task)

    def reset(self) -> None:
        self.agent.reset()

    def act(self, frame: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """The action for one frame (WorldModelAgent.act: into `out` if given)."""
        return self.agent.act(frame, out)


__all__ = ["WorldModelsConfig", "WorldModelsRun", "WorldModelsAgent", "evaluate_population",
           "population_returns", "read_latents", "world_model_strip"]
