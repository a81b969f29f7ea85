"""A fixed-capacity transition memory: preallocated arrays, FIFO overwrite, seeded sampling."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

import numpy.typing as npt

import numpy as np

from fastmbrl._validate import StrPath, as_array, check_positive_int
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.limits import ResourceLimitError, check_bytes

_KIND = "replay_buffer"
_VERSION = 1


# the functional form keeps the field types evaluated (the fields' __new__ cannot resolve strings)
Batch = NamedTuple("Batch", [("obs", np.ndarray), ("action", np.ndarray), ("next_obs", np.ndarray),
                             ("reward", np.ndarray), ("terminated", np.ndarray),
                             ("truncated", np.ndarray)])
Batch.__doc__ = """Rows of a buffer: obs and next_obs (N, obs_dim), action (N, act_dim), reward (N,)
float32; terminated and truncated (N,) bool."""


FIELDS = Batch._fields


def buffer_bytes(obs_dim: int, act_dim: int, capacity: int) -> int:
    """Bytes of a buffer's arrays: obs, next_obs, action, reward (float32), two flags."""
    return capacity * (4 * (2 * obs_dim + act_dim + 1) + 2)


def _flags(x: npt.ArrayLike, name: str, shape: tuple) -> np.ndarray:
    """Booleans, or numbers that are exactly 0 or 1 (2.5 or NaN is not a flag)."""
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{name}: expected booleans (or 0/1), got {arr.dtype}")
        bad = (arr != 0) & (arr != 1)  # NaN too
        if bad.any():
            raise ValueError(f"{name}: expected booleans (or 0/1), got {arr[bad].flat[0]!r}")
    return as_array(arr, name, shape, dtype=np.bool_)


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


