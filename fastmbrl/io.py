"""One file format for everything fastmbrl saves: an .npz of arrays plus a JSON header; and
the JSON files beside them.

Nothing is pickled, so loading a crafted file cannot run code. The header names the kind of
object and a format version; a file of another kind or a newer version is refused. Every
array's size must agree with the bytes the file holds and members must be stored
uncompressed, so reading a file never allocates more than about its own size.

JSON is read and written as RFC 8259 defines it: NaN and infinities are refused when reading
(Python's json module would accept them) and never written. `write_json` refuses an object
holding one; `json_dumps`, for metrics rows, writes a non-finite float as null (a fit with no
validation rows has no validation loss, for example).

Every problem with a file becomes a FastMBRLError naming it: FormatError for a file that is
corrupt or of another kind, FileError (an OSError too) for one that cannot be read or written,
MissingFileError (a FileNotFoundError too) for one that does not exist.

TOML is only read (`read_toml`: the config files of `fastmbrl train --config`), with the same
errors and no NaN or infinity either.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import sys
import zipfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy

from ._validate import StrPath
from .errors import (FastMBRLError, FileError, FormatError, MissingExtraError, MissingFileError,
                     require)

_HEADER_KEY = "__header__"


# -- JSON -----------------------------------------------------------------------------------------
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a float")
    return value


def json_loads(text: str | bytes, source: object) -> Any:
    """Parse JSON `text` (str or bytes) strictly; FormatError naming `source` (a path or a
    description) if it is not valid RFC 8259 JSON."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise FormatError(f"{source} is nested too deeply to be read") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long ints, NaN
        raise FormatError(f"{source} is corrupt: {exc}") from None


def _nulled(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nulled(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nulled(v) for v in obj]
    return obj


def json_dumps(obj: Any) -> str:
    """`obj` as one line of JSON with every non-finite float written as null (metrics rows)."""
    return json.dumps(_nulled(obj), allow_nan=False)


def _strict_dumps(obj: Any, path: object, **kwargs: Any) -> str:
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        raise ValueError(f"refusing to write {path}: it holds a NaN or infinite number "
                         f"({exc})") from None


def write_json(path: StrPath, obj: Any, durable: bool = False) -> Path:
    """Write `obj` as JSON atomically (temp file then rename; `durable` as in write_atomic);
    ValueError, writing nothing, if it holds a NaN or infinity."""
    path = Path(path)
    data = _strict_dumps(obj, path, indent=2).encode("utf-8")
    write_atomic(path, lambda fh: fh.write(data), durable)
    return path


def read_json(path: StrPath, missing: str) -> dict[str, Any]:
    """Read a JSON object; MissingFileError(`missing`) if absent, FormatError if corrupt."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(missing)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    obj = json_loads(data, path)
    if not isinstance(obj, dict):
        raise FormatError(f"{path} does not hold a JSON object")
    return obj


def read_toml(path: StrPath, missing: str) -> dict[str, Any]:
    """Read a TOML document (tomllib; on Python < 3.11 the `tomli` package of the [toml]
    extra); MissingFileError(`missing`) if absent, FormatError naming the file and the line if
    it is not valid TOML. NaN and infinities are refused, as in JSON."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(missing)
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            tomllib = require("tomli", "toml", f"reading the TOML file {path} on Python "
                                               f"{sys.version_info[0]}.{sys.version_info[1]}")
        except MissingExtraError as exc:
            raise FastMBRLError(f"{exc} (or pip install tomli); or write the config as JSON, "
                                "in a .json file") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"), parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path} is not UTF-8 text ({exc})") from None
    except ValueError as exc:  # TOMLDecodeError names the line and column; a non-finite float
        raise FormatError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise FormatError(f"{path} is nested too deeply to be read") from None


def write_atomic(path: StrPath, write: Callable[[IO[bytes]], object],
                 durable: bool = False) -> Path:
    """`write(fh)` into a temp file beside `path`, then rename it over `path`. If that fails,
    no temp file is left and an OSError becomes a FileError naming `path`. `durable`: the
    data is on disk before the rename and the rename after it (a power cut then leaves the
    old file or the new one, never an empty one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable and os.name != "nt":  # directories cannot be opened on Windows
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FileError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


# -- npz ------------------------------------------------------------------------------------------
def save_npz(path: StrPath, kind: str, version: int, header: Mapping[str, Any],
             arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `arrays` and a JSON `header` to `path` atomically (temp file then rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if _HEADER_KEY in arrays:
        raise ValueError(f"array name {_HEADER_KEY!r} is reserved")
    meta = dict(header)
    meta["kind"] = kind
    meta["format_version"] = int(version)
    blob = np.frombuffer(_strict_dumps(meta, path, sort_keys=True).encode("utf-8"), np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileError(f"cannot write {path}: {exc.strerror or exc}") from None
    members: dict[str, Any] = {_HEADER_KEY: blob, **{k: np.asarray(v) for k, v in arrays.items()}}
    write_atomic(path, lambda fh: np.savez(fh, **members))
    return path


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: object) -> np.ndarray:
    """One .npy member, after checking that its header's shape matches the bytes it holds."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise FormatError(f"{path}: member {info.filename} is compressed; fastmbrl files are "
                          "stored uncompressed")
    with zf.open(info) as fh:
        version = npy.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise FormatError(f"{path}: member {info.filename} has .npy version {version}")
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        if dtype.hasobject:
            raise FormatError(f"{path}: member {info.filename} holds Python objects")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - fh.tell():
            raise FormatError(f"{path}: member {info.filename} claims shape {shape} of "
                              f"{dtype} ({nbytes} bytes) but holds {info.file_size - fh.tell()}")
        fh.seek(0)
        arr = npy.read_array(fh, allow_pickle=False)
        fh.read(1)  # at the end: zipfile checks the CRC here
    return arr


def load_npz(path: StrPath, kind: str, supported_versions: Collection[int]
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by `save_npz`; return (header, arrays) or raise FormatError
    (MissingFileError if absent, FileError if unreadable)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such file: {path}")
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
    arrays = {}
    try:
        with fh, zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if name == info.filename or name in arrays:
                    raise FormatError(f"{path}: unexpected member {info.filename!r}")
                arrays[name] = _read_member(zf, info, path)
    except FormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, struct.error,
            NotImplementedError, OverflowError) as exc:
        raise FormatError(f"{path} is corrupt or not an .npz file: {exc}") from None
    blob = arrays.pop(_HEADER_KEY, None)
    if blob is None:
        raise FormatError(f"{path} is not a fastmbrl file (no header)")
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise FormatError(f"{path} has a malformed header")
    header = json_loads(blob.tobytes(), f"{path} (its header)")
    if not isinstance(header, dict):
        raise FormatError(f"{path} has a malformed header")
    found = header.get("kind")
    if found != kind:
        raise FormatError(f"{path} holds a {found!r}, expected a {kind!r}")
    version = header.get("format_version")
    if version not in tuple(supported_versions):
        raise FormatError(
            f"{path} is {kind} format version {version}; this fastmbrl reads "
            f"version(s) {', '.join(map(str, supported_versions))}"
        )
    return header, arrays
