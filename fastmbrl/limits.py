"""One bound on what a setting or a saved file may make fastmbrl allocate.

Every allocation whose size follows from a setting (a planner's candidate sequences and the
scorer's workspace: num_samples x horizon x actions; iCEM's horizon x horizon noise matrix; a
model's weights: ensemble_size x hidden widths; a buffer's capacity) is estimated with
`check_bytes` before it is made, and refused above the limit with a `ResourceLimitError` that
names the settings, the bytes they need and how to raise the limit. The check is per object (a
planner with its scorer, a model, a buffer), made once when it is built, never per call.

The limit, in this order:

* ``set_max_bytes(n)`` if it was called (``set_max_bytes(None)`` forgets it);
* the environment variable ``FASTMBRL_MAX_BYTES``: a number of bytes, optionally with a suffix
  K, M, G or T (powers of 1024; "KiB", "GB" and the like are read the same way), e.g. ``16G``;
* else the default: the smaller of 8 GiB and half of the physical memory. No preset comes
  near it (each of their planners, models and buffers needs under 10 MiB), so a request above
  it is almost surely a typo or a crafted file; half of the memory leaves room for the rest of
  the process and the machine, and 8 GiB keeps one object from taking over a large host.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from fastmbrl.errors import FastMBRLError

ENV_VAR = "FASTMBRL_MAX_BYTES"
GiB = 1 << 30
_DEFAULT_CAP = 8 * GiB
_FALLBACK_RAM = 16 * GiB  # when the physical memory cannot be read
_SUFFIX = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_override: int | None = None


class ResourceLimitError(FastMBRLError, MemoryError):
    """A setting or a file asks for more memory than the limit (see fastmbrl.limits)."""


def parse_bytes(text: int | str) -> int:
    """A byte count from an int or a string such as "8G", "512M", "1.5GiB", "1000000"."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?\s*", str(text),
                         re.IGNORECASE)
        if m is None:
            raise ValueError(f"expected a byte count such as 8G, 512M or 1000000, got {text!r}")
        value = math.floor(float(m.group(1)) * 1024 ** _SUFFIX[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"expected a positive byte count, got {text!r}")
    return int(value)


def physical_memory() -> int | None:
    """Bytes of physical memory, or None if it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_max_bytes() -> int:
    """The smaller of 8 GiB and half of the physical memory."""
    ram = physical_memory()
    return min(_DEFAULT_CAP, (ram if ram and ram > 0 else _FALLBACK_RAM) // 2)


def set_max_bytes(nbytes: int | str | None) -> int | None:
    """Set the limit (an int or a string as FASTMBRL_MAX_BYTES takes) for this process, or
    None to go back to the environment variable or the default. Returns the previous
    setting (None if there was none), so a caller can restore it."""
    global _override
    previous = _override
    _override = None if nbytes is None else parse_bytes(nbytes)
    return previous


def max_bytes() -> int:
    """The limit in force (see the module docs)."""
    if _override is not None:
        return _override
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return default_max_bytes()
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise FastMBRLError(f"{ENV_VAR}: {exc}") from None


def format_bytes(nbytes: int) -> str:
    """e.g. "3.7 GiB", "512 B"."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(nbytes)} B"
    return f"{value:.3g} {unit}" if value < 1e4 else f"{value:.3e} {unit}"


def array_bytes(*shape: int, itemsize: int = 4) -> int:
    """Bytes of an array of this shape (exact Python ints: no overflow)."""
    return math.prod(int(s) for s in shape) * int(itemsize)


def check_bytes(what: str, nbytes: int | Mapping[str, int], change: str = "these settings"
                ) -> int:
    """Refuse with ResourceLimitError if `nbytes` exceeds the limit; returns the total.

    what: the object and the settings it was asked for, e.g. "ICEM(horizon=100000)".
    nbytes: an int, or a mapping {description of the part: bytes} whose parts are summed and
    named in the message. change: what to lower, for the message.
    """
    parts = dict(nbytes) if isinstance(nbytes, Mapping) else {}
    total = sum(parts.values()) if isinstance(nbytes, Mapping) else int(nbytes)
    limit = max_bytes()
    if total <= limit:
        return total
    big = [f"{k} {format_bytes(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
           if v * 100 >= total]  # the parts that matter, largest first
    detail = f" ({', '.join(big)})" if big else ""
    raise ResourceLimitError(
        f"{what} would allocate {format_bytes(total)}{detail}, above the limit of "
        f"{format_bytes(limit)}: lower {change}, or raise the limit with the environment "
        f"variable {ENV_VAR} (e.g. {ENV_VAR}=32G) or fastmbrl.limits.set_max_bytes()")
