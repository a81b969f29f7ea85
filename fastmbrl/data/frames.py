"""Episodes of pixel observations (World Models' data): a preallocated store in memory and its
chunked form on disk.

An episode of T steps is T + 1 frames (the reset observation and one after each step) and T
actions, rewards and terminated/truncated flags; only its last step may carry a flag. The store
keeps every episode's frames end to end in one preallocated uint8 array (capacity in frames,
checked against fastmbrl.limits before it is allocated: 12 KiB a 64x64x3 frame, so 100k frames
are 1.15 GiB) and the steps likewise, with the episodes' ids and lengths.

On disk a store is a directory: `store.json` (frame shape, action size, what collected it) and
`chunk-<first>-<last>.npz` files, each holding the consecutive episodes first..last (ids). A
chunk is written atomically and holds whole episodes, so a collection that dies loses at most
the episode it was in (see fastmbrl.data.collect). Chunks, not one file: a 100k-frame store
is 1.2 GB, which one .npz would have to rewrite whole to append an episode, and load whole
into memory twice. Format: docs/formats.md, "Frame stores".
"""
from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import numpy.typing as npt
from numpy.lib import format as npy

from fastmbrl._validate import StrPath, as_array, check_positive_int
from fastmbrl.data.buffer import _check_rng, _flags
from fastmbrl.errors import FastMBRLError, FileError, FormatError, MissingFileError
from fastmbrl.io import load_npz, read_json, save_npz, write_json
from fastmbrl.limits import ResourceLimitError, check_bytes

FRAME_SHAPE = (64, 64, 3)
#: a chunk is closed once it holds this many frames (one CarRacing episode, five Pendulum ones)
CHUNK_FRAMES = 1000
STORE_FILE = "store.json"
_STORE_KIND, _CHUNK_KIND, _VERSION = "frame_store", "frame_chunk", 1
_CHUNK_RE = re.compile(r"chunk-(\d{7})-(\d{7})\.npz")
_ID_LIMIT = 10 ** 7  # ids are written with seven digits


# the functional form keeps the field types evaluated (as buffer.Batch does)
Episode = NamedTuple("Episode", [("frames", np.ndarray), ("actions", np.ndarray),
                                 ("rewards", np.ndarray), ("terminated", np.ndarray),
                                 ("truncated", np.ndarray)])
Episode.__doc__ = """One episode: frames (T + 1, H, W, C) uint8, actions (T, A) float32, rewards
(T,) float32, terminated and truncated (T,) bool."""

Sequences = NamedTuple("Sequences", [("frames", Optional[np.ndarray]), ("actions", np.ndarray),
                                     ("rewards", np.ndarray), ("terminated", np.ndarray),
                                     ("truncated", np.ndarray), ("frame_index", np.ndarray),
                                     ("step_index", np.ndarray), ("episode", np.ndarray)])
Sequences.__doc__ = """A batch of B windows of L steps: frames (B, L + 1, H, W, C) uint8 (None when
not asked for), actions (B, L, A), rewards (B, L), terminated and truncated (B, L); frame_index
(B, L + 1) and step_index (B, L) are the rows in the store (to gather, e.g., latents computed
once per frame); episode (B,) the episodes' ids."""


def store_bytes(capacity: int, act_dim: int, frame_shape: Sequence[int] = FRAME_SHAPE
                ) -> dict[str, int]:
    """Bytes a FrameStore of `capacity` frames allocates, by part (steps <= frames)."""
    pixels = int(np.prod(frame_shape))
    return {"frames": capacity * pixels, "actions": capacity * 4 * act_dim,
            "rewards and flags": capacity * 6}


def _frame_shape(shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"frame_shape: expected (height, width, channels), got {shape!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"frame_shape: expected three positive sizes, got {shape!r}")
    return shape


def _check_id(value: Any, name: str = "episode_id") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < _ID_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, {_ID_LIMIT}), got {value!r}")
    return int(value)


