"""Input checks shared by the public API: clear ValueErrors that name the field."""
from __future__ import annotations

import math
import os
from typing import Union

import numpy as np
import numpy.typing as npt

#: a file name: a str or a path object
StrPath = Union[str, "os.PathLike[str]"]
#: float32 arrays, what the models and planners compute in
F32Array = npt.NDArray[np.float32]


def as_array(x, name: str, shape: tuple, dtype=np.float32, finite: bool = True) -> np.ndarray:
    """Cast `x` to `dtype` and check its shape; `None` in `shape` matches any size.

    Raises ValueError naming `name`, the expected and the found shape, or the cast failure.
    """
    try:
        arr = np.asarray(x)
        if arr.dtype.kind in "OUSV":
            raise TypeError(f"dtype {arr.dtype}")
        complex_in = arr.dtype.kind == "c" and np.dtype(dtype).kind != "c"
        if not complex_in:
            arr = arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be cast to {np.dtype(dtype).name} ({exc})") from exc
    if complex_in:  # NumPy would drop the imaginary part with only a warning
        raise ValueError(f"{name}: complex values are not accepted, got {arr.dtype}")
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


def _interval(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_finite_float(value, name: str, low=None, high=None, *, low_open=False,
                       high_open=False) -> float:
    """`value` as a float if it is a finite real number (not a bool) within [low, high]
    (an end excluded by `low_open`/`high_open`; None: unbounded); else a ValueError naming
    `name` and the accepted range."""
    ok = (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
          and (low is None or (value > low if low_open else value >= low))
          and (high is None or (value < high if high_open else value <= high)))
    if not ok:
        where = _interval(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number{' ' + where if where else ''}, "
                         f"got {value!r}")
    return float(value)
