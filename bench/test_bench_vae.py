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


@pytest.mark.parametrize("impl", ["frame_encoder", "encode"])
def test_encode_one_frame(benchmark, impl):
    """Acting's case: one 64x64 frame to mu, FrameEncoder (one thread, the register tile) next
    to ConvVAE.encode (BLAS's threads); run it beside other jobs to see the tails differ."""
    from fastmbrl.models.vae import FrameEncoder

    vae = ConvVAE(CONFIGS["paper"], seed=0)
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if impl == "frame_encoder":
        enc = FrameEncoder(vae)
        run = lambda: enc.encode(frame)  # noqa: E731
    else:
        run = lambda: vae.encode(frame[None])  # noqa: E731
    run()
    benchmark.group = "vae_encode_one_frame"
    benchmark.extra_info.update(blas=blas_info())
    benchmark.pedantic(run, rounds=500, iterations=1)