class ReplayBuffer:
    """Transitions (obs, action, next_obs, reward, terminated, truncated) in preallocated arrays.

    When full, a new transition overwrites the oldest. The public field properties (`obs`, ...)
    are views of the stored rows in slot order, which is insertion order until the buffer wraps;
    `indices()` gives the slots from oldest to newest.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int = 1_000_000) -> None:
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.act_dim = check_positive_int(act_dim, "act_dim")
        self.capacity = check_positive_int(capacity, "capacity")
        c = self.capacity
        check_bytes(f"ReplayBuffer(obs_dim={self.obs_dim}, act_dim={self.act_dim}, capacity={c})",
                    buffer_bytes(self.obs_dim, self.act_dim, c), "capacity")
        self._data = Batch(
            np.zeros((c, self.obs_dim), np.float32),
            np.zeros((c, self.act_dim), np.float32),
            np.zeros((c, self.obs_dim), np.float32),
            np.zeros(c, np.float32),
            np.zeros(c, np.bool_),
            np.zeros(c, np.bool_),
        )
        self._size = 0
        self._pos = 0  # next slot to write
        self.total_added = 0

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (f"ReplayBuffer(obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
                f"capacity={self.capacity}, size={self._size})")

    # Views of the stored rows (slot order).
    @property
    def obs(self) -> npt.NDArray[np.float32]:
        return self._data.obs[: self._size]

    @property
    def action(self) -> npt.NDArray[np.float32]:
        return self._data.action[: self._size]

    @property
    def next_obs(self) -> npt.NDArray[np.float32]:
        return self._data.next_obs[: self._size]

    @property
    def reward(self) -> npt.NDArray[np.float32]:
        return self._data.reward[: self._size]

    @property
    def terminated(self) -> npt.NDArray[np.bool_]:
        return self._data.terminated[: self._size]

    @property
    def truncated(self) -> npt.NDArray[np.bool_]:
        return self._data.truncated[: self._size]

    def _rows(self, batched: bool, obs: npt.ArrayLike, action: npt.ArrayLike,
              next_obs: npt.ArrayLike, reward: npt.ArrayLike, terminated: npt.ArrayLike | None,
              truncated: npt.ArrayLike | None) -> Batch:
        """Validated, cast copies of the rows (one transition without the row axis unless batched)."""
        obs = as_array(obs, "obs", (None, self.obs_dim) if batched else (self.obs_dim,))
        lead = (obs.shape[0],) if batched else ()

        def flag(x: npt.ArrayLike | None, name: str) -> np.ndarray:
            return np.zeros(lead, np.bool_) if x is None else _flags(x, name, lead)

        return Batch(
            obs,
            as_array(action, "action", (*lead, self.act_dim)),
            as_array(next_obs, "next_obs", (*lead, self.obs_dim)),
            as_array(reward, "reward", lead),
            flag(terminated, "terminated"),
            flag(truncated, "truncated"),
        )

    def add(self, obs: npt.ArrayLike, action: npt.ArrayLike, next_obs: npt.ArrayLike,
            reward: float, terminated: bool = False, truncated: bool = False) -> None:
        """Store one transition; every field is checked before anything is written."""
        row = self._rows(False, obs, action, next_obs, reward, terminated, truncated)
        for dst, src in zip(self._data, row):
            dst[self._pos] = src
        self._pos = (self._pos + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self.total_added += 1

    def add_batch(self, obs: npt.ArrayLike, action: npt.ArrayLike, next_obs: npt.ArrayLike,
                  reward: npt.ArrayLike, terminated: npt.ArrayLike | None = None,
                  truncated: npt.ArrayLike | None = None) -> None:
        """Store N transitions in order, exactly as N calls of `add` would (flags default to
        False); all rows are checked before anything is written."""
        rows = self._rows(True, obs, action, next_obs, reward, terminated, truncated)
        n = rows.obs.shape[0]
        keep = min(n, self.capacity)  # earlier rows would be overwritten within this batch
        slots = (self._pos + np.arange(n - keep, n)) % self.capacity
        for dst, src in zip(self._data, rows):
            dst[slots] = src[n - keep:]
        self._pos = (self._pos + n) % self.capacity
        self._size = min(self._size + n, self.capacity)
        self.total_added += n

    def indices(self) -> np.ndarray:
        """Stored slots from the oldest transition to the newest."""
        if self._size < self.capacity:
            return np.arange(self._size)
        return (self._pos + np.arange(self.capacity)) % self.capacity

    def trajectories(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The stored transitions, oldest first, cut into (obs (T + 1, obs_dim), actions
        (T, act_dim)) stretches: a stretch ends at a terminated or truncated transition, or
        where next_obs differs from the following row's obs."""
        idx = self.indices()
        if idx.size == 0:
            return []
        obs, nxt, act = self._data.obs[idx], self._data.next_obs[idx], self._data.action[idx]
        end = self._data.terminated[idx] | self._data.truncated[idx]
        end[:-1] |= (nxt[:-1] != obs[1:]).any(axis=1)
        end[-1] = True
        out, start = [], 0
        for stop in (np.flatnonzero(end) + 1).tolist():
            out.append((np.concatenate([obs[start:stop], nxt[stop - 1:stop]]), act[start:stop]))
            start = stop
        return out

    def get(self, idx: npt.ArrayLike) -> Batch:
        """Copies of the rows at slots `idx` (an integer array)."""
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu" or (idx.size and (idx.min() < 0 or idx.max() >= self._size)):
            raise ValueError(f"idx: expected integer slots in [0, {self._size})")
        return Batch(*(f[idx] for f in self._data))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """`batch_size` transitions drawn uniformly with replacement using `rng`."""
        batch_size = check_positive_int(batch_size, "batch_size")
        rng = _check_rng(rng)
        if self._size == 0:
            raise ValueError("sample: the buffer is empty")
        return self.get(rng.integers(0, self._size, size=batch_size))

    def split(self, validation_ratio: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(train slots, validation slots), fixed by `seed`.

        Each slot is assigned once from a seeded draw, so a transition keeps its side as the
        buffer grows (validation data never leaks into training across refits). With a ratio
        > 0 and at least two rows, both sides get at least one row.
        """
        ratio = float(validation_ratio)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"validation_ratio: expected a number in [0, 1), got {validation_ratio!r}")
        n = self._size
        is_val = np.random.default_rng(seed).random(n) < ratio
        if ratio > 0 and n >= 2:
            if not is_val.any():
                is_val[n - 1] = True
            elif is_val.all():
                is_val[0] = False
        slots = np.arange(n)
        return slots[~is_val], slots[is_val]

    def minibatches(self, batch_size: int, rng: np.random.Generator,
                    indices: npt.ArrayLike | None = None,
                    drop_last: bool = False) -> Iterator[Batch]:
        """One epoch over `indices` (default: every row) in shuffled minibatches."""
        batch_size = check_positive_int(batch_size, "batch_size")
        rng = _check_rng(rng)
        idx = np.arange(self._size) if indices is None else np.asarray(indices)
        order = idx[rng.permutation(idx.size)]
        stop = order.size - order.size % batch_size if drop_last else order.size
        for start in range(0, stop, batch_size):
            yield self.get(order[start:start + batch_size])

    def save(self, path: StrPath) -> Path:
        """Write the buffer to `path` (.npz, no pickle); returns the path written."""
        header = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "capacity": self.capacity,
                  "size": self._size, "pos": self._pos, "total_added": self.total_added}
        arrays = {name: f[: self._size] for name, f in zip(FIELDS, self._data)}
        return save_npz(path, _KIND, _VERSION, header, arrays)

    @classmethod
    def load(cls, path: StrPath) -> ReplayBuffer:
        """Read a buffer written by `save`; another kind, version or a damaged file raises FormatError."""
        header, arrays = load_npz(path, _KIND, (_VERSION,))
        sizes = {}
        for key in ("obs_dim", "act_dim", "capacity", "size", "pos", "total_added"):
            value = header.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FormatError(f"{path}: header field {key!r} must be a non-negative integer, "
                                  f"got {value!r}")
            sizes[key] = value
        size, pos, capacity = sizes["size"], sizes["pos"], sizes["capacity"]
        if not (0 <= size <= capacity and 0 <= pos < capacity and sizes["total_added"] >= size):
            raise FormatError(f"{path}: inconsistent size/pos in the header")
        # the header's sizes must be those of the arrays before a buffer is sized from them
        unknown = sorted(set(arrays) - set(FIELDS))
        if unknown:
            raise FormatError(f"{path}: unknown arrays {unknown} (a buffer holds {list(FIELDS)})")
        width = {"obs": "obs_dim", "action": "act_dim", "next_obs": "obs_dim"}
        dtypes = dict(zip(FIELDS, (np.float32,) * 4 + (np.bool_,) * 2))
        for name in FIELDS:
            src, dim = arrays.get(name), width.get(name)
            expected = (size, sizes[dim]) if dim else (size,)
            if src is None or src.shape != expected or src.dtype != dtypes[name]:
                found = None if src is None else f"{src.dtype} {src.shape}"
                fields = f"'size' and {dim!r}" if dim else "'size'"
                raise FormatError(f"{path}: array {name!r} should be {np.dtype(dtypes[name])} "
                                  f"{expected} by the header's {fields}, found {found}")
            if src.dtype.kind == "f" and not np.isfinite(src).all():  # as add() refuses them
                raise FormatError(f"{path}: array {name!r} holds NaN or infinite values")
        try:
            buf = cls(sizes["obs_dim"], sizes["act_dim"], capacity)
        except ResourceLimitError as exc:
            raise ResourceLimitError(f"{path}: {exc}") from None
        except ValueError as exc:
            raise FormatError(f"{path}: bad replay buffer header ({exc})") from exc
        for name, dst in zip(FIELDS, buf._data):
            dst[:size] = arrays[name]
        buf._size, buf._pos, buf.total_added = size, pos, sizes["total_added"]
        return buf
