"""The `pets_plan` row of `fastmbrl bench plan`: a PETS-sized plan (Chua et al. 2018).

A probabilistic ensemble of 5 random 4 x 200 swish members, 20 particles per candidate (TS∞),
CEM with a population of 400, 40 elites and 5 iterations over H = 30, on a HalfCheetah-sized
model (17 observations, 6 actions): 1.2 M model steps per plan. The NumPy reference does the
same work in float32: per step, each member's batched matmul chain over its particles, the
bounded log-variance and the sampled next state.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.planning.planners import CEM

from .common import machine

F32 = np.float32


@dataclasses.dataclass(frozen=True)
class PetsConfig:
    name: str = "pets_plan"
    planner: str = "cem"
    obs_dim: int = 17
    act_dim: int = 6
    hidden: tuple = (200, 200, 200, 200)
    horizon: int = 30
    samples: int = 400  # CEM population
    iterations: int = 5
    members: int = 5
    particles: int = 20

    def make_planner(self, model: DynamicsModel, reward) -> CEM:
        """The row's CEM (population 400, 40 elites, 5 iterations) on `model`."""
        return CEM(model, reward, horizon=self.horizon, num_samples=self.samples,
                   elites=self.samples // 10, iterations=self.iterations,
                   action_low=-np.ones(self.act_dim, F32), action_high=np.ones(self.act_dim, F32))

    def measure(self, repeats: int, reference_repeats: int, rewards, median_ms) -> dict:
        """The row of `fastmbrl bench plan`, which hands in its (numba, NumPy) cheetah reward
        pair and its timer `median_ms(fn, obs, repeats) -> (median, min)`."""
        cheetah_reward, reward_np = rewards
        model = random_model(self)
        planner = self.make_planner(model, cheetah_reward)
        obs = np.random.default_rng(1).standard_normal((1, self.obs_dim)).astype(F32)
        ms, best_ms = median_ms(planner.plan, obs, repeats)
        ref_ms, _ = median_ms(NumpyPets(self, model, reward_np).plan, obs, reference_repeats)
        steps = self.samples * self.horizon * self.iterations * self.particles
        flops = planner.packed.flops_per_step() * steps
        return {"config": self.name, "planner": self.planner, "ms_per_plan": round(ms, 3),
                "min_ms_per_plan": round(best_ms, 3),
                "model_steps_per_s": round(steps / ms * 1e3),
                "gflops": round(flops / ms / 1e6, 1), "reference_ms_per_plan": round(ref_ms, 3),
                "speedup": round(ref_ms / ms, 2), **machine()}


CONFIG = PetsConfig()


def random_model(cfg: PetsConfig, seed: int = 0) -> DynamicsModel:
    """A probabilistic ensemble with random weights and statistics of HalfCheetah's scale."""
    model = DynamicsModel(cfg.obs_dim, cfg.act_dim, cfg.hidden, "swish", seed=seed,
                          ensemble_size=cfg.members, probabilistic=True,
                          particles=cfg.particles, propagation="tsinf")
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    state["input_scale"] = rng.uniform(0.5, 2.0, state["input_scale"].shape).astype(F32)
    state["delta_std"] = rng.uniform(0.05, 0.2, cfg.obs_dim).astype(F32)
    model.load_state(state)
    return model


class NumpyPets:
    """The same plan in vectorised NumPy: particle p of a candidate belongs to member
    p // (P / B) for the whole horizon (TS∞)."""

    def __init__(self, cfg: PetsConfig, model: DynamicsModel, reward, seed: int = 0):
        self.cfg, self.model, self.reward = cfg, model, reward
        self.rng = np.random.default_rng(seed)
        self.o = cfg.obs_dim

    def _step(self, m, state, act):
        model, o = self.model, self.o
        h = (np.concatenate([state, act], axis=1) - model.input_mean) * model.input_scale
        net = model.nets[m]
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = h @ w + b
            if i < len(net.weights) - 1:
                h = h / (1 + np.exp(-h))
        hi, lo = model.heads[m].bounds
        lv = lo + np.logaddexp(0, hi - np.logaddexp(0, hi - h[:, o:]) - lo)
        eps = self.rng.standard_normal((state.shape[0], o), dtype=F32)
        return state + model.delta_mean + model.delta_std * (h[:, :o] + np.exp(lv / 2) * eps)

    def returns(self, obs, actions):
        cfg = self.cfg
        k, per = actions.shape[0], cfg.particles // cfg.members
        total = np.zeros(k, F32)
        for m in range(cfg.members):
            state = np.repeat(obs[None], k * per, axis=0)
            for t in range(cfg.horizon):
                a = np.repeat(actions[:, t], per, axis=0)
                nxt = self._step(m, state, a)
                total += self.reward(state, a, nxt).reshape(k, per).sum(axis=1)
                state = nxt
        return total / F32(cfg.particles)

    def plan(self, obs):
        cfg = self.cfg
        shape = (cfg.samples, cfg.horizon, cfg.act_dim)
        mean = np.zeros(shape[1:], F32)
        std = np.full(shape[1:], 0.5, F32)
        n_elite = cfg.samples // 10
        for _ in range(cfg.iterations):
            cand = np.clip(mean + std * self.rng.standard_normal(shape, dtype=F32), -1, 1)
            elites = cand[np.argsort(self.returns(obs, cand))[-n_elite:]]
            mean = 0.1 * mean + 0.9 * elites.mean(axis=0)
            std = np.sqrt(0.1 * std ** 2 + 0.9 * elites.var(axis=0))
        return mean
