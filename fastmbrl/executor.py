"""One way to go wide: map a picklable top-level function over jobs, on this machine or on Ray.

    for outcome in run_jobs(fn, jobs, backend="local", workers=2, threads=1):
        outcome.key, outcome.ok, outcome.value, outcome.error

`backend="local"` runs `workers` processes at once, started with spawn (a fork would copy
numba's thread pool), each limited to `threads` numba (and BLAS/OpenMP) threads, so that
workers x threads need not exceed the cores. `backend="ray"` makes each job a Ray task asking
for `threads` CPUs, on the cluster at `address` or on a local Ray instance started for the
call (and stopped after it). Outcomes come back as jobs end, in that order: a job that raises
is an outcome with its error and the others go on; a local worker that dies (killed, out of
memory) fails the jobs it may have been running once more in a fresh pool before they are
reported as failed.

A rank-0 utility: it imports nothing of fastmbrl but the errors.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastmbrl.errors import FastMBRLError, require

BACKENDS = ("local", "ray")
#: the environment variables that size a process's thread pools (numba's, BLAS's, OpenMP's)
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclasses.dataclass
class Outcome:
    """How one job ended: `value` if it returned, else `error` (one line) and `details` (the
    traceback); `seconds` from its submission to its end as the caller saw it."""

    key: Any
    value: Any = None
    error: str | None = None
    details: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def available_cores() -> int:
    """The cores this process may run on (its affinity where the system says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def plan_local(n_jobs: int, workers: int | None = None, threads: int | None = None,
               cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) for `n_jobs` on `cores`: what is not given is chosen so
    that workers x threads fills the cores; refused if the two given overfill them."""
    cores = available_cores() if cores is None else cores
    for name, value in (("jobs", workers), ("threads per job", threads)):
        if value is not None and (type(value) is not int or value <= 0):
            raise FastMBRLError(f"{name} must be a positive integer, got {value!r}")
    if workers is None:
        workers = max(1, min(max(n_jobs, 1), cores // (threads or 1)))
    if threads is None:
        threads = max(1, cores // workers)
    if workers * threads > cores:
        raise FastMBRLError(f"{workers} jobs x {threads} threads would oversubscribe the "
                            f"{cores} cores of this machine; lower --jobs or --threads-per-job")
    return workers, threads


def limit_threads(threads: int) -> None:
    """Limit this process to `threads` threads per pool: the environment for pools not started
    yet, and numba's own if it is loaded (its pool keeps its size but uses `threads`)."""
    numba = sys.modules.get("numba")
    for var in THREAD_VARS:
        # numba re-reads its variable when it compiles: a loaded numba keeps the size it had
        if not (var == "NUMBA_NUM_THREADS" and numba is not None):
            os.environ[var] = str(threads)
    if numba is not None:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _call(fn: Callable[[Any], Any], job: Any, threads: int) -> Any:
    limit_threads(threads)
    return fn(job)


def _watch_parent(parent: int) -> None:
    """End this worker when the process that started it is gone (killed with kill -9, say):
    it would otherwise train on, holding its run directory's lock."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int, parent: int) -> None:
    limit_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _failed(key, exc: BaseException, seconds: float) -> Outcome:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return Outcome(key, error=f"{type(exc).__name__}: {text}",
                   details="".join(traceback.format_exception(exc)), seconds=seconds)


def run_jobs(fn: Callable[[Any], Any], jobs: Iterable[Any], backend: str = "local",
             workers: int | None = None, threads: int | None = None, address: str | None = None,
             keys: Iterable[Any] | None = None, tick: Callable[[], object] | None = None,
             tick_seconds: float = 1.0) -> Iterator[Outcome]:
    """`fn(job)` for each job, yielding an Outcome per job as each ends (its key is the job's
    index, or its entry of `keys`). `fn` and the jobs must pickle (a top-level function).
    `tick()`, if given, is called about every `tick_seconds` while jobs run."""
    jobs = list(jobs)
    keys = list(range(len(jobs))) if keys is None else list(keys)
    if len(keys) != len(jobs):
        raise FastMBRLError(f"{len(keys)} keys for {len(jobs)} jobs")
    if backend == "local":
        workers, threads = plan_local(len(jobs), workers, threads)
        yield from _run_local(fn, jobs, keys, workers, threads, tick, tick_seconds)
    elif backend == "ray":
        if threads is not None and (type(threads) is not int or threads <= 0):
            raise FastMBRLError(f"threads per job must be a positive integer, got {threads!r}")
        yield from _run_ray(fn, jobs, keys, threads or 1, address, tick, tick_seconds)
    else:
        raise FastMBRLError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _run_local(fn, jobs, keys, workers, threads, tick, tick_seconds) -> Iterator[Outcome]:
    if not jobs:
        return
    context = multiprocessing.get_context("spawn")
    todo = list(range(len(jobs)))
    broken: dict[int, int] = {}  # job -> times its worker died under it
    while todo:
        # the jobs of a pool that broke go again one per pool: the one that breaks alone is the
        # culprit, and the others cannot share a pool with it a second time
        batch, todo = (todo[:1], todo[1:]) if broken else (todo, [])
        pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(batch)), mp_context=context,
                                      initializer=_init_worker, initargs=(threads, os.getpid()))
        started = time.perf_counter()
        futures = {pool.submit(_call, fn, jobs[i], threads): i for i in batch}
        retry: list[int] = []
        try:
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=tick_seconds,
                                        return_when=cf.FIRST_COMPLETED)
                if tick is not None:
                    tick()
                for future in done:
                    i = futures[future]
                    seconds = time.perf_counter() - started
                    try:
                        value = future.result()
                    except cf.process.BrokenProcessPool as exc:
                        broken[i] = broken.get(i, 0) + 1
                        if broken[i] < 2:
                            retry.append(i)  # perhaps it only shared the pool with the culprit
                        else:
                            yield _failed(keys[i], exc, seconds)
                    except Exception as exc:  # noqa: BLE001 - the job's error is its outcome
                        yield _failed(keys[i], exc, seconds)
                    else:
                        yield Outcome(keys[i], value, seconds=seconds)
        finally:
            # a consumer that stops early (an interrupt) takes the workers down with it
            pool.shutdown(wait=not retry and not pending, cancel_futures=True)
        todo = sorted(todo + retry)


def _run_ray(fn, jobs, keys, threads, address, tick, tick_seconds) -> Iterator[Outcome]:
    ray = require("ray", "ray", "the ray backend")
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=available_cores(), include_dashboard=False,
                         log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - Ray's own errors say what went wrong
            raise FastMBRLError(f"cannot start Ray{f' at {address}' if address else ''}: "
                                f"{' '.join(str(exc).split())}") from None
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(_call)
        t0 = time.perf_counter()
        refs = {remote.remote(fn, job, threads): i for i, job in enumerate(jobs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=tick_seconds)
            if tick is not None:
                tick()
            for ref in done:
                i = refs[ref]
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    yield _failed(keys[i], cause if isinstance(cause, BaseException) else exc,
                                  time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - a worker that died, say
                    yield _failed(keys[i], exc, time.perf_counter() - t0)
                else:
                    yield Outcome(keys[i], value, seconds=time.perf_counter() - t0)
    finally:
        if started_here:
            ray.shutdown()
