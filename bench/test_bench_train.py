"""Training throughput (pytest-benchmark): one epoch of minibatch Adam per round, fastmbrl and
the plain NumPy reference, on the configurations of `fastmbrl bench train`.

Run: python -m pytest bench/test_bench_train.py --benchmark-only
"""
import pytest

from fastmbrl.cli.bench.train import CONFIGS, blas_info, fastmbrl_epoch, make_data, numpy_epoch

SAMPLES = 25_600


@pytest.mark.parametrize("impl", ["fastmbrl", "numpy"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_train_epoch(benchmark, name, impl):
    cfg = CONFIGS[name]
    x, y = make_data(cfg, SAMPLES)
    run = (fastmbrl_epoch if impl == "fastmbrl" else numpy_epoch)(cfg, x, y)
    run()  # warm-up outside the timing
    benchmark.group = name
    benchmark.extra_info.update(samples=SAMPLES, blas=blas_info())
    benchmark.pedantic(run, rounds=5, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (CI's smoke run)
        benchmark.extra_info["samples_per_s"] = SAMPLES / benchmark.stats.stats.median
