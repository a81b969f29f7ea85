"""Run directories, shared by every training algorithm.

config.json   {"fastmbrl_version", "run_format", "config": {"algo": ..., ...}}
metrics.jsonl one JSON object per finished iteration (at least iteration, env_steps, mean_return)
metrics.csv   the same rows' scalar fields as a table, written with each commit (write_metrics_csv)
state.json    the commit point a resume starts from
.lock         held by the process training in the directory (its pid inside)

An iteration commits as one atomic step (`commit`): its metrics row is appended, its files are
written into a fresh stage directory `.stage-<id>/`, then state.json, which names the stage, its
files and the committed length of metrics.jsonl, replaces the previous one; only then are the
staged files moved over the directory's own. A process killed before the replace leaves the
previous commit intact (`recover` removes the stage and truncates the uncommitted row); killed
after it, `recover` finishes the moves. Every step is fsynced, so a power cut behaves as a kill.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import secrets
import shutil
from pathlib import Path

from fastmbrl import __version__
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import json_dumps, json_loads, read_json, write_atomic, write_json

RUN_FORMAT = 1
ALGOS = ("mbrl", "trpo", "mbmf", "worldmodels")
STATE = "state.json"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LOCK = ".lock"
STAGE_PREFIX = ".stage-"
_STAGE_NAME = re.compile(r"\.stage-[0-9a-f]{1,32}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class RunLockedError(FastMBRLError):
    """The run directory is held by another training process (or another Run in this one)."""


# -- durability ---------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make renames in `path` durable (a no-op where directories cannot be opened: Windows)."""
    if os.name == "nt":
        return
    _fsync(path)


# -- the lock -----------------------------------------------------------------------------------
class RunLock:
    """An exclusive, advisory lock on a run directory, released when the process ends however
    it ends (the operating system drops it with the file descriptor: a kill -9 leaves no stale
    lock behind)."""

    def __init__(self, out):
        self.out = Path(out)
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> "RunLock":
        if self._fh is not None:
            return self
        path = self.out / LOCK
        fh = open(path, "a+")
        try:
            _lock_file(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            where = ("another Run object in this process (one that is training or "
                     "committing)" if holder == str(os.getpid())
                     else f"the fastmbrl process with pid {holder}")
            raise RunLockedError(f"{self.out} is in use by {where}; a run directory is "
                                 "trained by one process at a time") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            _unlock_file(fh)
            fh.close()


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_file(fh):
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock_file(fh):
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_file(fh):
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_file(fh):
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- config.json --------------------------------------------------------------------------------
def run_config_meta(config: dict, imports=(), tensorboard: bool = False) -> dict:
    """What config.json holds for a run of `config` (its "config" entry, algo included);
    `imports` are the import_tasks specs that define its task (a resume or an eval imports
    them again); `tensorboard`: the run writes TensorBoard event files (a resume goes on
    writing them)."""
    if config.get("algo") not in ALGOS:
        raise ValueError(f"config algo must be one of {ALGOS}, got {config.get('algo')!r}")
    meta = {"fastmbrl_version": __version__, "run_format": RUN_FORMAT, "config": config}
    if imports:
        meta["imports"] = list(imports)
    if tensorboard:
        meta["tensorboard"] = True
    return meta


def write_run_config(out, config: dict, imports=(), tensorboard: bool = False) -> None:
    """Start a run directory with the config.json of `run_config_meta`; refuses one that
    already holds a run."""
    out = Path(out)
    if (out / "config.json").exists():
        raise FastMBRLError(f"{out} already holds a run: use --resume {out} or another --out")
    meta = run_config_meta(config, imports, tensorboard)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", meta, durable=True)


def config_entry(meta: dict, path) -> dict:
    """The "config" entry of the config.json contents `meta` read from `path`, checked for
    the run format."""
    if meta.get("run_format") != RUN_FORMAT or type(meta.get("run_format")) is not int:
        raise FormatError(
            f"{path}: written by fastmbrl {meta.get('fastmbrl_version', '?')} with "
            f"run format {meta.get('run_format')!r}; this fastmbrl {__version__} reads format "
            f"{RUN_FORMAT}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise FormatError(f"{path} has no config entry")
    return config


def read_run_config(out, algo=None) -> dict:
    """The "config" entry of `out`'s config.json, checked for format (and algorithm if given)."""
    meta = read_json(Path(out) / "config.json",
                     f"{out} is not a fastmbrl run directory (no config.json)")
    config = config_entry(meta, f"{out}/config.json")
    found = config.get("algo")
    if found not in ALGOS or (algo is not None and found != algo):
        raise FormatError(f"{out} is not a {algo or 'fastmbrl'} run (its algo is {found!r})")
    return config


def run_logs_tensorboard(out) -> bool:
    """Whether the run in `out` was started to write TensorBoard event files."""
    meta = read_json(Path(out) / "config.json",
                     f"{out} is not a fastmbrl run directory (no config.json)")
    value = meta.get("tensorboard", False)
    if not isinstance(value, bool):
        raise FormatError(f"{out}/config.json: tensorboard must be true or false, got {value!r}")
    return value


def import_run_tasks(out) -> None:
    """Import the task modules `out`'s config.json names (a task of the user's, added with
    --import or MODULE:ATTRIBUTE), so that its task is known. Only modules already on the
    Python path or in the current directory can be imported: the file names them, it holds no
    code."""
    from fastmbrl.tasks import import_tasks

    meta = read_json(Path(out) / "config.json",
                     f"{out} is not a fastmbrl run directory (no config.json)")
    imports = meta.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise FormatError(f"{out}/config.json: imports must be a list of module names")
    for spec in imports:
        import_tasks(spec)


# -- metrics.csv --------------------------------------------------------------------------------
def write_metrics_csv(path, rows) -> None:
    """Write `rows` (metrics rows, as metrics.jsonl holds them) to `path` as CSV: one column per
    key that holds a scalar (number, string, boolean or null) in some row, iteration and
    env_steps first, the others in the order they first appear. Cells are written as JSON
    writes them (true/false, an empty cell for null or a non-finite number), so the table
    says what metrics.jsonl says. List fields (each episode's return and length) are left out:
    the row's mean_return summarises them and metrics.jsonl keeps them."""
    columns = dict.fromkeys(["iteration", "env_steps"])
    for row in rows:
        columns.update((k, None) for k, v in row.items() if _is_scalar(v))
    buf = io.StringIO()
    writer = csv.writer(buf)  # RFC 4180: quoted where needed, CRLF line ends
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(k)) for k in columns])
    Path(path).write_bytes(buf.getvalue().encode("utf-8"))


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value)) if math.isfinite(value) else ""
    if isinstance(value, (int, str)):
        return str(value)
    return ""  # null, or a list in a column that is scalar elsewhere


