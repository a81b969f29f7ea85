"""CMA-ES, the covariance matrix adaptation evolution strategy, with an ask/tell interface.

Written from the equations of N. Hansen, "The CMA Evolution Strategy: A Tutorial"
(arXiv:1604.00772): sampling x = m + σ B D z, weighted recombination of the μ best,
cumulative step-size adaptation (CSA) on the conjugate path p_σ, the rank-one update on the
evolution path p_c (with the h_σ stall correction), the rank-μ update on the selected steps
(active by default: the worse half of the population gets the tutorial's negative weights), and
a lazy eigendecomposition of C. Everything is float64.

Minimises. A NaN or +inf fitness ranks after every finite one (a candidate the objective could
not score is the worst candidate); a generation made only of NaN, or a -inf, is refused.
"""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from fastmbrl._validate import StrPath
from fastmbrl.errors import FormatError, OptimizerError
from fastmbrl.io import load_npz, save_npz

KIND = "cmaes_state"
VERSION = 1


@dataclass(frozen=True)
class CMAResult:
    """The best candidate told so far and the counters (`CMAES.result`)."""
    xbest: np.ndarray | None  # None before the first tell
    fbest: float              # +inf before the first tell
    evaluations: int          # fitnesses told
    iterations: int           # generations told
    mean: np.ndarray          # the distribution's mean, often better than xbest on noisy f
    stds: np.ndarray          # σ √diag(C), the per-coordinate standard deviations


def _fail(msg: str) -> OptimizerError:
    return OptimizerError(msg)


