"""What every benchmark reports beside its figures: the machine, the spec, the BLAS."""
from __future__ import annotations

import time

import numba
import numpy as np

from fastmbrl.kernels import isa


def machine() -> dict:
    """The instruction-set spec and the CPU the kernels were compiled for, on every row."""
    facts = isa.describe()
    return {"isa": facts["isa"], "cpu": facts["cpu"], "host_cpu": facts["host_cpu"],
            "threads": numba.get_num_threads()}


def machine_line() -> str:
    m, spec = machine(), isa.current()
    cpu = m["cpu"]
    if cpu != m["host_cpu"]:
        cpu += f" (compiled for; host {m['host_cpu']})"
    return (f"ISA spec {spec.name} ({spec.lanes} lanes, {spec.tile_rows}x{spec.tile_vectors} "
            f"register tile); CPU {cpu}; numba threads {m['threads']}")


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(sorted({f"{i.get('internal_api')} {i.get('version')} "
                             f"{i.get('architecture')} x{i.get('num_threads')}"
                             for i in blas})) or "none found"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sgemm_gflops(n: int = 1024, repeats: int = 10) -> float:
    """NumPy's float32 matmul throughput right now: the machine's practical peak, measured in
    the same run because other jobs on shared cores move it a lot."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = min(timed(lambda: np.matmul(a, a, out=out)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def median_time(run, repeats: int) -> float:
    """Median seconds of `repeats` calls of run(), after one untimed call (numba compilation,
    workspaces, BLAS threads)."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def add_mdnrnn_sizes(parser) -> None:
    """--json and M's sizes (defaults: the paper's CarRacing M) for the World Models benches."""
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--z-dim", type=int, default=32)
    parser.add_argument("--act-dim", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256, help="LSTM units (default 256)")
    parser.add_argument("--mixtures", type=int, default=5)
