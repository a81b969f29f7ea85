"""The learned delta dynamics s' = s + f(s, a) of Nagabandi et al. (2018), on the hand-written MLP.

Inputs (obs, action) and targets (the delta s' - s) are normalised by statistics of the
training rows; the network predicts the normalised delta:
    next_obs = obs + delta_mean + delta_std * net((concat(obs, act) - input_mean) * input_scale)

Observation entries listed in `angle_obs_dims` enter the network as their sine (in place) and
cosine (appended after the observation), as PETS does for HalfCheetah's body angle: a turned-over
body is then near the states seen before rather than far outside them. The targets stay deltas
of the raw observation, except for entries in `absolute_obs_dims` (a learned reward and
termination, fastmbrl.tasks.learned), whose targets are their next values.

With `ensemble_size` B > 1 the model is a bootstrap ensemble (as the deterministic ensembles of
PETS): B networks sharing the statistics, each fitted on its own resample of the training rows.
The planners score every candidate under every member and average, so plans avoid what the
members disagree on; `predict` and `rollout` step with the members' mean prediction.

With `probabilistic=True` each member predicts a mean and a log-variance of the normalised
delta (a GaussianHead: 2 O outputs, learnable soft bounds on the log-variance) and trains on
the Gaussian negative log-likelihood: the probabilistic ensemble of PETS (Chua et al. 2018),
which planners roll out by trajectory sampling (`particles`, `propagation`). After `fit`, the
`num_elites` members of least validation loss are the elites (`elites`): prediction and
planning use only them, for either kind of ensemble.
"""
from __future__ import annotations

import re
import time

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, as_array, check_positive_int
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels.isa import Spec, get_spec
from fastmbrl.kernels.rollout import PROPAGATIONS, PackedModel, pack_model
from fastmbrl.limits import ResourceLimitError, array_bytes, check_bytes
from fastmbrl.models.mlp import (ACTIVATION_NAMES, MLP, Adam, GaussianHead, check_hidden,
                                 mlp_bytes, train_mse_epochs)

_KIND = "dynamics_model"
# 2: ensembles (member weights "m{i}_W0", ...); 3: absolute_obs_dims (outputs that are values,
# not deltas), written only by models that have them, so that an older fastmbrl refuses such a
# file instead of reading those outputs as deltas. Versions 1 and 2 still load.
_VERSION = 2
_VERSION_ABSOLUTE = 3
# 4: probabilistic members ("m{i}_logvar_bounds"), elites ("elites"); written only by models
# that have them
_VERSION_PETS = 4
DEFAULT_PARTICLES = 20  # PETS, mbrl-lib
DEFAULT_PROPAGATION = "tsinf"  # PETS's default
_STATS = ("input_mean", "input_scale", "delta_mean", "delta_std")
_MIN_STD = 1e-6  # below this a dimension is treated as constant (scale 1, not 1/std)
_EVAL_CHUNK = 8192  # rows per forward pass when evaluating, to bound memory
_MEMBER_KEY = re.compile(r"m(\d+)_W0")