def check_episode(frames: npt.ArrayLike, actions: npt.ArrayLike, rewards: npt.ArrayLike,
                  terminated: npt.ArrayLike | None, truncated: npt.ArrayLike | None,
                  frame_shape: tuple, act_dim: int) -> Episode:
    """A validated Episode (copies cast to the stored dtypes); ValueError naming the field."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 pixels, got {frames.dtype} (resize and convert "
                         "with fastmbrl.kernels.resize.resize_area)")
    if frames.ndim != 4 or frames.shape[1:] != tuple(frame_shape):
        raise ValueError(f"frames: expected shape (T + 1, {', '.join(map(str, frame_shape))}), "
                         f"got {frames.shape}")
    steps = frames.shape[0] - 1
    if steps < 1:
        raise ValueError(f"frames: an episode needs at least two frames (one step), got "
                         f"{frames.shape[0]}")
    actions = as_array(actions, "actions", (steps, act_dim))
    rewards = as_array(rewards, "rewards", (steps,))
    flags = [np.zeros(steps, np.bool_) if f is None else _flags(f, name, (steps,))
             for f, name in ((terminated, "terminated"), (truncated, "truncated"))]
    for f, name in zip(flags, ("terminated", "truncated")):
        if f[:-1].any():
            raise ValueError(f"{name}: only an episode's last step may be flagged, found step "
                             f"{int(np.flatnonzero(f[:-1])[0])} of {steps}")
    return Episode(np.array(frames), np.array(actions), np.array(rewards), *flags)


class FrameStore:
    """Episodes of frames in preallocated arrays (capacity counted in frames).

    `frames`, `actions`, `rewards`, `terminated`, `truncated` are views of the stored rows,
    episodes end to end in the order they were added; `episode_ids`, `episode_steps`,
    `frame_starts` and `step_starts` locate each episode.
    """

    def __init__(self, act_dim: int, capacity: int = 100_000,
                 frame_shape: Sequence[int] = FRAME_SHAPE) -> None:
        self.act_dim = check_positive_int(act_dim, "act_dim")
        self.capacity = check_positive_int(capacity, "capacity")
        self.frame_shape = _frame_shape(frame_shape)
        c = self.capacity
        check_bytes(f"FrameStore(act_dim={self.act_dim}, capacity={c}, "
                    f"frame_shape={self.frame_shape})",
                    store_bytes(c, self.act_dim, self.frame_shape), "capacity")
        self._frames = np.zeros((c, *self.frame_shape), np.uint8)
        self._actions = np.zeros((c, self.act_dim), np.float32)
        self._rewards = np.zeros(c, np.float32)
        self._terminated = np.zeros(c, np.bool_)
        self._truncated = np.zeros(c, np.bool_)
        self._ids: list[int] = []
        self._steps: list[int] = []
        self._nframes = 0
        self._nsteps = 0
        self._saved: tuple[Path, set[int]] | None = None  # (directory, ids already there)

    # -- sizes and views ------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self._nframes

    @property
    def num_steps(self) -> int:
        return self._nsteps

    def __len__(self) -> int:
        """The number of episodes."""
        return len(self._ids)

    def __repr__(self) -> str:
        return (f"FrameStore(act_dim={self.act_dim}, capacity={self.capacity}, "
                f"frame_shape={self.frame_shape}, episodes={len(self)}, frames={self._nframes})")

    @property
    def nbytes(self) -> int:
        """Bytes allocated (what fastmbrl.limits was asked for)."""
        return sum(store_bytes(self.capacity, self.act_dim, self.frame_shape).values())

    @property
    def frames(self) -> npt.NDArray[np.uint8]:
        return self._frames[: self._nframes]

    @property
    def actions(self) -> npt.NDArray[np.float32]:
        return self._actions[: self._nsteps]

    @property
    def rewards(self) -> npt.NDArray[np.float32]:
        return self._rewards[: self._nsteps]

    @property
    def terminated(self) -> npt.NDArray[np.bool_]:
        return self._terminated[: self._nsteps]

    @property
    def truncated(self) -> npt.NDArray[np.bool_]:
        return self._truncated[: self._nsteps]

    @property
    def episode_ids(self) -> npt.NDArray[np.int64]:
        return np.array(self._ids, np.int64)

    @property
    def episode_steps(self) -> npt.NDArray[np.int64]:
        """Steps T of each episode (it has T + 1 frames)."""
        return np.array(self._steps, np.int64)

    @property
    def step_starts(self) -> npt.NDArray[np.int64]:
        steps = self.episode_steps
        return np.cumsum(steps) - steps

    @property
    def frame_starts(self) -> npt.NDArray[np.int64]:
        return self.step_starts + np.arange(len(self._ids), dtype=np.int64)

    # -- adding ---------------------------------------------------------------------------------
    def add_episode(self, frames: npt.ArrayLike, actions: npt.ArrayLike, rewards: npt.ArrayLike,
                    terminated: npt.ArrayLike | None = None,
                    truncated: npt.ArrayLike | None = None,
                    episode_id: int | None = None) -> int:
        """Store one episode (see `Episode`); returns its id (by default one more than the
        largest so far). Everything is checked before anything is written."""
        ep = check_episode(frames, actions, rewards, terminated, truncated, self.frame_shape,
                           self.act_dim)
        if episode_id is None:
            episode_id = max(self._ids) + 1 if self._ids else 0
        episode_id = _check_id(episode_id)
        if episode_id in self._ids:
            raise ValueError(f"episode_id {episode_id} is already in the store")
        self._append(ep, episode_id, "add_episode")
        return episode_id

    def _append(self, ep: Episode, episode_id: int, what: str) -> None:
        nf, ns = ep.frames.shape[0], ep.actions.shape[0]
        if self._nframes + nf > self.capacity:
            raise ValueError(f"{what}: the store is full: {self._nframes} of {self.capacity} "
                             f"frames used and the episode has {nf}; make it with a larger "
                             "capacity (FrameStore.load(path, capacity=...) to grow a saved one)")
        f, s = self._nframes, self._nsteps
        self._frames[f:f + nf] = ep.frames
        self._actions[s:s + ns] = ep.actions
        self._rewards[s:s + ns] = ep.rewards
        self._terminated[s:s + ns] = ep.terminated
        self._truncated[s:s + ns] = ep.truncated
        self._ids.append(episode_id)
        self._steps.append(ns)
        self._nframes += nf
        self._nsteps += ns

    def episode(self, index: int) -> Episode:
        """Views of the episode at position `index` (0 is the first added; negative counts
        from the end)."""
        n = len(self._ids)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"episode index {index!r} out of range for {n} episodes")
        i = int(index) % n
        s = int(self.step_starts[i])
        f, t = s + i, self._steps[i]
        return Episode(self._frames[f:f + t + 1], self._actions[s:s + t],
                       self._rewards[s:s + t], self._terminated[s:s + t],
                       self._truncated[s:s + t])

    # -- iterating ------------------------------------------------------------------------------
    def minibatches(self, batch_size: int, rng: np.random.Generator | None = None,
                    drop_last: bool = False) -> Iterator[np.ndarray]:
        """One epoch over every frame in batches (B, H, W, C) uint8 (copies): shuffled with
        `rng`, or in store order when rng is None (e.g. to encode every frame once)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        n = self._nframes
        order = np.arange(n) if rng is None else _check_rng(rng).permutation(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self._frames[order[start:start + batch_size]]

    def windows(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode positions, first step within the episode) of the windows of `length`
        steps that cover every episode at least that long: back to back from its start, and
        one more ending at its last step when the length does not divide it."""
        length = check_positive_int(length, "length")
        pos, start = [], []
        for i, t in enumerate(self._steps):
            if t < length:
                continue
            firsts = list(range(0, t - length + 1, length))
            if t % length:
                firsts.append(t - length)
            pos.extend([i] * len(firsts))
            start.extend(firsts)
        return np.array(pos, np.int64), np.array(start, np.int64)

    def sequences(self, length: int, batch_size: int, rng: np.random.Generator | None = None,
                  drop_last: bool = False, frames: bool = True) -> Iterator[Sequences]:
        """One epoch over the `windows(length)` in batches of `Sequences` (copies): shuffled
        with `rng`, or in store order when rng is None. `frames=False` leaves the frames out
        (a model that reads latents gathers them with `frame_index`)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        pos, first = self.windows(length)
        if pos.size == 0:
            longest = max(self._steps, default=0)
            raise ValueError(f"sequences: no episode has {length} steps (the longest has "
                             f"{longest}); use a shorter length")
        order = np.arange(pos.size) if rng is None else _check_rng(rng).permutation(pos.size)
        stop = order.size - order.size % batch_size if drop_last else order.size
        step0 = self.step_starts[pos] + first
        frame0 = self.frame_starts[pos] + first
        ids = self.episode_ids[pos]
        steps, frame_steps = np.arange(length), np.arange(length + 1)
        for start in range(0, stop, batch_size):
            b = order[start:start + batch_size]
            si = step0[b, None] + steps
            fi = frame0[b, None] + frame_steps
            yield Sequences(self._frames[fi] if frames else None, self._actions[si],
                            self._rewards[si], self._terminated[si], self._truncated[si],
                            fi, si, ids[b])

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: StrPath, meta: Mapping[str, Any] | None = None,
             chunk_frames: int = CHUNK_FRAMES) -> list[Path]:
        """Write the episodes that are not yet in the directory `path` as new chunks (all of
        them the first time; after `load(path)`, those added since). Returns the chunks
        written. `meta` (JSON) describes the data in a new store.json; an existing store.json
        must agree on the frame shape and action size. Episodes of another store with the
        same ids in that directory are refused, not overwritten."""
        chunk_frames = check_positive_int(chunk_frames, "chunk_frames")
        root = Path(path)
        open_store(root, self.frame_shape, self.act_dim, meta, create=True)
        on_disk = set(stored_ids(root))
        mine = self._saved[1] if self._saved and self._saved[0] == root.resolve() else set()
        clash = sorted(on_disk.intersection(self._ids) - mine)
        if clash:
            raise FastMBRLError(f"{root} already holds episodes {clash[:5]} of another store; "
                                "save into another directory")
        todo = [i for i in np.argsort(self._ids, kind="stable").tolist()
                if self._ids[i] not in on_disk]
        written: list[Path] = []
        group: list[int] = []
        frames_in_group = 0
        for i in todo:
            if group and (self._ids[i] != self._ids[group[-1]] + 1 or frames_in_group >= chunk_frames):
                written.append(write_chunk(root, self._ids[group[0]],
                                           [self.episode(j) for j in group]))
                group, frames_in_group = [], 0
            group.append(i)
            frames_in_group += self._steps[i] + 1
        if group:
            written.append(write_chunk(root, self._ids[group[0]], [self.episode(j) for j in group]))
        self._saved = (root.resolve(), on_disk | set(self._ids))
        return written

    @classmethod
    def load(cls, path: StrPath, capacity: int | None = None) -> FrameStore:
        """Read a store directory written by `save` or by fastmbrl.data.collect, with room for
        `capacity` frames (default: exactly what it holds) so that more can be appended and
        saved back. Episodes come in id order."""
        root = Path(path)
        header = read_store(root)
        shape, act_dim = header["frame_shape"], header["act_dim"]
        chunks = list_chunks(root)
        counts = [_chunk_frame_count(p) for _, _, p in chunks]
        total = sum(counts)
        if capacity is None:
            capacity = max(total, 1)
        capacity = check_positive_int(capacity, "capacity")
        if capacity < total:
            raise ValueError(f"capacity={capacity} is smaller than the {total} frames in {root}")
        try:
            store = cls(act_dim, capacity, shape)
        except ResourceLimitError as exc:
            raise ResourceLimitError(f"{root}: {exc}") from None
        for first, last, chunk in chunks:
            for k, ep in enumerate(read_chunk(chunk, shape, act_dim, first, last)):
                if store._nframes + ep.frames.shape[0] > capacity:
                    raise FormatError(f"{chunk}: holds more frames than its frames member "
                                      "header said")
                store._append(ep, first + k, "load")
        store._saved = (root.resolve(), set(store._ids))
        return store


