"""World Models' ConvVAE (models/vae.py): the whole loss and its gradient against the loop
twins and finite differences in float64, training, save/load, bad input, the bench."""
import json

import numpy as np
import pytest

from fastmbrl.errors import FormatError
from fastmbrl.models.vae import ConvVAE, VAEConfig, vae_num_params
from reference import vae_loss_reference

# 16x16x3 -> 7x7x4 -> 2x2x8 -> z 4 -> 16 -> 6x6x8 -> 16x16x3
TINY = dict(image_size=16, z_size=4, enc_channels=(4, 8), enc_kernels=(4, 4), dense_size=16,
            dec_channels=(8, 3), dec_kernels=(6, 6))


def _frames(n, seed=0, size=16):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_paper_sizes_are_the_default():
    cfg = VAEConfig()
    assert cfg.enc_sizes() == [31, 14, 6, 2] and cfg.flat_size == 1024
    assert cfg.dec_sizes() == [5, 13, 30, 64]
    assert vae_num_params() == 4_348_547  # the paper's 4.35 M
    assert ConvVAE(cfg).num_params == vae_num_params()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.random((4, 16, 16, 3)), rng.standard_normal((4, 4))


def _kl(vae, x, eps):
    mu, logvar = vae.encode(x)
    return -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum(axis=1)


def test_loss_matches_the_reference_and_its_gradient_finite_differences(batch):
    x, eps = batch
    vae = ConvVAE(seed=1, dtype=np.float64, **TINY)
    for w in vae.enc_dense.weights:  # a wider posterior: KLs of a few nats, on both sides of
        w *= 8                       # the floor
    kl = _kl(vae, x, eps)
    tol = float(np.median(kl)) / 4  # the floor between the samples' KLs: both branches count
    vae = ConvVAE(VAEConfig(**TINY, kl_tolerance=tol), seed=1, dtype=np.float64)
    for w in vae.enc_dense.weights:
        w *= 8
    assert (kl > tol * 4).any() and (kl < tol * 4).any()
    loss, grads = vae.loss_and_grads(x, eps)
    assert loss == pytest.approx(vae_loss_reference(vae, x, eps), rel=1e-12)
    rng = np.random.default_rng(2)
    h = 1e-6
    for p, g in zip(vae.params(), grads):
        for i in rng.choice(p.size, 25, replace=False):
            old = p[i]
            p[i] = old + h
            up = vae.loss_and_grads(x, eps)[0]
            p[i] = old - h
            down = vae.loss_and_grads(x, eps)[0]
            p[i] = old
            assert g[i] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7)
    # the whole gradient along a random direction
    d = [rng.standard_normal(p.shape) for p in vae.params()]
    for p, di in zip(vae.params(), d):
        p += h * di
    up = vae.loss_and_grads(x, eps)[0]
    for p, di in zip(vae.params(), d):
        p -= 2 * h * di
    down = vae.loss_and_grads(x, eps)[0]
    for p, di in zip(vae.params(), d):
        p += h * di
    assert sum(float(g.ravel() @ di.ravel()) for g, di in zip(grads, d)) == pytest.approx(
        (up - down) / (2 * h), rel=1e-6)


def test_the_numpy_reference_of_the_bench_computes_the_same_loss_and_gradients(batch):
    from fastmbrl.cli.bench.vae import numpy_loss_and_grads

    x, eps = batch
    vae = ConvVAE(VAEConfig(**TINY, kl_tolerance=0.0), seed=2, dtype=np.float64)
    loss, grads = vae.loss_and_grads(x, eps)
    ref_loss, ref = numpy_loss_and_grads(vae.state_dict(), vae.config, x, eps)
    assert ref_loss == pytest.approx(loss, rel=1e-12)
    names = [k for k in vae.state_dict() if k.startswith(("enc", "dec")) and "dense" not in k]
    conv = np.concatenate([ref[k].ravel() for k in names])
    np.testing.assert_allclose(grads[0], conv, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads[1], np.concatenate([ref["enc_dense_w"].ravel(),
                                                         ref["enc_dense_b"]]), rtol=1e-9)
    np.testing.assert_allclose(grads[2], np.concatenate([ref["dec_dense_w"].ravel(),
                                                         ref["dec_dense_b"]]), rtol=1e-9)