# -- the commit ---------------------------------------------------------------------------------
def commit(out, state: dict, write_files, row: dict | None = None) -> dict:
    """Commit one iteration of the run in `out`: append `row` to metrics.jsonl, let
    `write_files(stage)` write the iteration's files into a fresh stage directory, then replace
    state.json (`state` plus where the commit's files are); then publish the staged files.
    Returns the state as written. The caller holds the directory's lock."""
    out = Path(out)
    stage = out / f"{STAGE_PREFIX}{secrets.token_hex(6)}"
    stage.mkdir()
    write_files(stage)
    names = sorted(p.name for p in stage.iterdir())
    bad = [n for n in names if not (stage / n).is_file() or not _FILE_NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"a run's files must be plain files with plain names, got {bad}")
    for name in names:
        _fsync(stage / name)
    _fsync_dir(out)
    # the row after the stage exists: an uncommitted row always has an uncommitted stage beside
    # it, so a row with neither state nor stage is a committed one whose state was lost
    metrics = out / METRICS
    if row is not None:
        with open(metrics, "a") as fh:
            fh.write(json_dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    size = metrics.stat().st_size if metrics.exists() else 0
    state = {**state, "commit": {"stage": stage.name, "files": names, "metrics_bytes": size}}
    write_json(stage / STATE, state)
    _fsync(stage / STATE)
    _fsync_dir(stage)
    os.replace(stage / STATE, out / STATE)  # the commit point
    _fsync_dir(out)
    _publish(out, stage, names)
    return state


def _publish(out: Path, stage: Path, names) -> None:
    """Move a committed stage's files over the directory's own (idempotent: a resume repeats
    what a kill interrupted)."""
    for name in names:
        if (stage / name).exists():
            os.replace(stage / name, out / name)
    _fsync_dir(out)
    shutil.rmtree(stage, ignore_errors=True)


def _commit_entry(out: Path, state: dict) -> dict | None:
    entry = state.get("commit")
    if entry is None:
        return None  # written before commits named their files (fastmbrl 0.1.0)
    ok = (isinstance(entry, dict) and isinstance(entry.get("stage"), str)
          and _STAGE_NAME.fullmatch(entry["stage"]) is not None
          and isinstance(entry.get("files"), list)
          and all(isinstance(n, str) and _FILE_NAME.fullmatch(n) for n in entry["files"])
          and type(entry.get("metrics_bytes")) is int and entry["metrics_bytes"] >= 0)
    if not ok:
        raise FormatError(f"{out}/{STATE} has a malformed commit entry")
    return entry


def read_state(out) -> dict | None:
    """The committed state of `out` (None before its first commit), read-only."""
    path = Path(out) / STATE
    if not path.exists():
        return None
    state = read_json(path, f"no {STATE} in {out}")
    for key in ("iteration", "episodes", "env_steps"):
        value = state.get(key)
        if type(value) is not int or value < 0:
            raise FormatError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    if not isinstance(state.get("rng"), dict):
        raise FormatError(f"{path}: rng must be a random generator's state (a JSON object)")
    _commit_entry(Path(out), state)
    return state


def committed_file(out, state: dict | None, name: str) -> Path:
    """Where the committed version of file `name` of `out` is (read-only): still in the
    commit's stage when a kill stopped its publication, else in `out`."""
    out = Path(out)
    entry = None if state is None else _commit_entry(out, state)
    if entry is not None and name in entry["files"] and (out / entry["stage"] / name).exists():
        return out / entry["stage"] / name
    return out / name


def recover(out) -> tuple[dict | None, list[dict]]:
    """Bring `out` back to its last commit: finish the moves of a committed stage, remove what
    uncommitted saves left (stages, temporary files, metrics rows past the commit, a torn last
    line). Returns (state, committed metrics rows); state is None before the first commit.

    Refuses, changing nothing, when the state and metrics.jsonl disagree in a way that only
    deleting committed rows would reconcile. The caller holds the directory's lock."""
    out = Path(out)
    state = read_state(out)
    entry = None if state is None else _commit_entry(out, state)
    data = (out / METRICS).read_bytes() if (out / METRICS).exists() else b""
    stages = [p for p in out.iterdir() if p.name.startswith(STAGE_PREFIX) and p.is_dir()
              and (entry is None or p.name != entry["stage"])]
    keep, rows = _committed_metrics(out, state, entry, data, bool(stages))  # before any change
    if entry is not None and (out / entry["stage"]).is_dir():
        _publish(out, out / entry["stage"], entry["files"])
    if keep != len(data):  # before the stages go: they vouch for the row being uncommitted
        write_atomic(out / METRICS, lambda fh: fh.write(data[:keep]), durable=True)
    for path in stages:
        shutil.rmtree(path)  # an uncommitted save's
    for path in out.iterdir():
        if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
            path.unlink()
    return state, rows


def _committed_metrics(out: Path, state, entry, data: bytes,
                       staged: bool) -> tuple[int, list[dict]]:
    """(bytes of metrics.jsonl that are committed, their rows), or FormatError. `staged`: an
    uncommitted stage exists (without one, no row can be uncommitted)."""
    path = out / METRICS
    iteration = 0 if state is None else state.get("iteration")
    if entry is not None:
        keep = entry["metrics_bytes"]
        if len(data) < keep:
            raise FormatError(f"{path} holds {len(data)} bytes but {keep} were committed: "
                              "committed rows are missing; nothing was changed")
    else:
        # no recorded length (fastmbrl 0.1.0): the committed rows are those up to the state's
        # iteration; what follows is uncommitted
        keep = 0
        for line in data.split(b"\n")[:-1]:
            if _row_iteration(line) > iteration:
                break
            keep += len(line) + 1
    extra = data[keep:].count(b"\n")
    if state is None and extra and not staged:
        raise FormatError(f"{out}/{STATE} is missing but {path} holds {extra} committed row(s): "
                          "the run's state was lost; nothing was changed")
    if extra > 1:  # one row is the iteration a kill interrupted; more were committed once
        raise FormatError(
            f"{path} has {extra} rows past the iteration {out}/{STATE} commits ({iteration!r}): "
            "keeping the state would delete them; nothing was changed")
    rows = []
    for line in data[:keep].splitlines():
        row = json_loads(line, path)
        if not isinstance(row, dict):
            raise FormatError(f"{path} holds a row that is not a JSON object")
        rows.append(row)
    found = [r.get("iteration") for r in rows]
    if found != list(range(1, len(rows) + 1)) or len(rows) != iteration:
        raise FormatError(
            f"{out}/{STATE} commits iteration {iteration!r} but {path} holds rows for iterations "
            f"{_span(found)}: the two disagree; nothing was changed")
    return keep, rows


def _row_iteration(line: bytes):
    try:
        it = json_loads(line, "a row").get("iteration")
    except (FormatError, AttributeError):
        return float("inf")
    return it if isinstance(it, int) else float("inf")


def _span(found) -> str:
    if not found:
        return "none"
    return ", ".join(map(str, found)) if len(found) <= 4 else f"{found[0]} … {found[-1]}"


def read_metrics(out) -> list[dict]:
    """The committed rows of `out`'s metrics.jsonl (read-only: a row a kill left past the
    commit, or a torn last line, is not returned; FormatError where resume would refuse)."""
    out = Path(out)
    path = out / METRICS
    if not path.exists():
        return []
    state = read_state(out)
    entry = None if state is None else _commit_entry(out, state)
    # a row without a state is taken as uncommitted here: nothing is decided, nothing removed
    return _committed_metrics(out, state, entry, path.read_bytes(), staged=True)[1]