# -- the directory ----------------------------------------------------------------------------------
def chunk_name(first: int, last: int) -> str:
    return f"chunk-{first:07d}-{last:07d}.npz"


def read_store(root: Path) -> dict[str, Any]:
    """store.json of the store directory `root`, checked."""
    if not root.is_dir():
        raise MissingFileError(f"no frame store at {root} (not a directory)")
    path = root / STORE_FILE
    header = read_json(path, f"{root} is not a frame store: it has no {STORE_FILE}")
    if header.get("kind") != _STORE_KIND:
        raise FormatError(f"{path} holds a {header.get('kind')!r}, expected a {_STORE_KIND!r}")
    if header.get("format_version") != _VERSION:
        raise FormatError(f"{path} is {_STORE_KIND} format version "
                          f"{header.get('format_version')}; this fastmbrl reads version {_VERSION}")
    try:
        header["frame_shape"] = _frame_shape(header.get("frame_shape"))
        header["act_dim"] = check_positive_int(header.get("act_dim"), "act_dim")
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from None
    if not isinstance(header.get("meta", {}), dict):
        raise FormatError(f"{path}: 'meta' must be a JSON object")
    return header


def open_store(root: Path, frame_shape: tuple, act_dim: int,
               meta: Mapping[str, Any] | None, create: bool) -> dict[str, Any]:
    """The header of the store at `root`, made (with `meta`) if `create` and it has none.
    An existing store of another frame shape or action size, or with other non-empty `meta`,
    is refused (the message names what differs)."""
    # compared as it reads back (tuples become lists); ValueError here for NaN or non-JSON
    meta = json.loads(json.dumps(dict(meta or {}), allow_nan=False))
    if not (root / STORE_FILE).exists():
        if not create:
            raise MissingFileError(f"no frame store at {root}")
        if root.exists() and not root.is_dir():
            raise FileError(f"cannot make a frame store at {root}: it is a file")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FileError(f"cannot make {root}: {exc.strerror or exc}") from None
        header: dict[str, Any] = {"kind": _STORE_KIND, "format_version": _VERSION,
                  "frame_shape": list(frame_shape), "act_dim": int(act_dim),
                  "meta": meta}
        write_json(root / STORE_FILE, header)
        return read_store(root)
    header = read_store(root)
    if tuple(header["frame_shape"]) != tuple(frame_shape) or header["act_dim"] != act_dim:
        raise FastMBRLError(f"{root} holds frames {tuple(header['frame_shape'])} with "
                            f"{header['act_dim']} actions, not {tuple(frame_shape)} with "
                            f"{act_dim}; use another directory")
    stored = header.get("meta", {})
    if meta:
        diff = sorted(k for k in set(stored) | set(meta) if stored.get(k) != meta.get(k))
        if diff:
            shown = ", ".join(f"{k}: stored {stored.get(k)!r}, asked {meta.get(k)!r}"
                              for k in diff[:4])
            raise FastMBRLError(f"{root} was collected with other settings ({shown}); "
                                "continue with the same settings or use another directory")
    return header


