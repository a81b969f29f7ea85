"""The MDN-RNN (World Models' M): forward and loss against a slow NumPy twin, gradients against
finite differences in float64, sampling statistics, files, bad input."""
import json
import math

import numpy as np
import pytest

from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels import rnn as krnn
from fastmbrl.models.mdnrnn import MDNRNN, Mixture, sample_mixture
from reference import mdnrnn_reference

Z, A, H, K = 3, 2, 4, 2


def _data(rng, b=3, t=5, dtype=np.float64):
    z = rng.standard_normal((b, t + 1, Z)).astype(dtype)
    a = rng.standard_normal((b, t, A)).astype(dtype)
    r = rng.standard_normal((b, t)).astype(dtype)
    d = (rng.random((b, t)) < 0.3).astype(dtype)
    return z, a, r, d


def _model(dtype=np.float64, seed=0, **kw):
    m = MDNRNN(Z, A, H, K, dtype=dtype, seed=seed, grad_clip=None, **kw)
    rng = np.random.default_rng(seed + 100)
    for p in m.params.values():  # larger weights and biases than at init exercise every term
        p[...] = rng.normal(0, 0.7, p.shape)
    return m


def test_forward_and_loss_match_reference():
    rng = np.random.default_rng(0)
    z, a, r, d = _data(rng)
    m = _model(reward_weight=0.5, done_weight=2.0)
    h0, c0 = rng.standard_normal((2, 3, H))
    mask = (rng.random((3, 5)) < 0.7).astype(float)
    loss, _, h, c = m.loss_and_grad(z, a, r, d, h0, c0, mask, grad=False)
    ref, ys, hr, cr = mdnrnn_reference(m.params, Z, K, z, a, r, d, mask, 0.5, 2.0, h0, c0)
    assert loss == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(h, hr, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, cr, rtol=1e-12, atol=1e-14)
    hs, cs = h0, c0  # step() one step at a time gives the same head outputs
    for t in range(5):
        mix, rew, done, hs, cs = m.step(z[:, t], a[:, t], hs, cs)
        y = ys[:, t]
        zk = Z * K
        logits = y[:, :zk].reshape(3, Z, K)
        np.testing.assert_allclose(np.exp(mix.log_pi), np.exp(logits) / np.exp(logits).sum(-1,
                                   keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(mix.mu, y[:, zk:2 * zk].reshape(3, Z, K), rtol=1e-12)
        np.testing.assert_allclose(mix.log_std, y[:, 2 * zk:3 * zk].reshape(3, Z, K), rtol=1e-12)
        np.testing.assert_allclose(rew, y[:, 3 * zk], rtol=1e-12)
        np.testing.assert_allclose(done, 1 / (1 + np.exp(-y[:, 3 * zk + 1])), rtol=1e-12)


def test_float32_matches_reference():
    rng = np.random.default_rng(1)
    z, a, r, d = _data(rng, dtype=np.float32)
    m = _model(np.float32)
    m.params["W"] *= 0.5
    loss, g, _, _ = m.loss_and_grad(z, a, r, d)
    ref = mdnrnn_reference(m.params, Z, K, z, a, r, d)[0]
    assert loss == pytest.approx(ref, rel=1e-5)
    m64 = _model()
    m64.flat_params[:] = m.flat_params
    g64 = m64.loss_and_grad(z, a, r, d)[1]
    np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-5)


def _fd_check(f, x, analytic, h=1e-6, tol=1e-6):
    num = np.zeros_like(x)
    for i in range(x.size):
        old = x.flat[i]
        x.flat[i] = old + h
        up = f()
        x.flat[i] = old - h
        down = f()
        x.flat[i] = old
        num.flat[i] = (up - down) / (2 * h)
    err = np.linalg.norm(num - analytic) / max(np.linalg.norm(num) + np.linalg.norm(analytic),
                                               1e-12)
    assert err < tol, (err, num, analytic)


def test_gradient_of_the_loss_through_time():
    """Every parameter of the whole loss over 5 steps (state in, masked steps) in float64."""
    rng = np.random.default_rng(2)
    z, a, r, d = _data(rng)
    m = _model()
    h0, c0 = rng.standard_normal((2, 3, H))
    mask = np.ones((3, 5))
    mask[0, 3:] = 0
    _, g, _, _ = m.loss_and_grad(z, a, r, d, h0, c0, mask)
    _fd_check(lambda: m.loss_and_grad(z, a, r, d, h0, c0, mask, grad=False)[0],
              m.flat_params, g)


def _head_loss(y, x, rew, done, n_mix, wr=0.7, wd=1.3):
    n = y.shape[0]
    dy = np.zeros_like(y)
    rl = np.zeros((n, 3))
    weight = np.full(n, 1.0 / n)
    krnn.mdn_loss(y, x, rew, done, weight, n_mix, wr, wd, dy, rl)
    return float(weight @ (rl[:, 0] + wr * rl[:, 1] + wd * rl[:, 2])), dy


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_mdn_head_gradient(scale):
    """The heads' loss and gradient, at ordinary and at large logits / log-stds / errors."""
    rng = np.random.default_rng(3)
    n = 4
    y = rng.normal(0, 1, (n, 3 * Z * K + 2))
    y[:, :Z * K] *= scale  # logits
    y[:, 2 * Z * K:3 * Z * K] = rng.uniform(-2, 2, (n, Z * K)) * (1 + scale / 10)
    y[:, -1] *= scale  # done logit
    x = rng.normal(0, scale, (n, Z))
    rew = rng.normal(size=n)
    done = (rng.random(n) < 0.5).astype(float)
    _, dy = _head_loss(y, x, rew, done, K)
    dy_par = np.zeros_like(y)  # the parallel kernel (taken for many rows) agrees exactly
    krnn.mdn_loss(y, x, rew, done, np.full(n, 1.0 / n), K, 0.7, 1.3, dy_par, np.zeros((n, 3)),
                  parallel=True)
    np.testing.assert_array_equal(dy_par, dy)
    _fd_check(lambda: _head_loss(y, x, rew, done, K)[0], y, dy, h=1e-6 * scale, tol=1e-6)


def test_log_sum_exp_extreme_values():
    """exp of the log-densities underflows to 0 here (about -800), and exp of the logits
    overflows (1000): the loss and gradient stay finite and exact."""
    y = np.zeros((1, 3 * K + 2))
    y[0, :K] = [1000.0, -1000.0]  # the first component has all the weight
    x = np.array([[40.0]])
    loss, dy = _head_loss(y, x, np.zeros(1), np.zeros(1), K, wr=0.0, wd=0.0)
    assert loss == pytest.approx(0.5 * np.log(2 * np.pi) + 800.0, rel=1e-14)
    np.testing.assert_allclose(dy[0, :K], [0.0, 0.0], atol=1e-12)  # pi - responsibility
    np.testing.assert_allclose(dy[0, K:2 * K], [-40.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(dy[0, 2 * K:3 * K], [1 - 1600.0, 0.0], rtol=1e-12)
    y[0, -1] = 800.0  # done logit: log(1 + e^800) without overflow
    loss, dy = _head_loss(y, x, np.zeros(1), np.zeros(1), K, wr=0.0, wd=1.0)
    assert loss == pytest.approx(0.5 * np.log(2 * np.pi) + 800.0 + 800.0, rel=1e-14)
    assert dy[0, -1] == pytest.approx(1.0)


def _known_mixture(n):
    log_pi = np.log(np.array([0.3, 0.7]))
    return Mixture(np.broadcast_to(log_pi, (n, 1, 2)).copy(),
                   np.broadcast_to([-2.0, 3.0], (n, 1, 2)).copy(),
                   np.broadcast_to(np.log([0.5, 1.0]), (n, 1, 2)).copy())


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_sampling_statistics(tau):
    n = 40_000
    s = sample_mixture(_known_mixture(n), tau, np.random.default_rng(4))[:, 0]
    w = np.array([0.3, 0.7]) ** (1 / tau)
    w /= w.sum()
    mu, var = np.array([-2.0, 3.0]), np.array([0.25, 1.0]) * tau
    mean = w @ mu
    total_var = w @ (var + mu ** 2) - mean ** 2
    assert abs(s.mean() - mean) < 5 * np.sqrt(total_var / n)
    assert abs(s.var() - total_var) < 0.05 * total_var
    above = [0.5 * math.erfc((0.5 - m_) / math.sqrt(2 * v)) for m_, v in zip(mu, var)]
    p = w @ above  # P(sample > 0.5): tells the weights apart from the stds
    assert abs(np.mean(s > 0.5) - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_sampling_cold_limit():
    mix = _known_mixture(2000)
    np.testing.assert_array_equal(sample_mixture(mix, 0.0, np.random.default_rng(0)), 3.0)
    s = sample_mixture(mix, 1e-4, np.random.default_rng(0))
    assert np.all(np.abs(s - 3.0) < 0.1)  # the heavier component, std 0.01


def test_sample_from_model():
    m = _model()
    rng = np.random.default_rng(5)
    z, a = rng.standard_normal((4, Z)), rng.standard_normal((4, A))
    mix, rew, done, h, c = m.step(z, a)
    zn, rew2, done2, h2, c2 = m.sample(z, a, temperature=0.0, rng=0)
    best = np.take_along_axis(mix.mu, mix.log_pi.argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(zn, best)
    np.testing.assert_array_equal(h2, h)
    assert zn.shape == (4, Z) and np.all((done2 > 0) & (done2 < 1))


def _episodes(rng, b=6, t=12):
    """A learnable world: z_{t+1} = 0.8 z_t + 0.3 a_t (+ small noise), reward = z_t[0]."""
    z = np.zeros((b, t + 1, Z))
    a = rng.uniform(-1, 1, (b, t, A))
    z[:, 0] = rng.standard_normal((b, Z))
    for s in range(t):
        z[:, s + 1] = 0.8 * z[:, s] + 0.3 * a[:, s, :1] + 0.05 * rng.standard_normal((b, Z))
    r = z[:, :-1, 0].copy()
    d = np.zeros((b, t))
    d[0, 7] = 1  # episode 0 ends at step 7: the rest is padding
    return z, a, r, d


def test_fit_learns_and_is_reproducible():
    rng = np.random.default_rng(6)
    data = _episodes(rng)
    runs = []
    for _ in range(2):
        m = MDNRNN(Z, A, 8, K, lr=0.01, dtype=np.float64, seed=3)
        seen = []
        hist = m.fit(*data, epochs=15, batch_size=4, seq_len=5,
                     progress=lambda i, n: seen.append((i, n)))
        runs.append((hist, m.flat_params.copy()))
    hist = runs[0][0]
    assert hist["loss"][-1] < hist["loss"][0] - 0.5
    np.testing.assert_allclose(hist["loss"], hist["nll"] + hist["reward"] + hist["done"])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert seen[-1] == (15 * 2 * 3, 15 * 2 * 3) and len(seen) == 15 * 2 * 3


def test_fit_ignores_padding_and_carries_state():
    """Padding after a done changes nothing; with (almost) no updates, the epoch loss over
    chunks of 2 steps with the state carried equals the loss over whole episodes."""
    rng = np.random.default_rng(7)
    z, a, r, d = _episodes(rng)
    m1 = MDNRNN(Z, A, 8, K, lr=1e-30, dtype=np.float64, seed=1)
    m2 = MDNRNN(Z, A, 8, K, lr=1e-30, dtype=np.float64, seed=1)
    whole = m1.fit(z, a, r, d, epochs=1, batch_size=6, seq_len=12)["loss"]
    z2, r2 = z.copy(), r.copy()
    z2[0, 9:] = 1e3
    r2[0, 8:] = -1e3
    chunked = m2.fit(z2, a, r2, d, epochs=1, batch_size=6, seq_len=2)["loss"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-9)
    ref = mdnrnn_reference(m1.params, Z, K, z, a, r, d,
                           mask=1 - ((np.cumsum(d, 1) - d) > 0))[0]
    assert whole[0] == pytest.approx(ref, rel=1e-6)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    data = _episodes(rng)
    m = MDNRNN(Z, A, 8, K, dtype=np.float64, seed=2, reward_weight=0.5, grad_clip=0.5)
    m.fit(*data, epochs=2, batch_size=3, seq_len=4)
    path = m.save(tmp_path / "m.npz")
    m2 = MDNRNN.load(path)
    np.testing.assert_array_equal(m2.flat_params, m.flat_params)
    assert (m2.reward_weight, m2.grad_clip, m2.optimizer.t, m2.epochs_trained) == (
        0.5, 0.5, m.optimizer.t, 2)
    out1 = m.step(data[0][:, 0], data[1][:, 0])
    out2 = m2.step(data[0][:, 0], data[1][:, 0])
    for u, v in zip(out1[0] + out1[1:], out2[0] + out2[1:]):
        np.testing.assert_array_equal(u, v)
    m.fit(*data, epochs=1, batch_size=3, seq_len=4)  # resumed training is the same training
    m2.fit(*data, epochs=1, batch_size=3, seq_len=4)
    np.testing.assert_array_equal(m2.flat_params, m.flat_params)


def test_bad_files(tmp_path):
    m = MDNRNN(Z, A, H, K, dtype=np.float64)
    path = m.save(tmp_path / "m.npz")
    header, arrays = load_npz(path, "mdnrnn", (1,))
    header = {k: v for k, v in header.items() if k not in ("kind", "format_version")}
    bad = dict(arrays)
    bad["Wo"] = bad["Wo"][:, :-1]
    save_npz(tmp_path / "short.npz", "mdnrnn", 1, header, bad)
    with pytest.raises(FormatError, match="Wo"):
        MDNRNN.load(tmp_path / "short.npz")
    save_npz(tmp_path / "nan.npz", "mdnrnn", 1, header,
             {**arrays, "bo": np.full_like(arrays["bo"], np.nan)})
    with pytest.raises(FormatError, match="NaN"):
        MDNRNN.load(tmp_path / "nan.npz")
    save_npz(tmp_path / "hdr.npz", "mdnrnn", 1, {**header, "hidden": -1}, arrays)
    with pytest.raises(FormatError, match="hidden"):
        MDNRNN.load(tmp_path / "hdr.npz")
    save_npz(tmp_path / "other.npz", "dynamics_model", 1, header, arrays)
    with pytest.raises(FormatError, match="expected a 'mdnrnn'"):
        MDNRNN.load(tmp_path / "other.npz")


def test_bad_inputs_name_the_problem_and_change_nothing():
    rng = np.random.default_rng(9)
    z, a, r, d = _episodes(rng)
    m = MDNRNN(Z, A, H, K, dtype=np.float64)
    before = m.flat_params.copy()
    z_nan = z.copy()
    z_nan[2, 3, 1] = np.nan
    cases = [
        ((z[:, :-1], a, r, d), {}, "z: expected shape"),
        ((z, a[..., :1], r, d), {}, "actions: expected shape"),
        ((z, a, r[:, :-1], d), {}, "rewards: expected shape"),
        ((z, a, r, d + 0.5), {}, "dones: expected 0/1"),
        ((z_nan, a, r, d), {}, "z: contains NaN"),
        ((z, a, r, d), {"seq_len": 0}, "seq_len must be a positive integer"),
        ((z, a, r, d), {"lengths": np.zeros(6, int)}, "lengths: expected 6 integers"),
        ((z, a, r, d), {"batch_size": 2.5}, "batch_size must be"),
    ]
    for args, kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            m.fit(*args, epochs=1, **kw)
    with pytest.raises(ValueError, match="temperature"):
        m.sample(z[:, 0], a[:, 0], temperature=-1.0)
    with pytest.raises(ValueError, match="h: expected shape"):
        m.step(z[:, 0], a[:, 0], h=np.zeros((6, H + 1)))
    with pytest.raises(ValueError, match="n_mix must be"):
        MDNRNN(Z, A, H, 0)
    np.testing.assert_array_equal(m.flat_params, before)
    assert m.optimizer.t == 0 and m.epochs_trained == 0


def test_divergence_stops_before_the_update():
    rng = np.random.default_rng(10)
    z, a, r, d = _episodes(rng)
    m = MDNRNN(Z, A, H, K, dtype=np.float64)
    m.params["Wo"][:, 2 * Z * K:3 * Z * K] = 0
    m.params["bo"][2 * Z * K:3 * Z * K] = -1e4  # log-stds so small the NLL overflows
    before = m.flat_params.copy()
    hist = m.fit(z, a, r, d, epochs=2, batch_size=6, seq_len=12)
    assert np.isnan(hist["loss"]).all()
    np.testing.assert_array_equal(m.flat_params, before)


def test_file_read_as_docs_formats_says(tmp_path):
    """docs/formats.md's mdnrnn.npz step, with NumPy alone, gives MDNRNN.step's outputs."""
    m = _model()
    path = m.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as f:
        w, b, wo, bo = (f[k] for k in ("W", "b", "Wo", "bo"))
    rng = np.random.default_rng(11)
    z, a, h, c = rng.standard_normal((4, Z)), rng.standard_normal((4, A)), *rng.standard_normal(
        (2, 4, H))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    g = np.concatenate([z, a], 1) @ w[:Z + A] + h @ w[Z + A:] + b
    c1 = sig(g[:, H:2 * H]) * c + sig(g[:, :H]) * np.tanh(g[:, 2 * H:3 * H])
    h1 = sig(g[:, 3 * H:]) * np.tanh(c1)
    y = h1 @ wo + bo
    mix, rew, done, h2, c2 = m.step(z, a, h, c)
    np.testing.assert_allclose(h2, h1, rtol=1e-12)
    np.testing.assert_allclose(c2, c1, rtol=1e-12)
    zk = Z * K
    np.testing.assert_allclose(mix.mu[:, 1, 0], y[:, zk + K], rtol=1e-12)
    np.testing.assert_allclose(mix.log_std[:, 2, 1], y[:, 2 * zk + 2 * K + 1], rtol=1e-12)
    np.testing.assert_allclose(rew, y[:, 3 * zk], rtol=1e-12)
    np.testing.assert_allclose(done, sig(y[:, 3 * zk + 1]), rtol=1e-12)


def test_bench_mdnrnn_runs(capsys):
    from fastmbrl.cli import main
    assert main(["bench", "mdnrnn", "--z-dim", "3", "--act-dim", "2", "--hidden", "4",
                 "--mixtures", "2", "--batch", "2", "--seq-len", "3", "--repeats", "1",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["seq_steps_per_s"] > 0 and row["numpy_seq_steps_per_s"] > 0
    assert row["params"] == MDNRNN(3, 2, 4, 2).num_params
    assert main(["bench", "mdnrnn", "--seq-len", "0"]) == 2
    assert "--seq-len" in capsys.readouterr().err