def _vector(x, name: str) -> np.ndarray:
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _fail(f"{name}: cannot be read as an array of floats ({exc})") from None
    if arr.ndim != 1 or arr.size == 0:
        raise _fail(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise _fail(f"{name}: contains NaN or infinite values")
    return arr


def _real(value, name: str, positive: bool = True, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok = (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
          and (not positive or value > 0))
    if not ok:
        what = "a finite number > 0" if positive else "a finite number"
        raise _fail(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")
    return float(value)


def _count(value, name: str, low: int, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise _fail(f"{name} must be an integer >= {low}{' or None' if allow_none else ''}, "
                    f"got {value!r}")
    return int(value)


def default_popsize(n: int) -> int:
    """λ = 4 + ⌊3 ln n⌋."""
    return 4 + int(math.floor(3 * math.log(n)))


class CMAES:
    """CMA-ES minimising a function of n real variables.

    `CMAES(x0, sigma0)` starts from the mean `x0` with step size `sigma0` (C = I: the initial
    search spreads σ₀ in every coordinate, so scale the variables to similar ranges). Options:

    - `popsize`: λ candidates per generation (default 4 + ⌊3 ln n⌋; at least 2); the μ = ⌊λ/2⌋
      best are recombined with weights ∝ ln((λ+1)/2) − ln i.
    - `active`: negative weights for the worse half in the rank-μ update (default True, as
      in the tutorial; it cuts the evaluations on ill-conditioned functions by about a
      quarter). False: positive weights only, the original rank-μ update.
    - `seed`: the sampler's seed (an int >= 0; None: fresh entropy). Same seed, same run.
    - stopping (`stop()`): `maxiter` (default 100 + 150 (n+3)²/√λ generations), `maxfevals`
      (default none), `ftarget` (stop once a fitness <= ftarget is told; default none),
      `tolfun` (1e-11: the best fitnesses of the last 10 + ⌈30n/λ⌉ generations and all of the
      last generation lie within it), `tolx` (default 1e-12 σ₀: every σ√C_ii and every
      |σ p_c,i| is below it), `tolcondition` (1e14: the condition number of C).
      Always on: `noeffectaxis` (a 0.1-σ step along any principal axis leaves m unchanged)
      and `noeffectcoord` (a 0.2-σ step in any coordinate leaves m unchanged).

    Loop: `while not es.stop(): X = es.ask(); es.tell(X, [f(x) for x in X])`, or `es.optimize(f)`.
    `save(path)` / `CMAES.load(path)` keep the full state (an .npz, no pickle), so a resumed
    run continues exactly as one never interrupted.
    """

    def __init__(self, x0: npt.ArrayLike, sigma0: float, popsize: int | None = None, seed: int | None = None, *,
                 maxiter: int | None = None, maxfevals: int | None = None,
                 ftarget: float | None = None, tolfun: float = 1e-11,
                 tolx: float | None = None, tolcondition: float = 1e14,
                 active: bool = True) -> None:
        x0 = _vector(x0, "x0")
        n = x0.size
        sigma0 = _real(sigma0, "sigma0")
        lam = _count(popsize, "popsize", 2)
        lam = default_popsize(n) if lam is None else lam
        seed = _count(seed, "seed", 0)
        self.options: dict[str, Any] = {
            "popsize": lam,
            "seed": seed,
            "maxiter": _count(maxiter, "maxiter", 1),
            "maxfevals": _count(maxfevals, "maxfevals", 1),
            "ftarget": _real(ftarget, "ftarget", positive=False, allow_none=True),
            "tolfun": _real(tolfun, "tolfun"),
            "tolx": _real(tolx, "tolx", allow_none=True),
            "tolcondition": _real(tolcondition, "tolcondition"),
            "active": active,
        }
        if not isinstance(active, bool):
            raise _fail(f"active must be True or False, got {active!r}")
        if self.options["tolcondition"] <= 1:
            raise _fail(f"tolcondition must be > 1, got {tolcondition!r}")
        if self.options["maxiter"] is None:
            self.options["maxiter"] = int(100 + 150 * (n + 3) ** 2 / math.sqrt(lam))
        if self.options["tolx"] is None:
            self.options["tolx"] = 1e-12 * sigma0
        self.n = n
        self.sigma0 = sigma0
        self.x0 = x0
        self._set_parameters()
        # the state
        self.rng = np.random.default_rng(seed)
        self.mean = x0.copy()
        self.sigma = sigma0
        self.C = np.eye(n)
        self.B = np.eye(n)
        self.D = np.ones(n)          # square roots of C's eigenvalues
        self.ps = np.zeros(n)
        self.pc = np.zeros(n)
        self.evaluations = 0
        self.iterations = 0
        self.eigen_evaluations = 0   # evaluations at the last eigendecomposition
        self.xbest: np.ndarray | None = None
        self.fbest = math.inf
        self.best_history = np.empty(0)  # best fitness per generation, the last few
        self.last_fitnesses = np.empty(0)

    # -- strategy parameters (fixed by n and λ) -------------------------------------------------
    def _set_parameters(self) -> None:
        n, lam = self.n, self.options["popsize"]
        mu = lam // 2
        w = math.log((lam + 1) / 2) - np.log(np.arange(1, lam + 1))  # w'_i, i = 1..λ
        pos, neg = w[:mu], w[mu:]
        self.mu = mu
        self.mueff = float(pos.sum() ** 2 / np.sum(pos ** 2))
        mueff = self.mueff
        self.cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
        self.cs = (mueff + 2) / (n + mueff + 5)
        self.c1 = 2 / ((n + 1.3) ** 2 + mueff)
        self.cmu = min(1 - self.c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
        self.damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + self.cs
        weights = np.zeros(lam)
        weights[:mu] = pos / pos.sum()
        # active CMA: the worse half gets negative weights, scaled so that the rank-μ update
        # cannot make C indefinite (Hansen's α_μ⁻, α_μeff⁻, α_posdef⁻)
        if self.options["active"] and neg.size and neg.sum() < 0 and self.cmu > 0:
            neg = neg[neg < 0]
            mueff_neg = float(neg.sum() ** 2 / np.sum(neg ** 2))
            alpha = min(1 + self.c1 / self.cmu, 1 + 2 * mueff_neg / (mueff + 2),
                        (1 - self.c1 - self.cmu) / (n * self.cmu))
            weights[lam - neg.size:] = alpha * neg / np.abs(neg).sum()
        self.weights = weights
        self.chin = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))  # E||N(0, I)||
        self.history_length = 10 + math.ceil(30 * n / lam)
        # refresh B and D when C has moved enough since (Hansen: every λ/(c1+cμ)/n/10 f-evals)
        self.eigen_gap = lam / (self.c1 + self.cmu) / n / 10

    @property
    def popsize(self) -> int:
        return self.options["popsize"]

    # -- ask/tell --------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        """λ new candidates, a (popsize, n) float64 array (a new array each call)."""
        z = self.rng.standard_normal((self.popsize, self.n))
        return self.mean + self.sigma * ((z * self.D) @ self.B.T)

    def tell(self, candidates: npt.ArrayLike, fitnesses: npt.ArrayLike) -> None:
        """Update the distribution from `candidates` ((popsize, n), usually what ask returned)
        and their `fitnesses` ((popsize,), lower is better). Nothing changes if either is bad."""
        lam, n = self.popsize, self.n
        try:
            X = np.array(candidates, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise _fail(f"candidates: cannot be read as an array of floats ({exc})") from None
        if X.shape != (lam, n):
            raise _fail(f"candidates: expected shape ({lam}, {n}) (popsize, n), got {X.shape}")
        if not np.isfinite(X).all():
            raise _fail("candidates: contains NaN or infinite values")
        try:
            f = np.array(fitnesses, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise _fail(f"fitnesses: cannot be read as an array of floats ({exc})") from None
        if f.shape != (lam,):
            raise _fail(f"fitnesses: expected shape ({lam},) (one per candidate), got {f.shape}")
        if np.isneginf(f).any():
            raise _fail("fitnesses: -inf is not a fitness a minimiser can rank")
        if np.isnan(f).all():
            raise _fail("fitnesses: every fitness is NaN; the objective scored no candidate")

        # NaN ranks last (after +inf); a stable sort keeps ties in candidate order
        order = np.argsort(np.where(np.isnan(f), np.inf, f), kind="stable")
        fsorted = f[order]
        active = bool(self.weights[self.mu:].any())
        chosen = order if active else order[:self.mu]
        y = (X[chosen] - self.mean) / self.sigma
        yw = self.weights[:self.mu] @ y[:self.mu]
        wrank = self.weights[:y.shape[0]]
        if active:
            # a negative weight acts on y_i rescaled to the expected length of a step, so a
            # far-off bad candidate cannot shrink C by much (Hansen's w°)
            inv_sqrt_y = ((y @ self.B) / self.D) @ self.B.T  # rows C^(-1/2) y_i
            norms2 = np.sum(inv_sqrt_y ** 2, axis=1)
            wrank = np.where(wrank < 0, wrank * n / np.maximum(norms2, 1e-300), wrank)

        evaluations = self.evaluations + lam
        iterations = self.iterations + 1
        mean = self.mean + self.sigma * yw
        # C^(-1/2) yw = B D^-1 B^T yw
        ps = ((1 - self.cs) * self.ps
              + math.sqrt(self.cs * (2 - self.cs) * self.mueff) * (self.B @ ((self.B.T @ yw) / self.D)))
        ps_norm = float(np.linalg.norm(ps))
        # h_σ: stall the rank-one path while ||p_σ|| is large (σ is growing fast)
        hsig = (ps_norm / math.sqrt(1 - (1 - self.cs) ** (2 * iterations)) / self.chin
                < 1.4 + 2 / (n + 1))
        pc = (1 - self.cc) * self.pc
        if hsig:
            pc += math.sqrt(self.cc * (2 - self.cc) * self.mueff) * yw
        c1, cmu = self.c1, self.cmu
        decay = (1 - c1 - cmu * float(self.weights.sum())
                 + (0.0 if hsig else c1 * self.cc * (2 - self.cc)))
        C = decay * self.C + c1 * np.outer(pc, pc) + cmu * ((y.T * wrank) @ y)
        sigma = self.sigma * math.exp((self.cs / self.damps) * (ps_norm / self.chin - 1))
        # flat fitness: best and the ⌈0.7λ⌉-th tie, selection sees nothing; widen the search
        if fsorted[0] == fsorted[math.ceil(0.7 * lam) - 1]:
            sigma *= math.exp(0.2 + self.cs / self.damps)
        if not (math.isfinite(sigma) and sigma > 0 and np.isfinite(C).all()):
            raise _fail(f"the update diverged (sigma {sigma!r}); the state is left as it was")

        B, D, eigen_evaluations = self.B, self.D, self.eigen_evaluations
        if evaluations - eigen_evaluations > self.eigen_gap:
            C, B, D = _eigen(C)
            eigen_evaluations = evaluations

        # commit
        self.mean, self.ps, self.pc, self.C, self.sigma = mean, ps, pc, C, sigma
        self.B, self.D, self.eigen_evaluations = B, D, eigen_evaluations
        self.evaluations, self.iterations = evaluations, iterations
        if fsorted[0] < self.fbest:
            self.fbest = float(fsorted[0])
            self.xbest = X[order[0]].copy()
        self.best_history = np.append(self.best_history, fsorted[0])[-self.history_length:]
        self.last_fitnesses = fsorted

    # -- stopping --------------------------------------------------------------------------------
    def stop(self) -> dict[str, float]:
        """The stopping criteria met now, {name: its threshold}; empty (falsy) to go on."""
        o = self.options
        out: dict[str, float] = {}
        if self.iterations >= o["maxiter"]:
            out["maxiter"] = o["maxiter"]
        if o["maxfevals"] is not None and self.evaluations >= o["maxfevals"]:
            out["maxfevals"] = o["maxfevals"]
        if self.iterations == 0:
            return out
        if o["ftarget"] is not None and self.fbest <= o["ftarget"]:
            out["ftarget"] = o["ftarget"]
        hist = self.best_history
        if (hist.size >= self.history_length and np.isfinite(self.last_fitnesses).all()
                and np.isfinite(hist).all()
                and max(hist.max(), self.last_fitnesses.max())
                - min(hist.min(), self.last_fitnesses.min()) < o["tolfun"]):
            out["tolfun"] = o["tolfun"]
        sd = self.sigma * np.sqrt(np.diag(self.C))
        if (sd < o["tolx"]).all() and (np.abs(self.sigma * self.pc) < o["tolx"]).all():
            out["tolx"] = o["tolx"]
        d2max, d2min = float(self.D.max()) ** 2, float(self.D.min()) ** 2
        if d2min <= 0 or d2max / d2min > o["tolcondition"]:
            out["tolcondition"] = o["tolcondition"]
        # columns of B scaled by 0.1 σ D_i: does any step along an axis move the mean at all?
        steps = 0.1 * self.sigma * self.B * self.D
        if ((self.mean[:, None] + steps) == self.mean[:, None]).all(axis=0).any():
            out["noeffectaxis"] = 0.1
        if ((self.mean + 0.2 * sd) == self.mean).any():
            out["noeffectcoord"] = 0.2
        return out

    @property
    def result(self) -> CMAResult:
        return CMAResult(None if self.xbest is None else self.xbest.copy(), self.fbest,
                         self.evaluations, self.iterations, self.mean.copy(),
                         self.sigma * np.sqrt(np.diag(self.C)))

    def optimize(self, objective: Callable[[np.ndarray], float],
                 iterations: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> CMAResult:
        """ask/tell until `stop()` (or `iterations` more generations); `objective(x)` scores
        one candidate; `progress(done, total)` hears of each generation."""
        iterations = _count(iterations, "iterations", 1)
        total = iterations if iterations is not None else self.options["maxiter"] - self.iterations
        done = 0
        while not self.stop() and (iterations is None or done < iterations):
            X = self.ask()
            self.tell(X, [objective(x) for x in X])
            done += 1
            if progress is not None:
                progress(done, max(total, done))
        return self.result

    # -- save/resume -----------------------------------------------------------------------------
    _ARRAYS = ("x0", "mean", "C", "B", "D", "ps", "pc", "best_history", "last_fitnesses")

    def save(self, path: StrPath) -> Path:
        """The full state to an .npz (kind `cmaes_state`); `CMAES.load` continues from it
        bit for bit (the sampler's state included)."""
        header = {"options": self.options, "n": self.n, "sigma0": self.sigma0,
                  "sigma": self.sigma, "evaluations": self.evaluations,
                  "iterations": self.iterations, "eigen_evaluations": self.eigen_evaluations,
                  "rng": self.rng.bit_generator.state}
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        arrays["fbest"] = np.array(self.fbest)  # +inf before the first tell: not JSON
        if self.xbest is not None:
            arrays["xbest"] = self.xbest
        return save_npz(path, KIND, VERSION, header, arrays)

    @classmethod
    def load(cls, path: StrPath) -> "CMAES":
        header, arrays = load_npz(path, KIND, (VERSION,))
        try:
            opts = dict(header["options"])
            es = cls(arrays["x0"], header["sigma0"], **opts)
            n = es.n
            shapes = {"mean": (n,), "C": (n, n), "B": (n, n), "D": (n,), "ps": (n,),
                      "pc": (n,), "fbest": ()}
            for k, shape in shapes.items():
                if arrays[k].shape != shape or arrays[k].dtype != np.float64:
                    raise ValueError(f"array {k} has shape {arrays[k].shape} "
                                     f"({arrays[k].dtype}), expected {shape} float64")
            for k in cls._ARRAYS:
                setattr(es, k, np.array(arrays[k], dtype=np.float64))
            es.sigma = _real(header["sigma"], "sigma")
            es.evaluations = _count(header["evaluations"], "evaluations", 0, False)
            es.iterations = _count(header["iterations"], "iterations", 0, False)
            es.eigen_evaluations = _count(header["eigen_evaluations"], "eigen_evaluations", 0,
                                          False)
            es.fbest = float(arrays["fbest"])
            xbest = arrays.get("xbest")
            if xbest is not None and xbest.shape != (n,):
                raise ValueError(f"array xbest has shape {xbest.shape}, expected ({n},)")
            es.xbest = None if xbest is None else np.array(xbest, dtype=np.float64)
            es.rng.bit_generator.state = header["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path} is not a valid CMA-ES state: {exc}") from None
        return es


def _eigen(C: np.ndarray):
    """Symmetrised C, its eigenvectors B and the square roots D of its eigenvalues."""
    C = np.triu(C) + np.triu(C, 1).T  # rounding makes C drift from symmetric
    d2, B = np.linalg.eigh(C)
    # rounding can leave an eigenvalue at or below zero once C is ill-conditioned;
    # tolcondition stops the run there, the floor keeps the sampler defined until then
    d2 = np.maximum(d2, d2.max() * 1e-300 if d2.max() > 0 else 1e-300)
    return C, B, np.sqrt(d2)