def _scan(root: Path) -> list[tuple[int, int, Path]]:
    try:
        names = [p for p in root.iterdir() if _CHUNK_RE.fullmatch(p.name)]
    except OSError as exc:
        raise FileError(f"cannot read {root}: {exc.strerror or exc}") from None
    found = []
    for p in names:
        m = _CHUNK_RE.fullmatch(p.name)
        assert m is not None
        first, last = int(m.group(1)), int(m.group(2))
        if last < first:
            raise FormatError(f"{p}: a chunk's last episode precedes its first")
        found.append((first, last, p))
    return sorted(found)


def list_chunks(root: Path, remove_superseded: bool = False) -> list[tuple[int, int, Path]]:
    """(first id, last id, path) of the chunks in `root`, by first id. A chunk is rewritten
    with one more episode as a collection goes on; if the process died between writing the
    new one and removing the old, the shorter one of the same first id is superseded: it is
    skipped (and removed when `remove_superseded`). Any other overlap is a FormatError."""
    out: list[tuple[int, int, Path]] = []
    for first, last, p in _scan(root):
        if out and out[-1][0] == first:  # sorted: this one is the longer
            if remove_superseded:
                out[-1][2].unlink(missing_ok=True)
            out[-1] = (first, last, p)
            continue
        if out and first <= out[-1][1]:
            raise FormatError(f"{root}: chunks {out[-1][2].name} and {p.name} overlap")
        out.append((first, last, p))
    return out


