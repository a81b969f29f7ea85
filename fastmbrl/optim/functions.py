"""Standard test functions of black-box optimisation, one candidate (1-D array) at a time;
each has its minimum 0 (at 0, or at 1 for Rosenbrock)."""
from __future__ import annotations

import numpy as np


def sphere(x: np.ndarray) -> float:
    return float(x @ x)


def ellipsoid(x: np.ndarray, condition: float = 1e6) -> float:
    """Axis-parallel ellipsoid: coordinate i weighted by condition^(i/(n-1))."""
    n = len(x)
    scale = condition ** (np.arange(n) / (n - 1)) if n > 1 else np.ones(1)
    return float(np.sum(scale * x * x))


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


FUNCTIONS = {"sphere": sphere, "ellipsoid": ellipsoid, "rosenbrock": rosenbrock}
