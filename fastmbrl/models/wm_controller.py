"""World Models' C, a linear controller on [z, h], and the dream that scores a population of them
inside M (the MDN-RNN) in one parallel kernel (``kernels/dream.py``).

C maps the latent z (Z,) and M's hidden state h (H,) to u = tanh(W [z, h] + b), then each action
to low + (high - low) (u + 1) / 2, within its bounds, or, where `action_clip` says, to u clipped
to the bounds (World Models' CarRacing brake: none at u <= 0, so that a C near zero drives
rather than stands braked); its parameters are flat, [W (A, Z + H) row-major, b (A,)],
the vector CMA-ES searches (867 numbers for CarRacing: Z = 32, H = 256, A = 3). A controller is
saved as one .npz (kind ``wm_controller``, docs/formats.md) and loads with numpy alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath, as_array, check_finite_float, check_positive_int
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels.dense import pack_panels
from fastmbrl.kernels.dream import agent_step, dream_kernel, dream_returns, dream_rows
from fastmbrl.kernels.isa import get_spec
from fastmbrl.limits import array_bytes, check_bytes
from fastmbrl.models.mdnrnn import MDNRNN
from fastmbrl.models.vae import ConvVAE, FrameEncoder

_KIND = "wm_controller"
_VERSION = 2  # 2: action_clip (version 1 files load with none clipped)


def num_params(z_dim: int, hidden: int, act_dim: int) -> int:
    """Length of a controller's parameter vector."""
    return act_dim * (z_dim + hidden) + act_dim


def _clip_mask(action_clip: npt.ArrayLike | None, act_dim: int) -> np.ndarray:
    if action_clip is None:
        return np.zeros(act_dim, np.bool_)
    mask = np.asarray(action_clip)
    if mask.shape != (act_dim,) or mask.dtype.kind not in "bui" or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"action_clip: expected {act_dim} booleans, got {action_clip!r}")
    return mask.astype(np.bool_)


class WorldModelController:
    """C of World Models. params: the flat vector (default zeros: u = 0, the middle of the
    bounds, or 0 clipped to them); action_clip (A,) booleans: the actions that are u clipped to
    their bounds rather than u mapped onto them (default none)."""

    def __init__(self, z_dim: int, hidden: int, act_dim: int, action_low: npt.ArrayLike,
                 action_high: npt.ArrayLike, params: npt.ArrayLike | None = None,
                 action_clip: npt.ArrayLike | None = None) -> None:
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.hidden = check_positive_int(hidden, "hidden")
        self.act_dim = check_positive_int(act_dim, "act_dim")
        self.action_low = as_array(action_low, "action_low", (self.act_dim,), np.float32)
        self.action_high = as_array(action_high, "action_high", (self.act_dim,), np.float32)
        if not (self.action_low < self.action_high).all():
            raise ValueError("action_low must be below action_high in every dimension")
        n = num_params(self.z_dim, self.hidden, self.act_dim)
        self.params = (np.zeros(n, np.float32) if params is None
                       else as_array(params, "params", (n,), np.float32).copy())
        self.action_clip = _clip_mask(action_clip, self.act_dim)

    @property
    def num_params(self) -> int:
        return int(self.params.size)

    def act(self, z: npt.ArrayLike, h: npt.ArrayLike) -> np.ndarray:
        """Actions (N, A) for latents z (N, Z) and hidden states h (N, H) (or one row each:
        (A,))."""
        z = np.asarray(z, np.float32)
        h = np.asarray(h, np.float32)
        one = z.ndim == 1
        z = as_array(np.atleast_2d(z), "z", (None, self.z_dim), np.float32)
        h = as_array(np.atleast_2d(h), "h", (z.shape[0], self.hidden), np.float32)
        a = self.act_dim
        w = self.params[:a * (self.z_dim + self.hidden)].reshape(a, -1)
        u = np.tanh(np.concatenate([z, h], axis=1) @ w.T + self.params[-a:])
        out = np.where(self.action_clip, np.clip(u, self.action_low, self.action_high),
                       self.action_low + (self.action_high - self.action_low) * (u + 1) / 2)
        return out[0] if one else out

    def save(self, path: StrPath) -> Path:
        """The sizes, bounds and parameters in one .npz (see docs/formats.md)."""
        header = {"z_dim": self.z_dim, "hidden": self.hidden, "act_dim": self.act_dim}
        return save_npz(path, _KIND, _VERSION, header,
                        {"params": self.params, "action_low": self.action_low,
                         "action_high": self.action_high,
                         "action_clip": self.action_clip.astype(np.uint8)})

    @classmethod
    def load(cls, path: StrPath) -> WorldModelController:
        header, arrays = load_npz(path, _KIND, (1, _VERSION))
        try:
            names = {"params", "action_low", "action_high"}
            if header["format_version"] >= 2:
                names.add("action_clip")
            if set(arrays) != names:
                raise ValueError(f"arrays {sorted(arrays)}, expected {', '.join(sorted(names))}")
            return cls(header["z_dim"], header["hidden"], header["act_dim"],
                       arrays["action_low"], arrays["action_high"], arrays["params"],
                       arrays.get("action_clip"))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: not a valid World Models controller ({exc})") from None