class DynamicsModel:
    """A delta model of an environment: `predict`, `rollout`, `fit`, `save` / `load`.

    `version` increases whenever the weights or statistics change (fit, load_state, load);
    `packed()` lays them out for the rollout kernel and re-packs only then.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "relu", ignore_obs_dims: Iterable[int] = (), seed: int = 0,
                 dtype: npt.DTypeLike = np.float32, ensemble_size: int = 1,
                 angle_obs_dims: Iterable[int] = (), absolute_obs_dims: Iterable[int] = (),
                 probabilistic: bool = False, num_elites: int | None = None,
                 particles: int = DEFAULT_PARTICLES, propagation: str = DEFAULT_PROPAGATION,
                 risk: float = 0.0) -> None:
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.act_dim = check_positive_int(act_dim, "act_dim")
        dims = sorted({int(d) for d in ignore_obs_dims})
        if any(not 0 <= d < self.obs_dim for d in dims) or len(dims) != len(tuple(ignore_obs_dims)):
            raise ValueError(f"ignore_obs_dims: expected distinct indices in [0, {self.obs_dim}), "
                             f"got {tuple(ignore_obs_dims)!r}")
        self.ignore_obs_dims = tuple(dims)
        angles = sorted({int(d) for d in angle_obs_dims})
        if (any(not 0 <= d < self.obs_dim for d in angles)
                or len(angles) != len(tuple(angle_obs_dims)) or set(angles) & set(dims)):
            raise ValueError(f"angle_obs_dims: expected distinct indices in [0, {self.obs_dim}) "
                             f"not in ignore_obs_dims, got {tuple(angle_obs_dims)!r}")
        self.angle_obs_dims = tuple(angles)
        absolute = sorted({int(d) for d in absolute_obs_dims})
        if (any(not 0 <= d < self.obs_dim for d in absolute)
                or len(absolute) != len(tuple(absolute_obs_dims)) or set(absolute) & set(angles)):
            raise ValueError(f"absolute_obs_dims: expected distinct indices in [0, "
                             f"{self.obs_dim}) not in angle_obs_dims, got "
                             f"{tuple(absolute_obs_dims)!r}")
        self.absolute_obs_dims = tuple(absolute)
        # 1 where the network predicts a change, 0 where it predicts the value itself
        self._carry = np.ones(self.obs_dim, dtype)
        self._carry[list(absolute)] = 0
        n_in = self.obs_dim + len(angles)  # the network's observation inputs
        self.seed = int(seed)
        self.ensemble_size = check_positive_int(ensemble_size, "ensemble_size")
        if not isinstance(probabilistic, (bool, np.bool_)):
            raise ValueError(f"probabilistic: expected True or False, got {probabilistic!r}")
        self.probabilistic = bool(probabilistic)
        e = self.ensemble_size if num_elites is None else check_positive_int(num_elites,
                                                                              "num_elites")
        if e > self.ensemble_size:
            raise ValueError(f"num_elites: at most ensemble_size={self.ensemble_size}, got {e}")
        self.num_elites = e
        self.set_sampling(particles, propagation, risk)
        n_out = 2 * self.obs_dim if self.probabilistic else self.obs_dim
        hidden = check_hidden(hidden)
        check_bytes(f"DynamicsModel(obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
                    f"hidden={hidden}, ensemble_size={self.ensemble_size})",
                    {"weights and gradients (ensemble_size x hidden widths)":
                     self.ensemble_size * mlp_bytes(n_in + self.act_dim, hidden, n_out,
                                                    dtype)}, "hidden or ensemble_size")
        #: the members prediction and planning use (the best num_elites after fit)
        self.elites = np.arange(e, dtype=np.int64)  # after the memory check: e <= B
        self.nets = [MLP(n_in + self.act_dim, n_out, hidden, activation, dtype,
                         rng=np.random.default_rng(self.seed if m == 0 else [self.seed, 2, m]))
                     for m in range(self.ensemble_size)]
        self.net = self.nets[0]
        self.hidden, self.activation, self.dtype = self.net.hidden, self.net.activation, self.net.dtype
        #: per member, the log-variance head (probabilistic models; else empty)
        self.heads = ([GaussianHead(self.obs_dim, self.dtype) for _ in self.nets]
                      if self.probabilistic else [])
        in_dim = n_in + self.act_dim
        self.input_mean = np.zeros(in_dim, self.dtype)
        self.input_scale = np.ones(in_dim, self.dtype)
        self.input_scale[list(self.ignore_obs_dims)] = 0
        self.delta_mean = np.zeros(self.obs_dim, self.dtype)
        self.delta_std = np.ones(self.obs_dim, self.dtype)
        # minibatch order, bootstrap resamples, input noise: a resumed run restores its state
        self.rng = np.random.default_rng([self.seed, 1])
        self.version = 0
        self._packed: dict = {}  # spec -> PackedModel of some version

    def __repr__(self) -> str:
        kind = ", probabilistic=True" if self.probabilistic else ""
        elites = (f", num_elites={self.num_elites}" if self.num_elites < self.ensemble_size
                  else "")
        return (f"DynamicsModel(obs_dim={self.obs_dim}, act_dim={self.act_dim}, hidden={self.hidden}, "
                f"activation={self.activation!r}, ensemble_size={self.ensemble_size}{kind}"
                f"{elites}, version={self.version})")

    def set_sampling(self, particles: int | None = None, propagation: str | None = None,
                     risk: float | None = None) -> None:
        """How planners roll a probabilistic model out (ignored by a deterministic one):
        `particles` per candidate, `propagation` (one of PROPAGATIONS) and `risk` λ >= 0, a
        candidate scoring mean - λ std of its particles' returns. None keeps a setting. A
        planner built before follows a new `risk`; other changes need a new planner."""
        if particles is not None:
            self.particles = check_positive_int(particles, "particles")
        if propagation is not None:
            if propagation not in PROPAGATIONS:
                raise ValueError(f"propagation: expected one of {', '.join(PROPAGATIONS)}, "
                                 f"got {propagation!r}")
            self.propagation = propagation
        if risk is not None:
            if isinstance(risk, bool) or not (np.isfinite(risk) and risk >= 0):
                raise ValueError(f"risk: expected a non-negative number, got {risk!r}")
            self.risk = float(risk)
        if (particles, propagation, risk) != (None, None, None):
            self._packed = {}
            self.version = getattr(self, "version", -1) + 1  # planners re-pack

    # ----------------------------------------------------------------------------- prediction
    def _features(self, obs, act):
        """concat(obs with angles as sines, cosines of the angles, act)."""
        if not self.angle_obs_dims:
            return np.concatenate([obs, act], axis=1)
        a = list(self.angle_obs_dims)
        feats = np.array(obs, copy=True)
        feats[:, a] = np.sin(obs[:, a])
        return np.concatenate([feats, np.cos(obs[:, a]), act], axis=1)

    def _inputs(self, obs, act):
        x = self._features(obs, act).astype(self.dtype, copy=False)
        x -= self.input_mean
        x *= self.input_scale
        return x

    def _net_out(self, x, net=None):
        """Predicted normalised deltas of `net` (default: the elites' mean) for normalised
        inputs, in chunks so memory stays bounded (the mean outputs of a probabilistic net)."""
        if net is None:
            out = self._net_out(x, self.nets[self.elites[0]])
            for m in self.elites[1:]:
                out += self._net_out(x, self.nets[m])
            if self.elites.size > 1:
                out /= self.dtype.type(self.elites.size)
            return out
        return self._raw_out(x, net)[:, :self.obs_dim]

    def _raw_out(self, x, net):
        if x.shape[0] <= _EVAL_CHUNK:
            return net.forward(x)
        return np.concatenate([net.forward(x[i:i + _EVAL_CHUNK])
                               for i in range(0, x.shape[0], _EVAL_CHUNK)])

    def predict_distribution(self, obs: npt.ArrayLike, act: npt.ArrayLike
                             ) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the next observation (batches (N, obs_dim), (N, act_dim)) under the
        elites' equal mixture: the std holds the members' predicted noise (a probabilistic
        model; none for a deterministic one) and their disagreement."""
        obs = as_array(obs, "obs", (None, self.obs_dim), self.dtype)
        act = as_array(act, "act", (obs.shape[0], self.act_dim), self.dtype)
        x = self._inputs(obs, act)
        o = self.obs_dim
        means, variances = [], []
        for m in self.elites:
            raw = self._raw_out(x, self.nets[m]).astype(np.float64)
            means.append(raw[:, :o])
            variances.append(np.exp(self.heads[m].logvar(raw[:, o:])) if self.probabilistic
                             else np.zeros_like(raw[:, :o]))
        mu = np.mean(means, axis=0)
        var = np.mean(variances, axis=0) + np.var(means, axis=0)
        std = self.delta_std.astype(np.float64)
        carry = obs * self._carry if self.absolute_obs_dims else obs
        return ((carry + self.delta_mean + std * mu).astype(self.dtype),
                (std * np.sqrt(var)).astype(self.dtype))

    def _step(self, obs, act):
        out = self._net_out(self._inputs(obs, act))
        out *= self.delta_std
        out += self.delta_mean
        out += obs * self._carry if self.absolute_obs_dims else obs
        return out

    def predict(self, obs: npt.ArrayLike, act: npt.ArrayLike) -> np.ndarray:
        """Next observation for one (obs_dim,), (act_dim,) pair or a batch (N, obs_dim), (N, act_dim)."""
        single = np.ndim(obs) == 1
        lead = () if single else (None,)
        obs = as_array(obs, "obs", (*lead, self.obs_dim), self.dtype)
        act = as_array(act, "act", (*lead, self.act_dim), self.dtype)
        if single:
            return self._step(obs[None], act[None])[0]
        if act.shape[0] != obs.shape[0]:
            raise ValueError(f"act: expected shape ({obs.shape[0]}, {self.act_dim}), got {act.shape}")
        return self._step(obs, act)

    def rollout(self, obs0: npt.ArrayLike, actions: npt.ArrayLike) -> np.ndarray:
        """Open-loop prediction: obs0 (obs_dim,) with actions (H, act_dim) gives (H + 1, obs_dim);
        obs0 (B, obs_dim) with actions (B, H, act_dim) gives (B, H + 1, obs_dim). Index 0 is obs0."""
        single = np.ndim(obs0) == 1
        if single:
            obs0 = as_array(obs0, "obs0", (self.obs_dim,), self.dtype)[None]
            actions = as_array(actions, "actions", (None, self.act_dim), self.dtype)[None]
        else:
            obs0 = as_array(obs0, "obs0", (None, self.obs_dim), self.dtype)
            actions = as_array(actions, "actions", (obs0.shape[0], None, self.act_dim), self.dtype)
        b, h = actions.shape[:2]
        states = np.empty((b, h + 1, self.obs_dim), self.dtype)
        states[:, 0] = obs0
        for t in range(h):
            states[:, t + 1] = self._step(states[:, t], actions[:, t])
        return states[0] if single else states

    def prediction_error(self, trajectories: ReplayBuffer | Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
                         horizon: int) -> dict[str, Any]:
        """Error of open-loop k-step predictions, k = 1..horizon, on held-out trajectories.

        `trajectories` is a ReplayBuffer (split with `ReplayBuffer.trajectories()`) or a sequence
        of (obs (T + 1, obs_dim), actions (T, act_dim)) pairs. Every window of `horizon` steps is
        rolled out from its true first observation. Returns {"horizon": 1..H, "mse": (H,) mean
        over windows and dimensions, "mse_per_dim": (H, obs_dim), "windows": count}.
        """
        horizon = check_positive_int(horizon, "horizon")
        if isinstance(trajectories, ReplayBuffer):
            trajectories = trajectories.trajectories()
        pairs = []
        for i, pair in enumerate(trajectories):
            try:
                obs, act = pair
            except (TypeError, ValueError):
                raise ValueError(f"trajectories[{i}]: expected an (obs, actions) pair") from None
            act = as_array(act, f"trajectories[{i}] actions", (None, self.act_dim), self.dtype)
            obs = as_array(obs, f"trajectories[{i}] obs", (act.shape[0] + 1, self.obs_dim), self.dtype)
            pairs.append((obs, act))
        windows = sum(max(0, act.shape[0] - horizon + 1) for _, act in pairs)
        # windows of actions and true states, the rollout, and its float64 squared errors
        check_bytes(f"prediction_error(horizon={horizon}, {windows} windows)",
                    {"windows (windows x horizon x (obs_dim + act_dim))":
                     array_bytes(windows, horizon, 4 * self.obs_dim + self.act_dim, itemsize=8)},
                    "horizon")
        starts, acts, truth = [], [], []
        for obs, act in pairs:
            n = act.shape[0] - horizon + 1
            if n <= 0:
                continue
            win = np.arange(n)[:, None] + np.arange(horizon)[None]
            starts.append(obs[:n])
            acts.append(act[win])
            truth.append(obs[win + 1])
        if not starts:
            raise ValueError(f"trajectories: none is at least {horizon} steps long")
        pred = self.rollout(np.concatenate(starts), np.concatenate(acts))[:, 1:]
        sq = (pred.astype(np.float64) - np.concatenate(truth)) ** 2
        per_dim = sq.mean(axis=0)
        return {"horizon": np.arange(1, horizon + 1), "mse": per_dim.mean(axis=1),
                "mse_per_dim": per_dim, "windows": int(sq.shape[0])}

    def packed(self, isa: str | Spec | None = None) -> PackedModel:
        """The model laid out for the rollout kernel (``kernels.rollout.pack_model``) for the
        instruction-set spec `isa` (a Spec or its name; default the current one). Cached per
        spec: the same object until `version` changes."""
        spec = get_spec(isa)
        packed = self._packed.get(spec)
        if packed is None or packed.version != self.version:
            nets = [self.nets[m] for m in self.elites]  # planners use the elites only
            many = len(nets) > 1
            weights = [n.weights for n in nets] if many else nets[0].weights
            biases = [n.biases for n in nets] if many else nets[0].biases
            bounds = (np.stack([self.heads[m].bounds for m in self.elites])
                      if self.probabilistic else None)
            packed = self._packed[spec] = pack_model(
                weights, biases, self.activation, self.input_mean, self.input_scale,
                self.delta_mean, self.delta_std, self.version, self.angle_obs_dims, spec,
                absolute_dims=self.absolute_obs_dims, logvar_bounds=bounds,
                particles=self.particles, propagation=self.propagation, risk=self.risk)
        return packed

    # ------------------------------------------------------------------------------- training
    def _set_statistics(self, obs, act, delta):
        x = self._features(obs, act).astype(np.float64)
        std = x.std(axis=0)
        scale = np.where(std > _MIN_STD, 1.0 / np.maximum(std, _MIN_STD), 1.0)
        scale[list(self.ignore_obs_dims)] = 0.0
        self.input_mean[:] = x.mean(axis=0)
        self.input_scale[:] = scale
        d = delta.astype(np.float64)
        dstd = d.std(axis=0)
        self.delta_mean[:] = d.mean(axis=0)
        self.delta_std[:] = np.where(dstd > _MIN_STD, dstd, 1.0)

    def _delta(self, obs, next_obs):
        """What the network learns: next - obs, or next itself for absolute entries."""
        return next_obs - obs * self._carry if self.absolute_obs_dims else next_obs - obs

    def _targets(self, obs, next_obs):
        t = self._delta(obs, next_obs).astype(self.dtype)
        t -= self.delta_mean
        t /= self.delta_std
        return t

    def _evaluate(self, x, t, net=None):
        """(normalised MSE, raw next-obs MSE) of `net` (default: the elites' mean) on
        normalised inputs/targets."""
        err = (self._net_out(x, net) - t).astype(np.float64) ** 2
        per_dim = err.mean(axis=0)
        return float(per_dim.mean()), float((per_dim * self.delta_std.astype(np.float64) ** 2).mean())

    def _nll(self, x, t, m):
        """Member m's mean Gaussian NLL (without constant) on normalised inputs/targets."""
        raw = self._raw_out(x, self.nets[m]).astype(np.float64)
        lv = self.heads[m].logvar(raw[:, self.obs_dim:])
        return float((0.5 * ((raw[:, :self.obs_dim] - t) ** 2 * np.exp(-lv) + lv)).mean())

    def _check_decay(self, weight_decay):
        """Per layer decays from one number or one per layer."""
        n = self.net.num_layers
        decays = [weight_decay] * n if np.ndim(weight_decay) == 0 else list(weight_decay)
        if len(decays) != n or not all(
                not isinstance(d, bool) and np.isfinite(d) and d >= 0 for d in decays):
            raise ValueError(f"weight_decay: expected a non-negative number or {n} of them "
                             f"(one per layer), got {weight_decay!r}")
        return [float(d) for d in decays]

    def fit(self, buffer: ReplayBuffer, epochs: int = 50, batch_size: int = 256, lr: float = 1e-3,
            validation_ratio: float = 0.1, patience: int | None = 5,
            weight_decay: float | Sequence[float] = 0.0, input_noise: float = 0.0,
            verbose: bool = False) -> dict[str, Any]:
        """Train on `buffer` by minibatch Adam on the MSE of the normalised delta (a
        probabilistic model: its Gaussian NLL, and the log-variance bounds with it).
        `weight_decay`: one number, or one per layer (its weights and bias), as PETS.

        The buffer's seeded split (`buffer.split(validation_ratio, seed)`) gives the validation
        rows; statistics come from the training rows. Validation runs every epoch; training stops
        after `patience` epochs without improvement (None: never) and the best weights are
        restored. An ensemble trains member m on a bootstrap resample of the training rows; its
        losses are the members' mean, and each member keeps its own best epoch's weights.
        Returns the history: per-epoch "train_loss", "val_loss" (normalised MSE), "val_mse"
        (next-observation MSE), "seconds", plus "best_epoch", "stopped_early", "train_rows" and
        "validation_rows", "member_val_loss" (each member's best) and "elites"; a probabilistic
        model adds "val_nll" (the members' mean NLL). The elites are the `num_elites` members
        of least best validation loss (training loss without validation rows). Without validation rows (validation_ratio=0) "val_loss" and "val_mse"
        are empty and early stopping follows the training loss; a ratio > 0 needs at least 2
        transitions (FastMBRLError otherwise).
        A non-finite loss restores the model as it was before the call and raises FastMBRLError
        naming the epoch.
        """
        if not isinstance(buffer, ReplayBuffer):
            raise ValueError(f"buffer: expected a ReplayBuffer, got {type(buffer).__name__}")
        if (buffer.obs_dim, buffer.act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(f"buffer: holds obs_dim={buffer.obs_dim}, act_dim={buffer.act_dim}; "
                             f"the model expects {self.obs_dim}, {self.act_dim}")
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        if patience is not None:
            patience = check_positive_int(patience, "patience")
        decays = self._check_decay(weight_decay)
        for name, value in (("lr", lr), ("input_noise", input_noise)):
            if not (np.isfinite(value) and value >= 0) or (name == "lr" and value == 0):
                raise ValueError(f"{name}: expected a {'positive' if name == 'lr' else 'non-negative'} "
                                 f"number, got {value!r}")
        if validation_ratio and len(buffer) == 1:  # a split needs a row on each side
            raise FastMBRLError(
                f"fit: validation_ratio={validation_ratio} holds rows out for validation, which "
                f"needs at least 2 transitions; the buffer holds 1 (collect more, or pass "
                f"validation_ratio=0 to fit without validation)")
        train_idx, val_idx = buffer.split(validation_ratio, seed=self.seed)
        if train_idx.size == 0:
            raise ValueError(f"buffer: no training rows (it holds {len(buffer)} transitions)")
        b, n, n_in = self.ensemble_size, len(buffer), self.input_mean.size
        check_bytes(f"DynamicsModel.fit (ensemble_size={b}, {n} transitions)", {
            "normalised inputs and targets (transitions)": array_bytes(n, n_in + self.obs_dim),
            "bootstrap rows and their orders (ensemble_size x transitions)":
                (2 if b > 1 else 1) * array_bytes(b, n, itemsize=8),
            "input noise (ensemble_size x transitions x inputs)":
                array_bytes(b, n, n_in) if input_noise > 0 else 0})

        before = self.state_dict()
        tr = buffer.get(train_idx)
        self._set_statistics(tr.obs, tr.action, self._delta(tr.obs, tr.next_obs))
        x_tr, t_tr = self._inputs(tr.obs, tr.action), self._targets(tr.obs, tr.next_obs)
        if val_idx.size:
            va = buffer.get(val_idx)
            x_va, t_va = self._inputs(va.obs, va.action), self._targets(va.obs, va.next_obs)
        per_array = [d for d in decays for _ in (0, 1)]
        opts = [Adam(net.params, lr=lr, weight_decay=per_array) for net in self.nets]
        heads = self.heads if self.probabilistic else None
        head_opts = [Adam([h.bounds], lr=lr) for h in self.heads] if heads else None
        boot = (None if b == 1 else
                [self.rng.integers(0, x_tr.shape[0], x_tr.shape[0]) for _ in range(b)])
        history: dict[str, Any] = {"train_loss": [], "val_loss": [], "val_mse": [], "seconds": [],
                   "best_epoch": None, "stopped_early": False,
                   "train_rows": int(train_idx.size), "validation_rows": int(val_idx.size)}
        if self.probabilistic:
            history["val_nll"] = []
        best, waited = np.inf, 0
        member_best = [np.inf] * b
        best_params: list[np.ndarray | None] = [None] * b
        best_bounds: list[np.ndarray | None] = [None] * b
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            member_val = []
            with np.errstate(over="ignore", invalid="ignore"):  # divergence is caught just below
                # the members train together, in one parallel kernel
                member_train = train_mse_epochs(self.nets, opts, x_tr, t_tr, batch_size,
                                                self.rng, input_noise, rows=boot, heads=heads,
                                                head_optimizers=head_opts)
                train_loss = np.mean(member_train)
                if val_idx.size:
                    member_val = [self._evaluate(x_va, t_va, net) for net in self.nets]
                    val_loss, val_mse = np.mean(member_val, axis=0)
                    if self.probabilistic:
                        val_nll = np.mean([self._nll(x_va, t_va, m) for m in range(b)])
                else:  # members are ranked by their last training loss
                    member_best = [float(v) for v in member_train]
            seconds = time.perf_counter() - t0
            if not np.isfinite(train_loss) or (val_idx.size and not np.isfinite(val_loss)):
                self.load_state(before)
                raise FastMBRLError(f"fit: the loss became non-finite at epoch {epoch} "
                                    f"(try a lower lr); the model was left as before fit")
            history["train_loss"].append(float(train_loss))
            history["seconds"].append(float(seconds))
            if val_idx.size:
                history["val_loss"].append(float(val_loss))
                history["val_mse"].append(float(val_mse))
                if self.probabilistic:
                    history["val_nll"].append(float(val_nll))
            if verbose:
                val = (f"val {val_loss:.5f}  val mse {val_mse:.3g}" if val_idx.size
                       else "no validation rows")
                print(f"epoch {epoch:>4}/{epochs}  train {train_loss:.5f}  {val}  "
                      f"{seconds:.2f}s", flush=True)
            for m, (loss, _) in enumerate(member_val):
                if loss < member_best[m]:
                    member_best[m] = loss
                    best_params[m] = self.nets[m].flat_params.copy()
                    if self.probabilistic:
                        best_bounds[m] = self.heads[m].bounds.copy()
            score = val_loss if val_idx.size else train_loss
            if score < best:
                best, waited, history["best_epoch"] = score, 0, epoch
            else:
                waited += 1
                if patience is not None and waited >= patience:
                    history["stopped_early"] = epoch < epochs
                    break
        for m, (net, params) in enumerate(zip(self.nets, best_params)):
            if params is not None:
                net.flat_params[:] = params
            if best_bounds[m] is not None:
                self.heads[m].bounds[...] = best_bounds[m]
        self.elites = np.sort(np.argsort(member_best, kind="stable")[:self.num_elites])
        history["member_val_loss"] = [float(v) for v in member_best]
        history["elites"] = self.elites.tolist()
        self.version += 1
        return history

    # ------------------------------------------------------------------------------ state, I/O
    def state_dict(self) -> dict[str, Any]:
        """Copies of the weights ("W0", "b0", ...; "m0_W0", "m1_W0", ... for an ensemble) and
        the four statistics arrays; a probabilistic model's log-variance bounds
        ("logvar_bounds" or "m0_logvar_bounds", ...: (2, obs_dim), upper then lower), and the
        elites ("elites") when they are not every member."""
        if self.ensemble_size == 1:
            state = self.net.state_dict()
        else:
            state = {f"m{m}_{k}": v for m, net in enumerate(self.nets)
                     for k, v in net.state_dict().items()}
        for m, head in enumerate(self.heads):
            state[f"{self._prefix(m)}logvar_bounds"] = head.bounds.copy()
        if self.num_elites < self.ensemble_size:
            state["elites"] = self.elites.copy()
        for name in _STATS:
            state[name] = getattr(self, name).copy()
        return state

    def _prefix(self, m):
        return f"m{m}_" if self.ensemble_size > 1 else ""

    def load_state(self, state: dict[str, Any]) -> None:
        """Set weights and statistics from `state_dict()` output; checked before anything changes."""
        state = dict(state)
        stats = {}
        for name in _STATS:
            if name not in state:
                raise ValueError(f"state: missing {name!r}")
            size = (self.input_mean.size if name.startswith("input") else self.obs_dim)
            stats[name] = as_array(state.pop(name), f"state[{name!r}]", (size,), self.dtype)
        if (stats["input_scale"] < 0).any() or (stats["delta_std"] <= 0).any():
            raise ValueError("state: input_scale must be >= 0 and delta_std > 0")
        bounds = []
        for m in range(len(self.heads)):
            key = f"{self._prefix(m)}logvar_bounds"
            if key not in state:
                raise ValueError(f"state: missing {key!r} (a probabilistic model's)")
            v = as_array(state.pop(key), f"state[{key!r}]", (2, self.obs_dim), self.dtype)
            if not (v[1] < v[0]).all():
                raise ValueError(f"state[{key!r}]: the lower bounds (row 1) must be below the "
                                 f"upper ones (row 0)")
            bounds.append(v)
        elites = np.arange(self.num_elites, dtype=np.int64)
        if self.num_elites < self.ensemble_size or "elites" in state:
            if "elites" not in state:
                raise ValueError("state: missing 'elites'")
            raw = np.asarray(state.pop("elites"))
            elites = np.sort(raw.astype(np.int64)) if raw.dtype.kind in "iu" else raw
            if (raw.dtype.kind not in "iu" or raw.shape != (self.num_elites,)
                    or np.unique(elites).size != self.num_elites or elites.min() < 0
                    or elites.max() >= self.ensemble_size):
                raise ValueError(f"state['elites']: expected {self.num_elites} distinct member "
                                 f"indices in [0, {self.ensemble_size}), got {raw!r}")
        if self.ensemble_size == 1:
            parts = [state]
        else:
            parts = [{k[len(f"m{m}_"):]: v for k, v in state.items() if k.startswith(f"m{m}_")}
                     for m in range(self.ensemble_size)]
            if sum(map(len, parts)) != len(state):
                raise ValueError(f"state: keys {sorted(state)} do not name members "
                                 f"0..{self.ensemble_size - 1}")
        before = [net.state_dict() for net in self.nets]
        try:
            for net, part in zip(self.nets, parts):
                net.load_state_dict(part)
        except ValueError:
            for net, old in zip(self.nets, before):  # a bad member leaves every member as it was
                net.load_state_dict(old)
            raise
        for name, value in stats.items():
            getattr(self, name)[:] = value
        for head, v in zip(self.heads, bounds):
            head.bounds[...] = v
        self.elites = elites
        self.version += 1

    def save(self, path: StrPath) -> Path:
        """Write weights, statistics and a JSON header (sizes, activation) to one .npz file."""
        header = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(self.hidden),
                  "activation": self.activation, "ignore_obs_dims": list(self.ignore_obs_dims),
                  "seed": self.seed, "dtype": self.dtype.name, "ensemble_size": self.ensemble_size,
                  "angle_obs_dims": list(self.angle_obs_dims)}
        if self.absolute_obs_dims:  # absent from older files: none
            header["absolute_obs_dims"] = list(self.absolute_obs_dims)
        version = _VERSION_ABSOLUTE if self.absolute_obs_dims else _VERSION
        if self.probabilistic or self.num_elites < self.ensemble_size:  # absent: neither
            header["probabilistic"] = self.probabilistic
            header["num_elites"] = self.num_elites
            version = _VERSION_PETS
        return save_npz(path, _KIND, version, header, self.state_dict())

    @classmethod
    def load(cls, path: StrPath) -> DynamicsModel:
        """Read a model written by `save`; a corrupt or mismatched file raises FormatError."""
        header, arrays = load_npz(path, _KIND, (1, _VERSION, _VERSION_ABSOLUTE, _VERSION_PETS))
        sizes = _check_header(path, header, arrays)  # before anything is sized from it
        try:
            model = cls(sizes["obs_dim"], sizes["act_dim"], sizes["hidden"], sizes["activation"],
                        sizes["ignore_obs_dims"], sizes["seed"], np.dtype(sizes["dtype"]),
                        sizes["ensemble_size"], sizes["angle_obs_dims"],
                        sizes["absolute_obs_dims"], sizes["probabilistic"], sizes["num_elites"])
            model.load_state(arrays)
        except ResourceLimitError as exc:
            raise ResourceLimitError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: not a valid dynamics model ({exc})") from exc
        return model


def _check_header(path, header: dict, arrays: dict) -> dict:
    """The sizes a model file's header claims, once they agree with the shapes of the weight
    arrays in the file (FormatError naming the field otherwise): a header alone never sizes
    an allocation."""
    def count(key, default=None):
        value = header.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise FormatError(f"{path}: header field {key!r} must be a positive integer, "
                              f"got {value!r}")
        return value

    def ints(key, default=None):
        value = header.get(key, default)
        if (not isinstance(value, list)
                or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
            raise FormatError(f"{path}: header field {key!r} must be a list of integers, "
                              f"got {value!r}")
        return tuple(value)

    def one_of(key, choices):
        value = header.get(key)
        if not isinstance(value, str) or value not in choices:
            raise FormatError(f"{path}: header field {key!r} must be one of "
                              f"{', '.join(choices)}, got {value!r}")
        return value

    probabilistic = header.get("probabilistic", False)
    if not isinstance(probabilistic, bool):
        raise FormatError(f"{path}: header field 'probabilistic' must be true or false, "
                          f"got {probabilistic!r}")
    seed = header.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FormatError(f"{path}: header field 'seed' must be a non-negative integer, "
                          f"got {seed!r}")
    sizes = {"obs_dim": count("obs_dim"), "act_dim": count("act_dim"),
             "ensemble_size": count("ensemble_size", 1), "hidden": ints("hidden"),
             "angle_obs_dims": ints("angle_obs_dims", []),
             "absolute_obs_dims": ints("absolute_obs_dims", []),
             "ignore_obs_dims": ints("ignore_obs_dims"), "seed": seed,
             "dtype": one_of("dtype", ("float32", "float64")),
             "activation": one_of("activation", ACTIVATION_NAMES),
             "probabilistic": probabilistic}
    sizes["num_elites"] = count("num_elites", sizes["ensemble_size"])
    if sizes["num_elites"] > sizes["ensemble_size"]:
        raise FormatError(f"{path}: header field 'num_elites' is {sizes['num_elites']}, more "
                          f"than the {sizes['ensemble_size']} members")
    members = sorted(int(m.group(1)) for m in map(_MEMBER_KEY.fullmatch, arrays) if m)
    found = 1 if "W0" in arrays and not members else len(members)
    if found != sizes["ensemble_size"] or members not in ([], list(range(found))):
        raise FormatError(f"{path}: header field 'ensemble_size' is {sizes['ensemble_size']}, "
                          f"but the file holds the weights of {found} member(s)")
    prefix = "m0_" if members else ""
    shapes: list[tuple[int, ...]] = []
    while f"{prefix}W{len(shapes)}" in arrays:
        shapes.append(np.shape(arrays[f"{prefix}W{len(shapes)}"]))
    if not shapes or any(len(s) != 2 for s in shapes):
        raise FormatError(f"{path}: no 2-D weight arrays {prefix}W0, {prefix}W1, ...")
    widths = [s[1] for s in shapes[:-1]]
    if list(sizes["hidden"]) != widths:
        raise FormatError(f"{path}: header field 'hidden' is {list(sizes['hidden'])}, but the "
                          f"weight arrays have hidden widths {widths}")
    outputs = sizes["obs_dim"] * (2 if probabilistic else 1)
    if shapes[-1][1] != outputs:
        kind = " (probabilistic: a mean and a log-variance each)" if probabilistic else ""
        raise FormatError(f"{path}: header field 'obs_dim' is {sizes['obs_dim']}{kind}, but the "
                          f"last weight array has {shapes[-1][1]} outputs")
    fan_in = sizes["obs_dim"] + len(sizes["angle_obs_dims"]) + sizes["act_dim"]
    if shapes[0][0] != fan_in:
        raise FormatError(f"{path}: header fields 'obs_dim', 'act_dim' and 'angle_obs_dims' "
                          f"give {fan_in} network inputs, but the first weight array has "
                          f"{shapes[0][0]}")
    return sizes
