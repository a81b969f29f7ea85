"""TRPO (Schulman et al. 2015) on the hand-written MLP, with no autograd.

Each iteration:
    collect `steps_per_iteration` transitions with the Gaussian policy a ~ N(μ(s), diag σ²)
    advantages by GAE(γ, λ) against an MLP value baseline
    g = ∇ surrogate;  s = CG(F + damping·I, g) using Fisher-vector products
    full step √(2δ / sᵀ(F + damping·I)s)·s, halved until the surrogate improves with mean KL ≤ δ
        (else the old parameters are kept)
    fit the value baseline to the GAE returns

Fisher-vector products are exact and matrix-free: for a Gaussian with state-independent log σ,
F = E_s[J_μᵀ diag(1/σ²) J_μ] ⊕ 2·I (the log σ block), so F·v is one forward-mode pass through
the policy MLP (J_μ v, `MLP.jvp`) and one reverse-mode pass (J_μᵀ u, `MLP.backward`).

The policy works in float64: the line search compares KL values near 1e-2 and surrogate
differences near 1e-4, and the networks are small enough that precision costs nothing.

A run directory holds config.json (with "algo": "trpo"), metrics.jsonl, policy.npz (policy and
observation statistics), trpo_state.npz (value baseline, its optimizer, reward statistics) and
state.json; an interrupted run resumes from its last finished iteration. An episode that an
iteration leaves unfinished continues in the next; trpo_state.npz keeps its reset seed and
actions, and a resume replays them to reach the same environment state.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time

from pathlib import Path
from typing import Any

import numpy as np

from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl._validate import as_array, check_positive_int
from fastmbrl._validate import StrPath
from fastmbrl.algorithms.base import Log, Run
from fastmbrl.algorithms.config import (Config, boolean, finite, non_negative, one_of,
                                        optional, positive, positive_int, setting, unit_interval,
                                        widths)
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels import trpo as _k
from fastmbrl.models.mlp import ACTIVATION_NAMES
from fastmbrl.models.policies import (GaussianPolicy, PolicyController, RunningNorm,  # noqa: F401
                                      ValueBaseline, gaussian_kl, gaussian_log_prob)

STATE_KIND, STATE_VERSION = "trpo_state", 1


# -- the natural-gradient step --------------------------------------------------------------------
def conjugate_gradient(matvec, b, iters: int = 10, tol: float = 1e-10) -> np.ndarray:
    """Approximately solve A x = b for symmetric positive definite A given only x ↦ A x.

    Stops after `iters` iterations or when the squared residual norm falls below `tol`.
    """
    b = as_array(b, "b", (None,), np.float64)
    iters = check_positive_int(iters, "iters")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x += alpha * p
        r -= alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


class PolicyBatch:
    """One batch of (normalised observations, actions, advantages) and the old policy on it:
    surrogate, its gradient, Fisher-vector products and KL, all as functions of θ.

    Fisher-vector products may average over every `fisher_stride`-th state only (cheaper, but
    the curvature must stay well estimated on the subsample, or steps overshoot the KL bound).
    """

    def __init__(self, policy: GaussianPolicy, obs_n, actions, advantages, fisher_stride=1):
        self.policy = policy
        n = policy.act_dim
        self.obs = as_array(obs_n, "obs", (None, policy.obs_dim), np.float64)
        size = self.obs.shape[0]
        self.actions = as_array(actions, "actions", (size, n), np.float64)
        self.adv = as_array(advantages, "advantages", (size,), np.float64)
        if size == 0:
            raise ValueError("obs: expected at least one state")
        self.fisher_obs = np.ascontiguousarray(
            self.obs[::check_positive_int(fisher_stride, "fisher_stride")])
        self.theta_old = policy.get_flat()
        self.log_std_old = policy.log_std.copy()
        self.mu_old = policy.net.forward(self.obs).copy()
        self._net_at_fisher = False  # whether the MLP holds θ_old's activations on fisher_obs
        self.logp_old = gaussian_log_prob(self.actions, self.mu_old, self.log_std_old)
        self.inv_var = np.exp(-2 * self.log_std_old)

    def surrogate_and_kl(self, theta) -> tuple[float, float]:
        """(mean of π_θ/π_old · A, mean KL(π_old ‖ π_θ)) with θ set temporarily."""
        p = self.policy
        saved = p.get_flat()
        self._net_at_fisher = False
        try:
            p.set_flat(theta)
            mu = p.net.forward(self.obs)
            ratio = np.exp(gaussian_log_prob(self.actions, mu, p.log_std) - self.logp_old)
            return (float(np.mean(ratio * self.adv)),
                    gaussian_kl(self.mu_old, self.log_std_old, mu, p.log_std))
        finally:
            p.set_flat(saved)

    def _forward_fisher_states(self) -> None:
        if not self._net_at_fisher:
            self.policy.net.forward(self.fisher_obs)
            self._net_at_fisher = True

    def surrogate_gradient(self) -> np.ndarray:
        """∇θ of the surrogate at θ_old: E[A ∇ log π]."""
        net, n = self.policy.net, self.obs.shape[0]
        diff = self.actions - self.mu_old
        net.forward(self.obs)
        self._net_at_fisher = False
        net.backward((self.adv / n)[:, None] * diff * self.inv_var, input_grad=False)
        g_log_std = np.mean(self.adv[:, None] * (diff * diff * self.inv_var - 1.0), axis=0)
        return np.concatenate([net.flat_grads, g_log_std])

    def fisher_vector_product(self, v, damping: float = 0.0) -> np.ndarray:
        """(F + damping·I) v with F the Fisher matrix of the old policy averaged over states."""
        net, n = self.policy.net, self.fisher_obs.shape[0]
        k = net.flat_params.size
        v = as_array(v, "v", (self.policy.num_params,), np.float64)
        self._forward_fisher_states()
        jv = net.jvp(v[:k])
        net.backward(jv * (self.inv_var / n), input_grad=False)
        out = np.concatenate([net.flat_grads, 2.0 * v[k:]])
        if damping:
            out += damping * v
        return out

    def natural_step(self, max_kl: float, damping: float, cg_iters: int):
        """(full step √(2δ/sᵀ(F+λI)s)·s, gradient g) with s = CG(F + λI, g)."""
        g = self.surrogate_gradient()
        fvp = lambda v: self.fisher_vector_product(v, damping)  # noqa: E731
        s = conjugate_gradient(fvp, g, cg_iters)
        shs = float(s @ fvp(s))
        if not (shs > 0 and np.isfinite(shs)):
            return np.zeros_like(g), g
        return math.sqrt(2 * max_kl / shs) * s, g


def line_search(surrogate_and_kl, theta_old, full_step, max_kl, backtracks=10, shrink=0.5):
    """Try θ_old + shrink^k · full_step for k = 0, 1, ...; accept the first step whose surrogate
    improves with mean KL ≤ max_kl. Returns (θ, fraction, improvement, kl); fraction 0 means no
    step was accepted and θ is θ_old."""
    backtracks = check_positive_int(backtracks, "backtracks")
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
    surr_old, _ = surrogate_and_kl(theta_old)
    frac = 1.0
    for _ in range(backtracks):
        theta = theta_old + frac * full_step
        surr, kl = surrogate_and_kl(theta)
        if np.isfinite(surr) and np.isfinite(kl) and kl <= max_kl and surr > surr_old:
            return theta, frac, surr - surr_old, kl
        frac *= shrink
    return theta_old, 0.0, 0.0, 0.0


def trpo_update(policy: GaussianPolicy, obs_n, actions, advantages, max_kl=0.01, damping=0.1,
                cg_iters=10, backtracks=10, fisher_stride=1) -> dict:
    """One TRPO policy update on normalised observations; returns its statistics."""
    if not max_kl > 0:
        raise ValueError(f"max_kl must be positive, got {max_kl!r}")
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    batch = PolicyBatch(policy, obs_n, actions, advantages, fisher_stride)
    step, _ = batch.natural_step(max_kl, damping, cg_iters)
    theta, frac, improvement, kl = line_search(batch.surrogate_and_kl, batch.theta_old, step,
                                               max_kl, backtracks)
    policy.set_flat(theta)
    return {"kl": kl, "surrogate_improvement": improvement, "step_fraction": frac}


def gae(rewards, values, next_values, terminated, episode_end, gamma=0.99, lam=0.95) -> np.ndarray:
    """Generalised advantage estimates (Schulman et al. 2016) of one batch of transitions.

    `next_values` are V(s_{t+1}) (ignored where `terminated`); `episode_end` marks the last step
    of an episode or of the batch (terminated, truncated or cut), where the recursion restarts.
    """
    r = as_array(rewards, "rewards", (None,), np.float64)
    n = r.shape[0]
    v = as_array(values, "values", (n,), np.float64)
    nv = as_array(next_values, "next_values", (n,), np.float64)
    term = as_array(terminated, "terminated", (n,), np.bool_)
    end = as_array(episode_end, "episode_end", (n,), np.bool_)
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0 <= x <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {x!r}")
    out = np.empty(n)
    _k.gae(r, v, nv, term, end, float(gamma), float(lam), out)
    return out


# -- configuration --------------------------------------------------------------------------------
# Defaults follow rl-baselines3-zoo's TRPO for MuJoCo (2 × 1024 steps per update, 64-64 tanh
# networks, γ 0.99, λ 0.95, δ 0.01, damping 0.1, normalised observations and rewards), with 10
# CG iterations. Fisher products use every state: on HalfCheetah a 1-in-4 subsample let CG find
# directions flat on the subsample but steep on the batch (full-step KL 67δ, steps of δ/64).
@dataclasses.dataclass
class TRPOConfig(Config):
    """Settings of one TRPO run; None fields take the task's preset, else the default."""

    ALGO = "trpo"

    steps: int | None = setting(1_000_000, "total environment steps", positive_int, "int")
    steps_per_iteration: int | None = setting(
        2048, "transitions collected per policy update", positive_int, "int")
    episode_length: int | None = setting(
        None, "episode cap (default: the environment's own time limit)", optional(positive_int),
        "int")
    gamma: float | None = setting(0.99, "discount", unit_interval, "float")
    lam: float | None = setting(0.95, "GAE lambda", unit_interval, "float")
    max_kl: float | None = setting(
        0.01, "trust region: the largest mean KL(old || new) a step may reach", positive,
        "float")
    damping: float | None = setting(
        0.1, "added to the Fisher matrix's diagonal before conjugate gradient", non_negative,
        "float")
    cg_iters: int | None = setting(10, "conjugate gradient iterations", positive_int, "int")
    fisher_stride: int | None = setting(
        1, "Fisher-vector products use every n-th state of the batch", positive_int, "int")
    backtracks: int | None = setting(
        10, "step halvings the line search tries before keeping the old policy", positive_int,
        "int")
    hidden: tuple | None = setting((64, 64), "policy hidden widths, e.g. 64,64", widths, "widths")
    activation: str | None = setting(
        "tanh", "hidden activation of the policy and value networks", one_of(*ACTIVATION_NAMES),
        "str")
    init_log_std: float | None = setting(0.0, "initial log std of the policy", finite, "float")
    value_hidden: tuple | None = setting((64, 64), "value-baseline hidden widths", widths,
                                         "widths")
    value_lr: float | None = setting(1e-3, "value-baseline learning rate", positive, "float")
    value_epochs: int | None = setting(10, "value-baseline passes per batch", positive_int,
                                       "int")
    value_batch_size: int | None = setting(128, "value-baseline minibatch size", positive_int,
                                           "int")
    normalize_rewards: bool | None = setting(
        True, "scale rewards by a running std of the discounted return (the learning signal "
        "only)", boolean, "bool")