def test_fit_lowers_the_loss_and_save_load_resumes_the_same_run(tmp_path):
    frames = _frames(64)
    # two smooth blobs: a learnable image family, so reconstructions should improve
    yy, xx = np.mgrid[:16, :16]
    centres = np.random.default_rng(3).uniform(3, 13, (64, 2))
    blob = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 8)
    frames = (255 * blob[..., None] * np.array([1.0, 0.5, 0.2])).astype(np.uint8)
    vae = ConvVAE(VAEConfig(**TINY, lr=3e-3), seed=4)
    calls = []
    hist = vae.fit(frames, epochs=6, batch_size=16, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (24, 24) and len(calls) == 24
    assert hist[-1]["r_loss"] < 0.7 * hist[0]["r_loss"]
    assert all(h["kl_loss"] >= 0.5 * 4 for h in hist)  # the floor
    mu, logvar = vae.encode(frames[:5])
    assert mu.shape == logvar.shape == (5, 4)
    recon = vae.decode(mu)
    assert recon.shape == (5, 16, 16, 3) and 0 <= recon.min() and recon.max() <= 1
    path = vae.save(tmp_path / "vae.npz")
    other = ConvVAE.load(path)
    assert other.config == vae.config and other.epochs_done == 6
    np.testing.assert_array_equal(other.encode(frames[:5])[0], mu)
    a = vae.fit(frames, 1, 16)
    b = other.fit(frames, 1, 16)  # same weights, Adam state and generator: the same epoch
    assert a == b
    np.testing.assert_array_equal(vae.params()[0], other.params()[0])


def test_bad_input_names_the_problem(tmp_path):
    vae = ConvVAE(**TINY)
    with pytest.raises(ValueError, match="frames: expected shape"):
        vae.fit(_frames(4, size=8), 1, 2)
    with pytest.raises(ValueError, match="batch_size"):
        vae.fit(_frames(4), 1, 8)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        vae.encode(np.full((1, 16, 16, 3), 2.0))
    with pytest.raises(ValueError, match="z: expected shape"):
        vae.decode(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="dec_kernels"):
        ConvVAE(**dict(TINY, dec_kernels=(5, 6)))
    with pytest.raises(ValueError, match="enc_kernels"):
        ConvVAE(**dict(TINY, enc_channels=(4, 8, 8), enc_kernels=(4, 4, 4)))
    path = vae.save(tmp_path / "v.npz")
    from fastmbrl.io import load_npz, save_npz
    header, arrays = load_npz(path, "conv_vae", (1,))
    arrays["dec0_w"] = arrays["dec0_w"][:1]
    save_npz(tmp_path / "bad.npz", "conv_vae", 1, {k: v for k, v in header.items()
                                                   if k not in ("kind", "format_version")}, arrays)
    with pytest.raises(FormatError, match="dec0_w"):
        ConvVAE.load(tmp_path / "bad.npz")


def test_bench_vae_smoke(capsys):
    from fastmbrl.cli import main

    assert main(["bench", "vae", "--configs", "tiny", "--json", "--steps", "1",
                 "--batch-size", "4"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["config"] == "tiny" and row["images_per_s"] > 0 and row["numpy_images_per_s"] > 0


def test_sizes_beyond_the_memory_limit_are_refused_before_allocating():
    from fastmbrl.limits import ResourceLimitError, set_max_bytes

    previous = set_max_bytes("1G")
    try:
        with pytest.raises(ResourceLimitError, match="dense_size"):
            ConvVAE(dense_size=100_000)
        vae = ConvVAE()  # the paper's model fits (70 MB with Adam); batches of 1,000 do not
        with pytest.raises(ResourceLimitError, match="batch_size"):
            vae.fit(np.zeros((1_000, 64, 64, 3), np.uint8), 1, 1_000)
    finally:
        set_max_bytes(previous)


def test_init_output_bias_starts_the_decoder_at_the_frames_mean_colour():
    frames = np.full((40, 16, 16, 3), 250, np.uint8)
    frames[:, 6:9, :, :] = (200, 80, 80)  # a thin bar on near-white, like the pixel Pendulum
    vae = ConvVAE(VAEConfig(**TINY), seed=1)
    vae.init_output_bias(frames, sample=7)
    vae.dec_w[-1][...] = 0  # the output is then the bias alone, whatever z
    out = vae.decode(np.zeros((2, 4)))
    want = frames.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), rtol=1e-5)
    white = np.full((3, 16, 16, 3), 255, np.uint8)
    vae.init_output_bias(white)
    np.testing.assert_allclose(vae.decode(np.zeros((1, 4))), 0.98, rtol=1e-5)  # clipped
    with pytest.raises(ValueError, match="frames: expected shape"):
        vae.init_output_bias(white[:, :8])


# channels (5, 6) fill no whole panel on any spec, so the encoder's zero padding is exercised
PADDED = dict(TINY, enc_channels=(5, 6), enc_kernels=(4, 3))


@pytest.mark.parametrize("isa", ["avx512", "avx2", "neon", "generic"])
@pytest.mark.parametrize("sizes", [TINY, PADDED], ids=["tiny", "padded"])
def test_frame_encoder_gives_encodes_mu_on_every_spec(isa, sizes):
    from fastmbrl.models.vae import FrameEncoder

    vae = ConvVAE(VAEConfig(**sizes), seed=3)
    rng = np.random.default_rng(4)
    for b in vae.enc_b:  # biases start at 0; the kernel must add them
        b[...] = rng.normal(0, 0.1, b.shape)
    vae.enc_dense.biases[0][...] = rng.normal(0, 0.1, vae.enc_dense.biases[0].shape)
    frames = _frames(3, seed=5)
    want, _ = vae.encode(frames)
    enc = FrameEncoder(vae, isa)
    got = np.stack([enc.encode(f).copy() for f in frames])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    out = np.empty(4, np.float32)
    floats = frames[1] / 255.0  # float64, copied to float32 as encode does
    assert enc.encode(floats, out=out) is out
    np.testing.assert_allclose(out, vae.encode(floats[None])[0][0], rtol=1e-5, atol=1e-6)


def test_frame_encoder_refuses_bad_frames_and_outputs():
    from fastmbrl.models.vae import FrameEncoder

    enc = FrameEncoder(ConvVAE(VAEConfig(**TINY)))
    frame = _frames(1)[0]
    with pytest.raises(ValueError, match=r"shape \(16, 16, 3\)"):
        enc.encode(frame[:8])
    with pytest.raises(ValueError, match="uint8 or floats"):
        enc.encode(frame.astype(np.int64))
    out = np.full(4, 7.0, np.float32)
    for bad in (1.5, np.nan, 1 + 1e-9, -1e-50):  # the last two round into [0, 1] as float32
        f = frame / 255.0
        f[3, 4, 1] = bad
        with pytest.raises(ValueError, match=r"finite and in \[0, 1\]"):
            enc.encode(f, out=out)
        with pytest.raises(ValueError, match=r"finite and in \[0, 1\]"):
            ConvVAE(VAEConfig(**TINY)).encode(f[None])  # as V.encode says
    assert (out == 7.0).all()  # a refused frame leaves `out` alone
    with pytest.raises(ValueError, match="out"):
        enc.encode(frame, out=np.empty(4, np.float64))
    with pytest.raises(ValueError, match="float32"):
        FrameEncoder(ConvVAE(VAEConfig(**TINY), dtype=np.float64))
