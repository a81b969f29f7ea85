"""One file format for everything fastmbrl saves: an .npz of arrays plus a JSON header.

Nothing is pickled, so loading a crafted file cannot run code. The header names the kind of
object and a format version; a file of another kind or a newer version is refused.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import FastMBRLError, FormatError

_HEADER_KEY = "__header__"


def save_npz(path, kind: str, version: int, header: dict, arrays: dict) -> Path:
    """Write `arrays` and a JSON `header` to `path` atomically (temp file then rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if _HEADER_KEY in arrays:
        raise ValueError(f"array name {_HEADER_KEY!r} is reserved")
    meta = dict(header)
    meta["kind"] = kind
    meta["format_version"] = int(version)
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **{_HEADER_KEY: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    return path


def load_npz(path, kind: str, supported_versions) -> tuple[dict, dict]:
    """Read a file written by `save_npz`; return (header, arrays) or raise FormatError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if _HEADER_KEY not in data.files:
                raise FormatError(f"{path} is not a fastmbrl file (no header)")
            header = json.loads(bytes(data[_HEADER_KEY]).decode("utf-8"))
            arrays = {k: data[k] for k in data.files if k != _HEADER_KEY}
    except FormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is corrupt or not an .npz file: {exc}") from exc
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


def write_json(path, obj) -> Path:
    """Write `obj` as JSON atomically (temp file then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
    return path


def read_json(path, missing: str) -> dict:
    """Read a JSON object; FastMBRLError(`missing`) if absent, FormatError if corrupt."""
    path = Path(path)
    if not path.exists():
        raise FastMBRLError(missing)
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is corrupt: {exc}") from exc
    if not isinstance(obj, dict):
        raise FormatError(f"{path} does not hold a JSON object")
    return obj
