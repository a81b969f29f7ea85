"""Dream throughput (pytest-benchmark): a CMA-ES generation of CarRacing-sized controllers (24 x
2 rollouts of 200 steps) inside a CarRacing-sized M, fastmbrl's kernel and the plain NumPy
reference of `fastmbrl bench dream`.

Run: python -m pytest bench/test_bench_dream.py --benchmark-only
"""
import numpy as np
import pytest

from fastmbrl.cli.bench.dream import make_case, numpy_dream
from fastmbrl.cli.bench.common import blas_info
from fastmbrl.models.wm_controller import dream

POPULATION, ROLLOUTS, HORIZON = 24, 2, 200


@pytest.mark.parametrize("impl", ["fastmbrl", "numpy"])
def test_dream_generation(benchmark, impl):
    model, pop, z0, low, high = make_case(population=POPULATION, rollouts=ROLLOUTS)
    if impl == "fastmbrl":
        run = lambda: dream(model, pop, z0, HORIZON, low, high)  # noqa: E731
    else:
        shape = (POPULATION, ROLLOUTS, HORIZON, model.z_dim)
        rng = np.random.default_rng(0)
        pick = rng.random(shape, dtype=np.float32)
        noise = rng.standard_normal(shape, dtype=np.float32)
        run = lambda: numpy_dream(model, pop, z0, low, high, pick, noise, 1.0)  # noqa: E731
    run()  # warm-up outside the timing
    benchmark.group = "dream_carracing"
    benchmark.extra_info.update(population=POPULATION, rollouts=ROLLOUTS, horizon=HORIZON,
                                blas=blas_info())
    benchmark.pedantic(run, rounds=3, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (CI's smoke run)
        benchmark.extra_info["steps_per_s"] = (POPULATION * ROLLOUTS * HORIZON
                                               / benchmark.stats.stats.median)