def dream(model: MDNRNN, population: npt.ArrayLike, z0: npt.ArrayLike, horizon: int,
          action_low: npt.ArrayLike, action_high: npt.ArrayLike, temperature: float = 1.0,
          done_threshold: float = 0.5, seed: int = 0,
          action_clip: npt.ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (P, R) and steps run (P, R) of each of the P controllers of `population`
    (P, num_params) rolled out `horizon` steps inside `model` from each of the R start latents
    z0 (R, Z), every candidate from the same starts with the same draws (a generation's fair
    comparison), C's actions mapped as WorldModelController's (`action_clip`). The draws come
    from `seed`; the sum over a rollout's steps stops after the
    first whose done probability exceeds `done_threshold`. A float32 M runs on the register
    tile (``kernels.dream.dream_kernel``), a float64 one element by element; the returns do not
    depend on the thread count."""
    dtype = model.dtype
    z0 = as_array(np.atleast_2d(z0), "z0", (None, model.z_dim), dtype)
    n = num_params(model.z_dim, model.hidden, model.act_dim)
    population = as_array(np.atleast_2d(population), "population", (None, n), dtype)
    horizon = check_positive_int(horizon, "horizon")
    temperature = check_finite_float(temperature, "temperature", 0)
    done_threshold = check_finite_float(done_threshold, "done_threshold", 0, 1)
    low = as_array(action_low, "action_low", (model.act_dim,), dtype)
    high = as_array(action_high, "action_high", (model.act_dim,), dtype)
    clip = _clip_mask(action_clip, model.act_dim).astype(np.uint8)
    p, r = population.shape[0], z0.shape[0]
    shape = (p, r, horizon, model.z_dim)
    check_bytes(f"dream(population={p}, rollouts={r}, horizon={horizon})",
                {"draws (population x rollouts x horizon x z_dim x 2)":
                 2 * array_bytes(*shape, itemsize=dtype.itemsize)}, "horizon")
    rng = np.random.default_rng([int(seed), 11])
    pick = rng.random(shape, dtype=dtype)
    noise = rng.standard_normal(shape, dtype=dtype)
    returns = np.zeros((p, r), np.float64)
    steps = np.zeros((p, r), np.int64)
    prm = model.params
    if dtype == np.float32:  # on the register tile; float64 (the checks) element by element
        spec = get_spec()
        wg, bg = pack_panels(prm["W"], prm["b"], spec.lanes)
        wh, bh = pack_panels(prm["Wo"], prm["bo"], spec.lanes)
        rows = dream_rows(spec, p * r, numba.get_num_threads())
        dream_kernel(spec)(population, z0, wg, bg, wh, bh, low, high, clip, model.hidden,
                           model.n_mix, pick, noise, temperature, done_threshold, rows,
                           returns, steps)
    else:
        dream_returns(population, z0, prm["W"], prm["b"], prm["Wo"], prm["bo"], low, high,
                      clip, model.n_mix, pick, noise, temperature, done_threshold, returns, steps)
    return returns, steps


class WorldModelAgent:
    """V, M and C acting on frames: each frame is encoded to z (V's mean), C acts on [z, h], and
    M's LSTM steps on [z, a] to carry its hidden state (h, c) (1, H) to the next frame (M's heads
    are not needed to act and are not computed). `reset()` at an episode's start."""

    def __init__(self, vae: Any, mdnrnn: MDNRNN, controller: WorldModelController) -> None:
        if (vae.config.z_size, mdnrnn.hidden, mdnrnn.act_dim) != (
                controller.z_dim, controller.hidden, controller.act_dim) \
                or mdnrnn.z_dim != vae.config.z_size:
            raise ValueError(f"sizes disagree: V's z {vae.config.z_size}, M's (z, hidden, "
                             f"actions) ({mdnrnn.z_dim}, {mdnrnn.hidden}, {mdnrnn.act_dim}), "
                             f"C's ({controller.z_dim}, {controller.hidden}, "
                             f"{controller.act_dim})")
        self.vae, self.mdnrnn, self.controller = vae, mdnrnn, controller
        # one frame at a time on one thread (BLAS's threads made a busy machine's act 100x
        # slower in its worst percentile); a float64 V, as gradient checks use, keeps V.encode
        self._encoder = (FrameEncoder(vae) if isinstance(vae, ConvVAE) and vae.dtype == np.float32
                         else None)
        self._z = np.zeros(controller.z_dim, np.float32)
        self._gates = np.zeros(4 * mdnrnn.hidden, mdnrnn.dtype)
        self.reset()

    def reset(self) -> None:
        self._hc = self.mdnrnn.initial_state(1)
        self._h, self._c = self._hc[0][0], self._hc[1][0]  # the rows the kernel carries

    @property
    def h(self) -> np.ndarray:
        """M's hidden state (1, H), updated in place by `act` (copy it to keep it)."""
        return self._hc[0]

    @h.setter
    def h(self, value: npt.ArrayLike) -> None:
        self._hc[0][...] = as_array(value, "h", (1, self.mdnrnn.hidden), self.mdnrnn.dtype)

    @property
    def c(self) -> np.ndarray:
        """M's cell state (1, H), updated in place by `act` (copy it to keep it)."""
        return self._hc[1]

    @c.setter
    def c(self, value: npt.ArrayLike) -> None:
        self._hc[1][...] = as_array(value, "c", (1, self.mdnrnn.hidden), self.mdnrnn.dtype)

    def act(self, frame: npt.ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """The action (A,) float32 for one (size, size, 3) frame: a new array, or `out` (a
        contiguous float32 (A,) array) filled in place. With `out`, a float32 V and a uint8 or
        float32 frame array, a call allocates no NumPy array."""
        ctrl = self.controller
        if out is None:
            out = np.empty(ctrl.act_dim, np.float32)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.float32
              or out.shape != (ctrl.act_dim,) or not out.flags.c_contiguous
              or not out.flags.writeable):
            raise ValueError(f"out: expected a writeable contiguous float32 array of shape "
                             f"({ctrl.act_dim},)")
        if self._encoder is not None:
            z = self._encoder.encode(frame, self._z)
        else:
            z, _ = self.vae.encode(np.asarray(frame)[None])
            z = z[0]
        p = self.mdnrnn.params
        agent_step(ctrl.params, z, ctrl.action_low, ctrl.action_high, ctrl.action_clip, p["W"],
                   p["b"], self._h, self._c, self._gates, out)
        return out
