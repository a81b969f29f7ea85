"""Input checks shared by the public API: clear ValueErrors that name the field."""
from __future__ import annotations

import numpy as np


def as_array(x, name: str, shape: tuple, dtype=np.float32, finite: bool = True) -> np.ndarray:
    """Cast `x` to `dtype` and check its shape; `None` in `shape` matches any size.

    Raises ValueError naming `name`, the expected and the found shape, or the cast failure.
    """
    try:
        arr = np.asarray(x)
        if arr.dtype.kind in "OUSV":
            raise TypeError(f"dtype {arr.dtype}")
        arr = arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be cast to {np.dtype(dtype).name} ({exc})") from exc
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise ValueError(f"{name}: expected shape {expected}, got {arr.shape}")
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
