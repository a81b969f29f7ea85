"""The only place with numba-compiled code (besides the tasks' reward functions).

FASTMATH keeps NaN/inf semantics on so that divergence guards are not compiled away.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@functools.lru_cache(maxsize=None)
def source_digest(*names: str) -> str:
    """Hash of the kernel sources (file names in this package) a generated kernel is built
    from. numba checks only the defining file of a cached function, not the helpers compiled
    into it, so generated kernels carry this in their cache name: an edited tile or spec is
    recompiled, never read stale."""
    h = hashlib.sha1()
    for name in ("isa.py", "dense.py", *names):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:8]


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Run a block with `n` numba threads, restoring the previous count afterwards.

    numba can only lower the count below NUMBA_NUM_THREADS (the number of cores by default).
    """
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ValueError(f"num_threads: expected an integer in [1, {limit}], got {n!r}")
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)