# -- the run --------------------------------------------------------------------------------------
class TRPORun(Run):
    """One TRPO training run bound to a run directory (or to none, for library use).

    A run directory holds config.json, metrics.jsonl, policy.npz (policy and observation
    statistics), trpo_state.npz (value baseline, its optimizer, reward statistics) and
    state.json. `initial_policy` (a GaussianPolicy of the configured sizes, trained in place)
    replaces the freshly initialised policy, e.g. one imitating a model-based controller
    (MB-MF); its log σ and observation statistics are kept as they are.
    """

    Config = TRPOConfig
    config: TRPOConfig
    title = "TRPO"

    def __init__(self, config: TRPOConfig, out: StrPath | None = None, log: Log = print,
                 initial_policy: GaussianPolicy | None = None) -> None:
        super().__init__(config, out, log)
        cfg = self.config
        # a batch's arrays (states, actions, noise, rewards, values, advantages), before any
        # file is written
        check_bytes(f"steps_per_iteration={cfg.steps_per_iteration}: a TRPO batch",
                    array_bytes(min(cfg.steps_per_iteration, cfg.steps),
                                4 * self.task.obs_dim + 3 * self.task.act_dim + 8, itemsize=8),
                    "steps_per_iteration")
        init = np.random.default_rng([cfg.seed, 1])  # network weights: a stream of their own
        self.policy = GaussianPolicy(self.task.obs_dim, self.task.act_dim, cfg.hidden,
                                     cfg.activation, cfg.init_log_std, rng=init)
        self.value = ValueBaseline(self.task.obs_dim, cfg.value_hidden, cfg.activation,
                                   cfg.value_lr, rng=init)
        if initial_policy is not None:
            p = initial_policy
            if ((p.obs_dim, p.act_dim, p.net.hidden, p.net.activation)
                    != (self.task.obs_dim, self.task.act_dim, cfg.hidden, cfg.activation)):
                raise FastMBRLError(
                    f"initial_policy (obs {p.obs_dim}, act {p.act_dim}, hidden {p.net.hidden}, "
                    f"{p.net.activation}) does not match the configuration (obs "
                    f"{self.task.obs_dim}, act {self.task.act_dim}, hidden {cfg.hidden}, "
                    f"{cfg.activation})")
            self.policy = p
        self.ret_norm = RunningNorm(1, clip=np.inf)  # statistics of the discounted return
        self._obs = None  # an episode in progress carries over to the next iteration
        self._ep_return = self._ep_len = 0
        self._disc_return = 0.0
        # its reset seed and actions: a resume replays them to reach the same state (an
        # environment's state cannot be saved, but it is a function of these)
        self._ep_seed, self._ep_actions = None, []

    def _collect(self, n: int) -> dict:
        """n transitions with the current policy; the observation statistics stay fixed."""
        p, env, cap = self.policy, self.env, self.config.episode_length
        o, a = self.task.obs_dim, self.task.act_dim
        obs, next_obs = np.empty((n, o)), np.empty((n, o))
        actions, rewards = np.empty((n, a)), np.empty(n)
        terminated, end = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        noise = self.rng.standard_normal((n, a)) * np.exp(p.log_std)
        low, high = self.task.action_low, self.task.action_high
        x, mu = np.empty((1, o)), np.empty((1, a))  # one state at a time, no allocations
        returns, env_s, act_s = [], 0.0, 0.0
        for t in range(n):
            if self._obs is None:
                t0 = time.perf_counter()
                self._ep_seed, self._ep_actions = self.episode_seed(), []
                self._obs, _ = env.reset(seed=self._ep_seed)
                env_s += time.perf_counter() - t0
                self._ep_return, self._ep_len = 0.0, 0
            t0 = time.perf_counter()
            obs[t] = self._obs
            p.net.forward(p.obs_norm.normalize(obs[t:t + 1], out=x), out=mu)
            np.add(mu[0], noise[t], out=actions[t])
            action = np.clip(actions[t], low, high).astype(np.float32)
            t1 = time.perf_counter()
            self._obs, reward, term, trunc, _ = env.step(action)
            self._ep_actions.append(action)
            env_s += time.perf_counter() - t1
            act_s += t1 - t0
            self._ep_return += float(reward)
            self._ep_len += 1
            next_obs[t], rewards[t], terminated[t] = self._obs, reward, term
            if term or trunc or (cap is not None and self._ep_len >= cap):
                end[t] = True
                returns.append(self._ep_return)
                self._obs = None
        end[-1] = True
        self._steps += n
        return {"obs": obs, "next_obs": next_obs, "actions": actions, "rewards": rewards,
                "terminated": terminated, "end": end, "returns": returns,
                "env_s": env_s, "act_s": act_s}

    def _scaled_rewards(self, rewards, end) -> np.ndarray:
        """Rewards divided by the running std of the discounted return (VecNormalize's rule)."""
        if not self.config.normalize_rewards:
            return rewards
        disc = np.empty_like(rewards)
        acc, gamma = self._disc_return, self.config.gamma
        for t in range(rewards.shape[0]):
            acc = acc * gamma + rewards[t]
            disc[t] = acc
            if end[t] and t < rewards.shape[0] - 1:
                acc = 0.0
        self._disc_return = 0.0 if self._obs is None else acc
        self.ret_norm.update(disc[:, None])
        return np.clip(rewards / math.sqrt(self.ret_norm.var[0] + 1e-8), -10, 10)

    def iterate(self) -> dict:
        """Collect one batch, update policy and value baseline; returns the metrics row."""
        cfg = self.config
        t0 = time.perf_counter()
        n = min(cfg.steps_per_iteration, cfg.steps - self.env_steps)
        batch = self._collect(n)
        t1 = time.perf_counter()
        self.policy.obs_norm.update(batch["obs"])
        obs_n = self.policy.obs_norm.normalize(batch["obs"])
        next_n = self.policy.obs_norm.normalize(batch["next_obs"])
        rewards = self._scaled_rewards(batch["rewards"], batch["end"])
        values, next_values = self.value.predict(obs_n), self.value.predict(next_n)
        adv = gae(rewards, values, next_values, batch["terminated"], batch["end"], cfg.gamma,
                  cfg.lam)
        targets = adv + values
        adv_n = (adv - adv.mean()) / (adv.std() + 1e-8)
        stats = trpo_update(self.policy, obs_n, batch["actions"], adv_n, cfg.max_kl, cfg.damping,
                            cfg.cg_iters, cfg.backtracks, cfg.fisher_stride)
        t2 = time.perf_counter()
        value_loss = self.value.fit(obs_n, targets, cfg.value_epochs, cfg.value_batch_size,
                                    self.rng)
        t3 = time.perf_counter()
        self.iteration += 1
        returns = batch["returns"]
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "episode_returns": [round(r, 4) for r in returns],
            "mean_return": float(np.mean(returns)) if returns else None,
            "kl": stats["kl"],
            "surrogate_improvement": stats["surrogate_improvement"],
            "step_fraction": stats["step_fraction"],
            "entropy": self.policy.entropy(),
            "value_loss": value_loss,
            "env_s": round(batch["env_s"], 4),
            "act_s": round(batch["act_s"], 4),
            "policy_s": round(t2 - t1, 4),
            "value_s": round(t3 - t2, 4),
            "wall_s": round(t3 - t0, 3),
        }

    def describe(self, row: dict[str, Any]) -> str:
        return (f"{super().describe(row)}, kl {row['kl']:.4f}, step {row['step_fraction']:.3g}, "
                f"entropy {row['entropy']:.2f}, env {row['env_s']:.2f} s, act "
                f"{row['act_s']:.2f} s, update {row['policy_s'] + row['value_s']:.2f} s")

    # -- run directories ----------------------------------------------------------------------
    def save_files(self, out: Path) -> None:
        self.policy.save(out / "policy.npz", self.task.name, self.task.action_low,
                         self.task.action_high)
        episode, arrays = None, {**self.value.arrays(), **self.ret_norm.arrays("ret")}
        if self._obs is not None:  # an episode continues into the next iteration
            episode = {"seed": self._ep_seed, "return": self._ep_return,
                       "length": self._ep_len, "disc_return": self._disc_return}
            arrays["episode_actions"] = np.array(self._ep_actions, np.float32).reshape(
                self._ep_len, self.task.act_dim)
            arrays["episode_obs"] = np.asarray(self._obs)
        save_npz(out / "trpo_state.npz", STATE_KIND, STATE_VERSION,
                 {"iteration": self.iteration, "episode": episode}, arrays)

    @classmethod
    def check_saved(cls, out: Path, config: dict[str, Any]) -> None:
        if (out / "policy.npz").exists():
            saved = list(GaussianPolicy.load(out / "policy.npz")[0].net.hidden)
            if config.get("hidden") != saved:
                raise FormatError(f"{out}/config.json: hidden {config.get('hidden')!r} "
                                  f"disagrees with policy.npz's {saved!r}")
        if (out / "trpo_state.npz").exists():
            _, arrays = load_npz(out / "trpo_state.npz", STATE_KIND, (STATE_VERSION,))
            layers = sorted((k for k in arrays if re.fullmatch(r"value_W\d+", k)),
                            key=lambda k: int(k[7:]))
            widths = [int(arrays[k].shape[-1]) for k in layers]
            if config.get("value_hidden") != widths[:-1]:
                raise FormatError(f"{out}/config.json: value_hidden "
                                  f"{config.get('value_hidden')!r} disagrees with "
                                  f"trpo_state.npz's {widths[:-1]!r}")

    def load_files(self, out: Path, state: dict[str, Any]) -> None:
        policy, header, _ = GaussianPolicy.load(out / "policy.npz")
        if header["task"] != self.task.name or policy.net.hidden != self.config.hidden:
            raise FormatError(f"{out}/policy.npz does not match the run's configuration")
        self.policy = policy
        sheader, arrays = load_npz(out / "trpo_state.npz", STATE_KIND, (STATE_VERSION,))
        if sheader.get("iteration") != state["iteration"]:
            raise FormatError(f"{out}: trpo_state.npz and state.json are from different iterations")
        expected = set(self.value.arrays()) | set(self.ret_norm.arrays("ret"))
        episode = sheader.get("episode")
        if episode is not None:
            expected |= {"episode_actions", "episode_obs"}
        if set(arrays) != expected:
            odd = sorted(set(arrays) ^ set(expected))
            raise FormatError(f"{out}/trpo_state.npz does not hold exactly a TRPO state's arrays "
                              f"(differs in {', '.join(odd)})")
        try:
            self.value.load_arrays(arrays)
            self.ret_norm.load_arrays(arrays, "ret")
        except (KeyError, ValueError) as exc:
            raise FormatError(f"{out}/trpo_state.npz is not a valid TRPO state: {exc}") from exc
        if episode is not None:
            self._replay_episode(out, episode, arrays)

    def _replay_episode(self, out, episode, arrays) -> None:
        """Step a fresh environment through the saved episode's actions to the state it was
        in when the iteration ended; if the environment does not reproduce it (not
        deterministic), the run goes on with a fresh episode instead, and says so."""
        where = f"{out}/trpo_state.npz"
        try:
            seed, ret = int(episode["seed"]), float(episode["return"])
            length, disc = int(episode["length"]), float(episode["disc_return"])
            actions = as_array(arrays["episode_actions"], "episode_actions",
                               (length, self.task.act_dim))
            saved_obs = as_array(arrays["episode_obs"], "episode_obs", (self.task.obs_dim,),
                                 np.float64, finite=False)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: the episode in progress is not valid ({exc})") from None
        env = self.env
        obs, _ = env.reset(seed=seed)
        for a in actions:
            obs = env.step(a)[0]
        if not np.array_equal(np.asarray(obs, np.float64), saved_obs):
            self.log(f"note: {self.task.name} did not reproduce the episode in progress from its "
                     "seed and actions (a non-deterministic environment?): resuming on a fresh "
                     "episode, so this run differs from an uninterrupted one")
            return
        self._obs, self._ep_seed, self._ep_actions = obs, seed, list(actions)
        self._ep_return, self._ep_len, self._disc_return = ret, length, disc


def train(task: str, out: StrPath | None = None, log: Log = print, **settings: Any) -> TRPORun:
    """Train a TRPO policy on `task`; `settings` are TRPOConfig fields. Returns the finished run."""
    return TRPORun.run(task, out, log, **settings)
