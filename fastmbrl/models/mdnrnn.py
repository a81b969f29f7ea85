"""World Models' M: an LSTM over [z_t, a_t] whose hidden state h_t feeds a mixture-density head
for z_{t+1} (per dimension, a mixture of K diagonal Gaussians), a reward head and a done head,
so that M can stand in for the environment. Forward and backward are written here.

Training is truncated backpropagation through time: a batch of episodes is walked in chunks
of `seq_len` steps, one Adam step per chunk, the state (h, c) carried from chunk to chunk but
not differentiated through. Per chunk the input and output products run over all its steps at
once and only the recurrent product runs step by step (BLAS); the cell and the heads' loss are
the numba kernels of ``kernels/rnn.py``.

Loss, averaged over the valid (episode, step) pairs of a chunk:
    mean_z NLL(z_{t+1}) + reward_weight (r_hat_t - r_t)^2 + done_weight BCE(done logit, d_t).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, as_array, check_finite_float, check_positive_int
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels import rnn as _k
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.models.mlp import Adam, RngLike, _as_rng, _check_dtype

_KIND = "mdnrnn"
_VERSION = 1
_PARAMS = ("W", "b", "Wo", "bo")


class Mixture(NamedTuple):
    """A diagonal Gaussian mixture per z dimension: each (N, Z, K)."""
    log_pi: np.ndarray  # log mixture weights (log-softmax of the logits)
    mu: np.ndarray
    log_std: np.ndarray


# the generated constructor lives outside this module: give it the types, not their names
Mixture.__new__.__annotations__ = {**dict.fromkeys(Mixture._fields, np.ndarray), "return": Mixture}


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    s = x - m
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


class MDNRNN:
    """M of World Models: LSTM(`hidden`) over [z, a], then K-component mixture, reward, done.

    Parameters (views into `flat_params`): W (Z + A + H, 4H) with the input rows first then the
    recurrent ones, b (4H,) (gates i, f, g, o; the forget bias starts at 1), Wo (H, 3 Z K + 2)
    and bo: the heads (see ``kernels/rnn.py`` for the layout of a head row).
    """

    def __init__(self, z_dim: int = 32, act_dim: int = 3, hidden: int = 256, n_mix: int = 5,
                 reward_weight: float = 1.0, done_weight: float = 1.0, lr: float = 1e-3,
                 grad_clip: float | None = 1.0, dtype: npt.DTypeLike = np.float32,
                 seed: int = 0) -> None:
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.act_dim = check_positive_int(act_dim, "act_dim")
        self.hidden = check_positive_int(hidden, "hidden")
        self.n_mix = check_positive_int(n_mix, "n_mix")
        self.reward_weight = check_finite_float(reward_weight, "reward_weight", 0)
        self.done_weight = check_finite_float(done_weight, "done_weight", 0)
        self.lr = check_finite_float(lr, "lr", 0, low_open=True)
        self.grad_clip = (None if grad_clip is None
                          else check_finite_float(grad_clip, "grad_clip", 0, low_open=True))
        self.dtype = _check_dtype(dtype)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        n_in, h = self.z_dim + self.act_dim, self.hidden
        self.out_dim = 3 * self.z_dim * self.n_mix + 2
        shapes = {"W": (n_in + h, 4 * h), "b": (4 * h,), "Wo": (h, self.out_dim),
                  "bo": (self.out_dim,)}
        total = sum(math.prod(s) for s in shapes.values())
        check_bytes(f"MDNRNN(hidden={h}, z_dim={self.z_dim}, n_mix={self.n_mix})",
                    {"parameters, gradients, Adam moments":
                     array_bytes(4 * total, itemsize=self.dtype.itemsize)}, "hidden")
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        start = 0
        for name, shape in shapes.items():
            stop = start + math.prod(shape)
            self.params[name] = self.flat_params[start:stop].reshape(shape)
            self.grads[name] = self.flat_grads[start:stop].reshape(shape)
            start = stop
        rng = np.random.default_rng(self.seed)
        bound = 1.0 / math.sqrt(h)
        for name in ("W", "Wo"):
            p = self.params[name]
            p[...] = rng.uniform(-bound, bound, p.shape)
        self.params["b"][h:2 * h] = 1.0  # forget gate open at the start
        self.optimizer = Adam(list(self.params.values()), lr=self.lr)
        self.epochs_trained = 0
        self._ws: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    @property
    def num_params(self) -> int:
        return int(self.flat_params.size)

    # ------------------------------------------------------------------------ forward/backward
    def _workspace(self, steps: int, rows: int) -> dict[str, np.ndarray]:
        key = (steps, rows)
        ws = self._ws.get(key)
        if ws is None:
            h, n_in, o = self.hidden, self.z_dim + self.act_dim, self.out_dim
            parts = {"x": (steps, rows, n_in), "gx": (steps, rows, 4 * h),
                     "acts": (steps, rows, 4 * h), "hs": (steps + 1, rows, h),
                     "cs": (steps + 1, rows, h), "tc": (steps, rows, h), "y": (steps, rows, o),
                     "dy": (steps, rows, o), "dhs": (steps, rows, h), "hw": (rows, 4 * h),
                     "dh": (rows, h), "dc": (rows, h), "row_loss": (steps, rows, 3)}
            check_bytes(f"MDNRNN training (seq_len={steps}, batch_size={rows})",
                        {"activations of a chunk": sum(
                            array_bytes(*s, itemsize=self.dtype.itemsize)
                            for s in parts.values())}, "seq_len or batch_size")
            if len(self._ws) >= 4:
                self._ws.pop(next(iter(self._ws)))
            ws = self._ws[key] = {k: np.zeros(s, self.dtype) for k, s in parts.items()}
        return ws

    def _forward_chunk(self, ws, steps, rows, h0, c0):
        """Fills hs[1:], cs[1:], acts, tc and the heads' outputs y from ws['x'] (time-major)."""
        h, n_in = self.hidden, self.z_dim + self.act_dim
        w, b = self.params["W"], self.params["b"]
        x = ws["x"]
        gx = ws["gx"]
        np.matmul(x.reshape(-1, n_in), w[:n_in], out=gx.reshape(-1, 4 * h))
        gx += b
        hs, cs = ws["hs"], ws["cs"]
        hs[0], cs[0] = h0, c0
        wh, hw = w[n_in:], ws["hw"]
        for t in range(steps):
            np.matmul(hs[t], wh, out=hw)
            _k.lstm_forward_step(gx[t], hw, cs[t], ws["acts"][t], cs[t + 1], ws["tc"][t],
                                 hs[t + 1])
        np.matmul(hs[1:].reshape(-1, h), self.params["Wo"], out=ws["y"].reshape(-1, self.out_dim))
        ws["y"] += self.params["bo"]

    def _loss_chunk(self, ws, znext, rewards, dones, weight):
        """Loss parts and dL/dy of the chunk; weight (steps * rows,) sums to 1 over valid rows."""
        o = self.out_dim
        rl = ws["row_loss"].reshape(-1, 3)
        _k.mdn_loss(ws["y"].reshape(-1, o), znext.reshape(-1, self.z_dim), rewards.reshape(-1),
                    dones.reshape(-1), weight, self.n_mix, self.reward_weight, self.done_weight,
                    ws["dy"].reshape(-1, o), rl)
        parts = weight.astype(np.float64) @ rl.astype(np.float64)  # fixed order: reproducible
        total = parts[0] + self.reward_weight * parts[1] + self.done_weight * parts[2]
        return float(total), parts

    def _backward_chunk(self, ws, steps):
        """Gradients of the chunk into `grads` (overwritten), from ws['dy']."""
        h, n_in, o = self.hidden, self.z_dim + self.act_dim, self.out_dim
        g = self.grads
        dy2 = ws["dy"].reshape(-1, o)
        np.matmul(ws["hs"][1:].reshape(-1, h).T, dy2, out=g["Wo"])
        np.sum(dy2, axis=0, out=g["bo"])
        dhs = ws["dhs"]
        np.matmul(dy2, self.params["Wo"].T, out=dhs.reshape(-1, h))
        dg = ws["gx"]  # the forward's input products are spent: reuse their buffer
        dh, dc = ws["dh"], ws["dc"]
        dh[...] = 0
        dc[...] = 0
        wht = self.params["W"][n_in:].T
        for t in range(steps - 1, -1, -1):
            _k.lstm_backward_step(ws["acts"][t], ws["cs"][t], ws["tc"][t], dhs[t], dh, dc, dg[t])
            if t:
                np.matmul(dg[t], wht, out=dh)
        dg2 = dg.reshape(-1, 4 * h)
        np.matmul(ws["x"].reshape(-1, n_in).T, dg2, out=g["W"][:n_in])
        np.matmul(ws["hs"][:-1].reshape(-1, h).T, dg2, out=g["W"][n_in:])
        np.sum(dg2, axis=0, out=g["b"])

    def _state(self, v, rows, name):
        if v is None:
            return np.zeros((rows, self.hidden), self.dtype)
        return as_array(v, name, (rows, self.hidden), self.dtype)

    def loss_and_grad(self, z: npt.ArrayLike, actions: npt.ArrayLike, rewards: npt.ArrayLike,
                      dones: npt.ArrayLike, h0: npt.ArrayLike | None = None,
                      c0: npt.ArrayLike | None = None, mask: npt.ArrayLike | None = None,
                      grad: bool = True
                      ) -> tuple[float, np.ndarray | None, np.ndarray, np.ndarray]:
        """Loss of one chunk and its gradient over every parameter (a copy of `flat_grads`).

        z (B, T + 1, Z), actions (B, T, A), rewards and dones (B, T); h0, c0 (B, H) or None
        (zeros); mask (B, T) of 0/1 for the steps that count (default all). Returns
        (loss, flat gradient or None, h_T, c_T)."""
        z, actions, rewards, dones, mask = self._check_data(z, actions, rewards, dones, mask)
        rows, steps = actions.shape[:2]
        ws = self._workspace(steps, rows)
        tm = self._time_major(ws, z, actions, rewards, dones, mask, 0, steps)
        loss, _ = self._run_chunk(ws, steps, rows, self._state(h0, rows, "h0"),  # type: ignore[call-arg]
                                  self._state(c0, rows, "c0"), *tm, grad)
        return (loss, self.flat_grads.copy() if grad else None, ws["hs"][steps].copy(),
                ws["cs"][steps].copy())

    def _time_major(self, ws, z, actions, rewards, dones, mask, t0, t1):
        """Copy steps t0:t1 of episodes (batch-major) into the chunk's time-major buffers."""
        x = ws["x"]
        x[..., :self.z_dim] = z[:, t0:t1].transpose(1, 0, 2)
        x[..., self.z_dim:] = actions[:, t0:t1].transpose(1, 0, 2)
        znext = np.ascontiguousarray(z[:, t0 + 1:t1 + 1].transpose(1, 0, 2))
        r = np.ascontiguousarray(rewards[:, t0:t1].T)
        d = np.ascontiguousarray(dones[:, t0:t1].T)
        m = np.ascontiguousarray(mask[:, t0:t1].T, dtype=self.dtype).reshape(-1)
        return znext, r, d, m

    def _run_chunk(self, ws, steps, rows, h0, c0, znext, r, d, m, grad):
        valid = float(m.sum())
        weight = m / max(valid, 1.0)
        self._forward_chunk(ws, steps, rows, h0, c0)
        loss, parts = self._loss_chunk(ws, znext, r, d, weight)
        if grad:
            self._backward_chunk(ws, steps)
        return loss, np.concatenate([[loss], parts, [valid]])

    # ---------------------------------------------------------------------------- training
    def _check_data(self, z, actions, rewards, dones, mask=None):
        actions = as_array(actions, "actions", (None, None, self.act_dim), self.dtype)
        e, t = actions.shape[:2]
        if e == 0 or t == 0:
            raise ValueError(f"actions: expected at least one episode of one step, got shape "
                             f"{actions.shape}")
        z = as_array(z, "z", (e, t + 1, self.z_dim), self.dtype)
        rewards = as_array(rewards, "rewards", (e, t), self.dtype)
        dones = as_array(dones, "dones", (e, t), self.dtype)
        if ((dones != 0) & (dones != 1)).any():
            raise ValueError("dones: expected 0/1 (or booleans)")
        if mask is None:
            mask = np.ones((e, t), self.dtype)
        else:
            mask = as_array(mask, "mask", (e, t), self.dtype)
            if ((mask != 0) & (mask != 1)).any():
                raise ValueError("mask: expected 0/1 (or booleans)")
        return z, actions, rewards, dones, mask

    def fit(self, z: npt.ArrayLike, actions: npt.ArrayLike, rewards: npt.ArrayLike,
            dones: npt.ArrayLike, epochs: int = 20, batch_size: int = 100, seq_len: int = 100,
            lengths: npt.ArrayLike | None = None, rng: RngLike = None,
            progress: Callable[[int, int], Any] | None = None) -> dict[str, np.ndarray]:
        """Train on episodes: z (E, T + 1, Z) the latents of every frame, actions (E, T, A),
        rewards and dones (E, T) (step t's action leads to z[:, t + 1], rewards[:, t],
        dones[:, t]). Steps after an episode's first done, and past `lengths[e]` when given,
        are padding and do not count.

        Per epoch the episodes are shuffled (from `rng`; default a generator seeded by the
        model's seed and the epochs trained so far) into batches of `batch_size`; each batch is
        walked in chunks of `seq_len` steps (truncated BPTT, state carried). `progress(done,
        total)` is called after every Adam step. Returns per-epoch means {"loss", "nll",
        "reward", "done"} (each (epochs,)); if a loss becomes non-finite, training stops before
        that update, leaving the parameters as they were, and the rest of the history is NaN."""
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        seq_len = check_positive_int(seq_len, "seq_len")
        z, actions, rewards, dones, _ = self._check_data(z, actions, rewards, dones)
        n_ep, n_t = actions.shape[:2]
        steps_idx = np.arange(n_t)
        # valid up to and including the first done
        ended_before = np.cumsum(dones, axis=1) - dones > 0
        mask = ~ended_before
        if lengths is not None:
            lengths = np.asarray(lengths)
            if (lengths.shape != (n_ep,) or lengths.dtype.kind not in "iu"
                    or (lengths < 1).any() or (lengths > n_t).any()):
                raise ValueError(f"lengths: expected {n_ep} integers in [1, {n_t}], got "
                                 f"{lengths!r}")
            mask &= steps_idx[None, :] < lengths[:, None]
        mask = mask.astype(self.dtype)
        if rng is None:
            rng = np.random.default_rng([self.seed, self.epochs_trained])
        rng = _as_rng(rng)
        rows = min(batch_size, n_ep)
        seq = min(seq_len, n_t)
        self._workspace(seq, rows)  # refuse an oversized chunk before any work
        n_batches = -(-n_ep // rows)
        n_chunks = -(-n_t // seq)
        total_steps = epochs * n_batches * n_chunks
        hist = np.full((epochs, 4), np.nan)
        done_steps = 0
        for ep in range(epochs):
            order = rng.permutation(n_ep)
            sums = np.zeros(4)
            weight_total = 0.0
            for bi in range(n_batches):
                idx = np.sort(order[bi * rows:(bi + 1) * rows])
                bz, ba, br, bd, bm = (v[idx] for v in (z, actions, rewards, dones, mask))
                nb = idx.size
                h0 = np.zeros((nb, self.hidden), self.dtype)
                c0 = np.zeros_like(h0)
                for t0 in range(0, n_t, seq):
                    t1 = min(t0 + seq, n_t)
                    ws = self._workspace(t1 - t0, nb)
                    tm = self._time_major(ws, bz, ba, br, bd, bm, t0, t1)
                    if tm[3].sum() > 0:
                        loss, info = self._run_chunk(ws, t1 - t0, nb, h0, c0, *tm, True)  # type: ignore[call-arg]
                        if not math.isfinite(loss):
                            self.epochs_trained += ep
                            return self._history(hist)
                        if self.grad_clip is not None:
                            np.clip(self.flat_grads, -self.grad_clip, self.grad_clip,
                                    out=self.flat_grads)
                        self.optimizer.step(list(self.grads.values()))
                        sums += info[:4] * info[4]
                        weight_total += info[4]
                        h0 = ws["hs"][t1 - t0].copy()
                        c0 = ws["cs"][t1 - t0].copy()
                    done_steps += 1
                    if progress is not None:
                        progress(done_steps, total_steps)
            hist[ep] = sums / max(weight_total, 1.0)
        self.epochs_trained += epochs
        return self._history(hist)

    @staticmethod
    def _history(hist):
        return {k: hist[:, i].copy() for i, k in enumerate(("loss", "nll", "reward", "done"))}

    # ------------------------------------------------------------------------ stepping
    def initial_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = check_positive_int(n, "n")
        return np.zeros((n, self.hidden), self.dtype), np.zeros((n, self.hidden), self.dtype)

    def step(self, z: npt.ArrayLike, a: npt.ArrayLike, h: npt.ArrayLike | None = None,
             c: npt.ArrayLike | None = None
             ) -> tuple[Mixture, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step for N rows: z (N, Z), a (N, A), state h, c (N, H) (None: zeros). Returns
        (mixture for z_{t+1}, reward (N,), done probability (N,), h_{t+1}, c_{t+1})."""
        z = as_array(z, "z", (None, self.z_dim), self.dtype)
        n = z.shape[0]
        a = as_array(a, "a", (n, self.act_dim), self.dtype)
        h, c = self._state(h, n, "h"), self._state(c, n, "c")
        hd, n_in = self.hidden, self.z_dim + self.act_dim
        w = self.params["W"]
        gx = np.concatenate([z, a], axis=1) @ w[:n_in] + self.params["b"]
        hw = h @ w[n_in:]
        acts = np.empty((n, 4 * hd), self.dtype)
        c1, tc, h1 = (np.empty((n, hd), self.dtype) for _ in range(3))
        _k.lstm_forward_step(gx, hw, c, acts, c1, tc, h1)
        y = h1 @ self.params["Wo"] + self.params["bo"]
        return (*self.split_heads(y), h1, c1)

    def split_heads(self, y: np.ndarray) -> tuple[Mixture, np.ndarray, np.ndarray]:
        """(Mixture, reward, done probability) from head outputs y (N, 3 Z K + 2)."""
        n, zk = y.shape[0], self.z_dim * self.n_mix
        logits = y[:, :zk].reshape(n, self.z_dim, self.n_mix)
        mix = Mixture(log_softmax(logits), y[:, zk:2 * zk].reshape(n, self.z_dim, self.n_mix),
                      y[:, 2 * zk:3 * zk].reshape(n, self.z_dim, self.n_mix))
        done = 0.5 + 0.5 * np.tanh(0.5 * y[:, 3 * zk + 1])
        return mix, y[:, 3 * zk].copy(), done

    def sample(self, z: npt.ArrayLike, a: npt.ArrayLike, h: npt.ArrayLike | None = None,
               c: npt.ArrayLike | None = None, temperature: float = 1.0, rng: RngLike = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`step`, then z_{t+1} drawn from the mixture at temperature τ as in World Models:
        weights softmax(logits / τ), stds exp(log_std) sqrt(τ). τ = 0 takes the mean of each
        dimension's most probable component. Returns (z_next, reward, done probability, h, c)."""
        tau = check_finite_float(temperature, "temperature", 0)
        rng = _as_rng(rng)
        mix, reward, done, h1, c1 = self.step(z, a, h, c)
        return (sample_mixture(mix, tau, rng).astype(self.dtype), reward, done, h1, c1)

    # ---------------------------------------------------------------------------- files
    def save(self, path: StrPath) -> Path:
        """Parameters, Adam state and settings in one .npz (see docs/formats.md)."""
        header = {"z_dim": self.z_dim, "act_dim": self.act_dim, "hidden": self.hidden,
                  "n_mix": self.n_mix, "reward_weight": self.reward_weight,
                  "done_weight": self.done_weight, "lr": self.lr, "grad_clip": self.grad_clip,
                  "dtype": self.dtype.name, "seed": self.seed,
                  "epochs_trained": self.epochs_trained, "adam_t": self.optimizer.t}
        arrays = dict(self.params)
        arrays["adam_m"] = self.optimizer.m[0]
        arrays["adam_v"] = self.optimizer.v[0]
        return save_npz(path, _KIND, _VERSION, header, arrays)

    @classmethod
    def load(cls, path: StrPath) -> MDNRNN:
        header, arrays = load_npz(path, _KIND, (_VERSION,))
        try:
            model = cls(header["z_dim"], header["act_dim"], header["hidden"], header["n_mix"],
                        header["reward_weight"], header["done_weight"], header["lr"],
                        header["grad_clip"], header["dtype"], header["seed"])
            expected = {*_PARAMS, "adam_m", "adam_v"}
            if set(arrays) != expected:
                raise ValueError(f"arrays {sorted(arrays)}, expected {sorted(expected)}")
            for name in _PARAMS:
                model.params[name][...] = as_array(arrays[name], name,
                                                   model.params[name].shape, model.dtype)
            for name, dst in (("adam_m", model.optimizer.m[0]), ("adam_v", model.optimizer.v[0])):
                dst[...] = as_array(arrays[name], name, dst.shape, model.dtype)
            t, ep = header["adam_t"], header["epochs_trained"]
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (t, ep)):
                raise ValueError("adam_t and epochs_trained must be non-negative integers")
            model.optimizer.t, model.epochs_trained = t, ep
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: not a valid MDN-RNN ({exc})") from None
        return model


def sample_mixture(mix: Mixture, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """One draw (N, Z) from per-dimension mixtures at temperature τ (World Models: logits / τ,
    stds times sqrt(τ)); τ = 0 gives the mean of the most probable component."""
    n, zd, k = mix.mu.shape
    if temperature == 0:
        pick = np.argmax(mix.log_pi, axis=-1)
        return np.take_along_axis(mix.mu, pick[..., None], -1)[..., 0].astype(np.float64)
    logits = mix.log_pi.astype(np.float64) / temperature
    p = np.exp(log_softmax(logits))
    u = rng.random((n, zd, 1))
    pick = np.minimum((np.cumsum(p, axis=-1) < u).sum(-1), k - 1)
    mu = np.take_along_axis(mix.mu, pick[..., None], -1)[..., 0].astype(np.float64)
    ls = np.take_along_axis(mix.log_std, pick[..., None], -1)[..., 0].astype(np.float64)
    return mu + np.exp(ls) * math.sqrt(temperature) * rng.standard_normal((n, zd))
