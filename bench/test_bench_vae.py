"""VAE training throughput (pytest-benchmark): one Adam step of 100 frames per round, fastmbrl
and the plain NumPy reference, on the configurations of `fastmbrl bench vae`.

Run: python -m pytest bench/test_bench_vae.py --benchmark-only
"""
import numpy as np
import pytest

from fastmbrl.cli.bench.vae import CONFIGS, NumpyVAE, blas_info
from fastmbrl.models.vae import ConvVAE

BATCH = 100


@pytest.mark.parametrize("impl", ["fastmbrl", "numpy"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_vae_step(benchmark, name, impl):
    cfg = CONFIGS[name]
    frames = np.random.default_rng(0).integers(
        0, 256, (BATCH, cfg.image_size, cfg.image_size, cfg.channels), dtype=np.uint8)
    if impl == "fastmbrl":
        vae = ConvVAE(cfg, seed=0)
        run = lambda: vae.fit(frames, 1, BATCH)  # noqa: E731
    else:
        ref = NumpyVAE(ConvVAE(cfg, seed=0))
        run = lambda: ref.step(frames)  # noqa: E731
    run()  # warm-up outside the timing
    benchmark.group = f"vae_{name}"
    benchmark.extra_info.update(batch_size=BATCH, blas=blas_info())
    benchmark.pedantic(run, rounds=5, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (CI's smoke run)
        benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.median