def stored_ids(root: Path) -> list[int]:
    """Ids of the episodes in the chunks of `root`, ascending."""
    return [i for first, last, _ in list_chunks(root) for i in range(first, last + 1)]


def write_chunk(root: Path, first: int, episodes: Sequence[Episode]) -> Path:
    """Write `episodes` (ids first, first + 1, ...) as one chunk file in `root`, atomically."""
    last = first + len(episodes) - 1
    _check_id(last, "last episode id")
    steps = np.array([ep.actions.shape[0] for ep in episodes], np.int64)
    arrays = {
        "frames": np.concatenate([ep.frames for ep in episodes]),
        "actions": np.concatenate([ep.actions for ep in episodes]),
        "rewards": np.concatenate([ep.rewards for ep in episodes]),
        "terminated": np.concatenate([ep.terminated for ep in episodes]),
        "truncated": np.concatenate([ep.truncated for ep in episodes]),
        "steps": steps,
    }
    header = {"first_episode": int(first), "episodes": len(episodes)}
    return save_npz(root / chunk_name(first, last), _CHUNK_KIND, _VERSION, header, arrays)


def _chunk_frame_count(path: Path) -> int:
    """Frames in a chunk from its frames member's .npy header alone (to size a store before
    reading the data); read_chunk checks it against the rest."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("frames.npy") as fh:
            version = npy.read_magic(fh)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape = read(fh)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path} is not a readable frame chunk: {exc}") from None
    if len(shape) != 4:
        raise FormatError(f"{path}: frames should be (N, H, W, C), found shape {shape}")
    return int(shape[0])


def read_chunk(path: Path, frame_shape: tuple, act_dim: int, first: int, last: int
               ) -> list[Episode]:
    """The episodes of one chunk (ids first..last, from its name), every array checked."""
    header, arrays = load_npz(path, _CHUNK_KIND, (_VERSION,))
    n = last - first + 1
    if header.get("first_episode") != first or header.get("episodes") != n:
        raise FormatError(f"{path}: its header says episodes {header.get('first_episode')!r} "
                          f"+ {header.get('episodes')!r}, its name {first}..{last}")
    steps = arrays.get("steps")
    if steps is None or steps.dtype != np.int64 or steps.shape != (n,) or (steps < 1).any():
        raise FormatError(f"{path}: 'steps' should be {n} positive int64 episode lengths")
    ns = int(steps.sum())
    expected = {"frames": (np.uint8, (ns + n, *frame_shape)),
                "actions": (np.float32, (ns, act_dim)), "rewards": (np.float32, (ns,)),
                "terminated": (np.bool_, (ns,)), "truncated": (np.bool_, (ns,))}
    unknown = sorted(set(arrays) - set(expected) - {"steps"})
    if unknown:
        raise FormatError(f"{path}: unknown arrays {unknown}")
    for name, (dtype, shape) in expected.items():
        a = arrays.get(name)
        if a is None or a.dtype != dtype or a.shape != shape:
            found = None if a is None else f"{a.dtype} {a.shape}"
            raise FormatError(f"{path}: array {name!r} should be {np.dtype(dtype)} {shape}, "
                              f"found {found}")
    out = []
    s = 0
    for k, t in enumerate(steps.tolist()):
        f = s + k
        try:
            out.append(check_episode(arrays["frames"][f:f + t + 1], arrays["actions"][s:s + t],
                                     arrays["rewards"][s:s + t], arrays["terminated"][s:s + t],
                                     arrays["truncated"][s:s + t], frame_shape, act_dim))
        except ValueError as exc:
            raise FormatError(f"{path}: episode {first + k}: {exc}") from None
        s += t
    return out
