"""Policies: the Gaussian policy of TRPO (an MLP mean, a state-independent log σ and running
observation statistics), its value baseline, and a saved policy acting as a controller.

The networks work in float64: TRPO's line search compares KL values near 1e-2 and surrogate
differences near 1e-4, and the networks are small enough that precision costs nothing.
"""
from __future__ import annotations

import math
from pathlib import Path

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, as_array, check_positive_int
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.models.mlp import MLP, Adam, RngLike, train_mse_epoch
from fastmbrl.tasks import Task, get_task

POLICY_KIND, POLICY_VERSION = "trpo_policy", 1
_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


# -- running statistics ---------------------------------------------------------------------------
class RunningNorm:
    """Running mean and variance of vectors (batched parallel update of Chan et al.)."""

    def __init__(self, dim: int, clip: float = 10.0) -> None:
        self.dim = check_positive_int(dim, "dim")
        self.clip = float(clip)
        self.mean = np.zeros(self.dim)
        self.var = np.ones(self.dim)
        self.count = 1e-4  # a tiny prior weight keeps the first update well defined

    def update(self, x: npt.ArrayLike) -> None:
        x = as_array(x, "x", (None, self.dim), np.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean, var = x.mean(axis=0), x.var(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.var = (self.var * self.count + var * n + delta**2 * (self.count * n / total)) / total
        self.count = total

    def normalize(self, x: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """(x - mean) / std clipped to ±clip, float64, into `out` when given."""
        z = np.subtract(x, self.mean, out=out, dtype=np.float64)
        z /= np.sqrt(self.var + 1e-8)
        np.minimum(z, self.clip, out=z)  # np.clip's wrapper costs more than the work per state
        return np.maximum(z, -self.clip, out=z)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_mean": self.mean, f"{prefix}_var": self.var,
                f"{prefix}_count": np.array(self.count)}

    def load_arrays(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        mean, var = arrays[f"{prefix}_mean"], arrays[f"{prefix}_var"]
        count = arrays[f"{prefix}_count"]
        if mean.shape != (self.dim,) or var.shape != (self.dim,) or count.shape != ():
            raise FormatError(f"{prefix} statistics: expected length {self.dim}, got {mean.shape}")
        if any(a.dtype.kind != "f" for a in (mean, var, count)):
            raise FormatError(f"{prefix} statistics are not floats")
        count = float(count)
        if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()
                and count > 0):
            raise FormatError(f"{prefix} statistics are not finite and non-negative")
        self.mean, self.var, self.count = mean.astype(np.float64), var.astype(np.float64), count


# -- policy ---------------------------------------------------------------------------------------
class GaussianPolicy:
    """a ~ N(μ(normalize(s)), diag σ²): an MLP mean, a state-independent log σ vector, and the
    running observation statistics that define `normalize` (saved with the policy).

    The flat parameter vector θ is [MLP parameters, log σ].
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", init_log_std: float = 0.0, rng: RngLike = None
                 ) -> None:
        self.net = MLP(obs_dim, act_dim, hidden, activation, dtype=np.float64, rng=rng)
        self.net.weights[-1] *= 0.01  # start with near-zero means so σ alone drives exploration
        self.obs_dim, self.act_dim = self.net.in_dim, self.net.out_dim
        if not math.isfinite(init_log_std):
            raise ValueError(f"init_log_std must be finite, got {init_log_std!r}")
        self.log_std = np.full(self.act_dim, float(init_log_std))
        self.obs_norm = RunningNorm(self.obs_dim)

    @property
    def num_params(self) -> int:
        return self.net.flat_params.size + self.act_dim

    def get_flat(self) -> np.ndarray:
        return np.concatenate([self.net.flat_params, self.log_std])

    def set_flat(self, theta: npt.ArrayLike) -> None:
        theta = as_array(theta, "theta", (self.num_params,), np.float64)
        n = self.net.flat_params.size
        self.net.flat_params[...] = theta[:n]
        self.log_std[...] = theta[n:]

    def mean(self, obs: npt.ArrayLike) -> np.ndarray:
        """μ for raw observations (N, obs_dim)."""
        obs = as_array(obs, "obs", (None, self.obs_dim), np.float64)
        return self.net.forward(self.obs_norm.normalize(obs))

    def entropy(self) -> float:
        return float(np.sum(self.log_std) + 0.5 * self.act_dim * _LOG_2PI_E)

    def save(self, path: StrPath, task_name: str, action_low: npt.ArrayLike,
             action_high: npt.ArrayLike) -> Path:
        header = {"task": task_name, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                  "hidden": list(self.net.hidden), "activation": self.net.activation}
        arrays = {**self.net.state_dict(), "log_std": self.log_std,
                  "action_low": np.asarray(action_low, np.float32),
                  "action_high": np.asarray(action_high, np.float32),
                  **self.obs_norm.arrays("obs")}
        return save_npz(path, POLICY_KIND, POLICY_VERSION, header, arrays)

    @classmethod
    def load(cls, path: StrPath) -> tuple[GaussianPolicy, dict[str, Any], dict[str, np.ndarray]]:
        """(policy, header, arrays) from a file written by `save`."""
        header, arrays = load_npz(path, POLICY_KIND, (POLICY_VERSION,))
        try:
            if not isinstance(header.get("task"), str):
                raise ValueError(f"task: expected a task name, got {header.get('task')!r}")
            obs_dim, act_dim = header["obs_dim"], header["act_dim"]
            sizes = (obs_dim, *header["hidden"], act_dim)
            expected = {"log_std": (act_dim,), "action_low": (act_dim,),
                        "action_high": (act_dim,), "obs_mean": (obs_dim,),
                        "obs_var": (obs_dim,), "obs_count": ()}
            for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                expected.update({f"W{i}": (fan_in, fan_out), f"b{i}": (fan_out,)})
            if set(arrays) != set(expected):
                raise ValueError(f"expected arrays {sorted(expected)}, got {sorted(arrays)}")
            for key, shape in expected.items():
                # the header's sizes must be the arrays' before any is allocated from them
                a = arrays[key]
                if a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all():
                    raise ValueError(f"{key}: expected finite floats of shape {shape} (from the "
                                     f"header), got {a.dtype} {a.shape}")
            if not (arrays["action_low"] <= arrays["action_high"]).all():
                raise ValueError("action_low is above action_high")
            policy = cls(obs_dim, act_dim, tuple(header["hidden"]), header["activation"])
            policy.net.load_state_dict({k: arrays[k] for k in expected if k[0] in "Wb"})
            policy.log_std[...] = arrays["log_std"]
            policy.obs_norm.load_arrays(arrays, "obs")
        except (KeyError, ValueError, TypeError) as exc:
            raise FormatError(f"{path} is not a valid TRPO policy: {exc}") from exc
        return policy, header, arrays


def gaussian_kl(mu_old: np.ndarray, log_std_old: np.ndarray, mu_new: np.ndarray,
                log_std_new: np.ndarray) -> float:
    """Mean over states of KL(N(μ_old, σ_old²) ‖ N(μ_new, σ_new²)), diagonal Gaussians."""
    var_old, var_new = np.exp(2 * log_std_old), np.exp(2 * log_std_new)
    per_dim = (log_std_new - log_std_old
               + (var_old + (mu_old - mu_new) ** 2) / (2 * var_new) - 0.5)
    return float(per_dim.sum(axis=1).mean())


def gaussian_log_prob(actions: np.ndarray, mu: np.ndarray, log_std: np.ndarray) -> np.ndarray:
    z = (actions - mu) * np.exp(-log_std)
    return -0.5 * np.sum(z * z, axis=1) - np.sum(log_std) - 0.5 * mu.shape[1] * math.log(2 * math.pi)



# -- value baseline -------------------------------------------------------------------------------
class ValueBaseline:
    """V(s) as an MLP on normalised observations, fitted by Adam on mean squared error."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 lr: float = 1e-3, rng: RngLike = None) -> None:
        self.net = MLP(obs_dim, 1, hidden, activation, dtype=np.float64, rng=rng)
        self.opt = Adam(self.net.params, lr=lr)  # one fused state over the flat parameters

    def predict(self, obs_n: np.ndarray) -> np.ndarray:
        return self.net.forward(obs_n)[:, 0].copy()

    def fit(self, obs_n: np.ndarray, targets: np.ndarray, epochs: int, batch_size: int,
            rng: np.random.Generator) -> float:
        """Minibatch Adam over `epochs` passes; returns the mean loss of the last pass."""
        targets = np.ascontiguousarray(targets[:, None])
        loss = float("nan")
        for _ in range(epochs):
            loss = train_mse_epoch(self.net, self.opt, obs_n, targets, batch_size, rng)
        return loss

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"value_{k}": v for k, v in self.net.state_dict().items()},
                "value_adam_m": self.opt.m[0], "value_adam_v": self.opt.v[0],
                "value_adam_t": np.array(self.opt.t)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.net.load_state_dict({k[6:]: v for k, v in arrays.items()
                                  if k.startswith("value_") and not k.startswith("value_adam")})
        moments = ((self.opt.m[0], "value_adam_m"), (self.opt.v[0], "value_adam_v"))
        for mine, key in moments:
            a = arrays[key]
            if a.shape != mine.shape or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise FormatError(f"{key}: expected finite floats of shape {mine.shape}, got "
                                  f"{a.dtype} {a.shape}")
        t = arrays["value_adam_t"]
        if (t.shape != () or t.dtype.kind not in "iu" or t < 0
                or (arrays["value_adam_v"] < 0).any()):
            raise FormatError("value_adam_t and value_adam_v: not an Adam state")
        for mine, key in moments:  # only after every check, so a bad file changes nothing
            mine[...] = arrays[key]
        self.opt.t = int(t)


# -- acting with a trained policy -----------------------------------------------------------------
class PolicyController:
    """A saved TRPO policy acting deterministically (its mean action, clipped to the bounds)."""

    def __init__(self, policy: GaussianPolicy, task_name: str, action_low: npt.ArrayLike,
                 action_high: npt.ArrayLike) -> None:
        self.policy = policy
        self.task_name = task_name
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.settings = {"algo": "trpo", "planner": "policy"}

    @property
    def task(self) -> Task:
        return get_task(self.task_name)

    @classmethod
    def load(cls, path: StrPath) -> PolicyController:
        """From a run directory or its policy.npz."""
        path = Path(path)
        if path.is_dir():
            path = path / "policy.npz"
        policy, header, arrays = GaussianPolicy.load(path)
        return cls(policy, header["task"], arrays["action_low"], arrays["action_high"])

    def act(self, obs: npt.ArrayLike) -> np.ndarray:
        obs = as_array(obs, "obs", (self.policy.obs_dim,), np.float64)
        mu = self.policy.mean(obs[None])[0]
        return np.clip(mu, self.action_low, self.action_high).astype(np.float32)

    def reset(self, seed: int | None = None) -> None:
        """Nothing to reset: the policy is memoryless and deterministic (the Controller's
        interface)."""


