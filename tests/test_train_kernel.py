"""The tile training kernel (kernels/train.py, behind nn.train_mse_epochs) against its float64
twin (tests/reference.py), on every instruction-set spec."""
import numba
import numpy as np
import pytest

from fastmbrl.kernels import num_threads
from fastmbrl.kernels.isa import SPECS
from fastmbrl.models.mlp import MLP, Adam, train_mse_epoch, train_mse_epochs
from tests.reference import mse_epoch_reference

THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]
# eps far above sqrt(v) makes each Adam step linear in the gradient (about lr * g / eps), so
# float32 against float64 compares gradients, not the signs of near-zero ones
LINEAR_ADAM = dict(lr=0.05, eps=10.0, weight_decay=1e-2)


@pytest.fixture(params=sorted(SPECS))
def isa(request):
    return SPECS[request.param]


def _data(rng, n, d_in, d_out):
    return (rng.standard_normal((n, d_in)).astype(np.float32),
            rng.standard_normal((n, d_out)).astype(np.float32))


def _members(b, d_in, d_out, hidden, activation):
    nets = [MLP(d_in, d_out, hidden, activation, rng=s) for s in range(b)]
    for s, net in enumerate(nets):  # non-zero biases, so their gradients matter
        for bias in net.biases:
            bias[...] = np.random.default_rng(100 + s).normal(0, 0.2, bias.shape)
    return nets


def _reference_run(nets, opts, x, y, batch, seed, rows, noise_std):
    """Replays train_mse_epochs' draws (per member: permutation, then noise) on float64
    copies; returns the losses and the resulting (weights, biases, m, v) per member."""
    rng = np.random.default_rng(seed)
    out = []
    for m, (net, opt) in enumerate(zip(nets, opts)):
        n = x.shape[0] if rows is None else len(rows[m])
        perm = rng.permutation(n)
        order = perm if rows is None else np.asarray(rows[m])[perm]
        noise = None
        if noise_std > 0:
            noise = rng.standard_normal((n, net.in_dim), dtype=np.float32) * np.float32(noise_std)
        w = [a.astype(np.float64) for a in net.weights]
        b = [a.astype(np.float64) for a in net.biases]
        mom = [np.zeros(p.shape) for p in net.params]
        vel = [np.zeros(p.shape) for p in net.params]
        loss = mse_epoch_reference(w, b, net.activation, x, y, order, batch, opt.lr, opt.betas,
                                   opt.eps, opt.weight_decay, 0, mom, vel, noise)
        out.append((loss, w, b, mom, vel))
    return out


def _assert_close(nets, opts, losses, reference):
    for net, opt, loss, (ref_loss, w, b, mom, vel) in zip(nets, opts, losses, reference):
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for got, want in zip(net.params, [p for pair in zip(w, b) for p in pair]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        grads_m = opt.m[0]
        flat_m = np.concatenate([a.ravel() for a in mom])
        flat_v = np.concatenate([a.ravel() for a in vel])
        np.testing.assert_allclose(grads_m, flat_m, rtol=1e-3, atol=1e-7 * np.abs(flat_m).max())
        np.testing.assert_allclose(opt.v[0], flat_v, rtol=2e-3, atol=1e-6 * flat_v.max())


# widths 70, 33 and 10 are no multiple of 4, 8 or 16 lanes nor of 4, 6 or 8 tile rows; a
# 1-wide output is one padded lane; batches of 50 and 32 are no multiple of 6 rows, and 123 rows
# leave a short last batch
CASES = [("relu", (40, 70), 5, 3, 123, 50), ("silu", (20, 10, 33), 7, 1, 70, 32),
         ("tanh", (16,), 3, 17, 64, 64), ("relu", (), 4, 2, 30, 8)]


@pytest.mark.parametrize("activation,hidden,d_in,d_out,n,batch", CASES)
def test_epoch_matches_reference(activation, hidden, d_in, d_out, n, batch, isa):
    x, y = _data(np.random.default_rng(n), n, d_in, d_out)
    nets = _members(1, d_in, d_out, hidden, activation)
    opts = [Adam(net.params, **LINEAR_ADAM) for net in nets]
    reference = _reference_run(nets, opts, x, y, batch, 7, None, 0.0)
    losses = train_mse_epochs(nets, opts, x, y, batch, np.random.default_rng(7), isa=isa)
    _assert_close(nets, opts, losses, reference)
    assert opts[0].t == -(-n // batch)


@pytest.mark.parametrize("threads", THREADS)
def test_ensemble_with_bootstrap_and_noise_matches_reference(threads, isa):
    """Members train together on their own resamples, with input noise."""
    n, d_in, d_out = 90, 6, 4
    x, y = _data(np.random.default_rng(1), n, d_in, d_out)
    rows = np.random.default_rng(2).integers(0, n, (3, n))
    nets = _members(3, d_in, d_out, (24, 18), "silu")
    opts = [Adam(net.params, **LINEAR_ADAM) for net in nets]
    reference = _reference_run(nets, opts, x, y, 40, 5, rows, 0.05)
    with num_threads(threads):
        losses = train_mse_epochs(nets, opts, x, y, 40, np.random.default_rng(5), 0.05,
                                  rows=rows, isa=isa)
    _assert_close(nets, opts, losses, reference)


def test_same_result_with_one_thread_or_two():
    n = 300
    x, y = _data(np.random.default_rng(3), n, 23, 17)
    results = []
    for threads in THREADS:
        nets = _members(2, 23, 17, (200, 200), "relu")
        opts = [Adam(net.params) for net in nets]
        with num_threads(threads):
            for epoch in range(2):
                losses = train_mse_epochs(nets, opts, x, y, 64, np.random.default_rng(epoch))
        results.append((losses, [net.flat_params.copy() for net in nets]))
    for losses, params in results[1:]:
        np.testing.assert_array_equal(losses, results[0][0])
        for a, b in zip(params, results[0][1]):
            np.testing.assert_array_equal(a, b)


def test_later_epochs_continue_adam():
    """The Adam state (moments, step count) carries over between calls, as with Adam.step."""
    x, y = _data(np.random.default_rng(4), 64, 3, 2)
    net = _members(1, 3, 2, (12,), "tanh")[0]
    opt = Adam(net.params, **LINEAR_ADAM)
    ref_w = [w.astype(np.float64) for w in net.weights]
    ref_b = [b.astype(np.float64) for b in net.biases]
    mom = [np.zeros(p.shape) for p in net.params]
    vel = [np.zeros(p.shape) for p in net.params]
    for epoch in range(3):
        rng = np.random.default_rng(epoch)
        order = np.random.default_rng(epoch).permutation(64)
        want = mse_epoch_reference(ref_w, ref_b, "tanh", x, y, order, 16, opt.lr, opt.betas,
                                   opt.eps, opt.weight_decay, opt.t, mom, vel)
        got = train_mse_epoch(net, opt, x, y, 16, rng)
        assert got == pytest.approx(want, rel=1e-5)
    for got, want in zip(net.params, [p for pair in zip(ref_w, ref_b) for p in pair]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert opt.t == 12


def test_divergence_gives_nan_and_stops():
    x, y = _data(np.random.default_rng(5), 64, 3, 2)
    x[40:] *= np.float32(1e30)  # the third batch overflows
    net = _members(1, 3, 2, (8,), "relu")[0]
    opt = Adam(net.params)
    loss = train_mse_epoch(net, opt, x, y, 20, np.random.default_rng(0))
    assert np.isnan(loss)
    assert opt.t < 4  # it stopped before the last batch


def test_bad_inputs():
    net = MLP(3, 2, (8,), "relu", rng=0)
    opt = Adam(net.params)
    x, y = _data(np.random.default_rng(6), 10, 3, 2)
    with pytest.raises(ValueError, match="x, y"):
        train_mse_epochs([net], [opt], x[:, :2], y, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rows"):
        train_mse_epochs([net], [opt], x, y, 4, np.random.default_rng(0), rows=[[0, 10]])
    with pytest.raises(ValueError, match="same"):
        train_mse_epochs([net], [], x, y, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size"):
        train_mse_epochs([net], [opt], x, y, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown instruction-set spec"):
        train_mse_epochs([net], [opt], x, y, 4, np.random.default_rng(0), isa="mmx")


def test_members_of_different_shapes_train_one_by_one():
    """The joint kernel needs one architecture; mixed members still train, each correctly."""
    x, y = _data(np.random.default_rng(8), 40, 3, 2)
    nets = [MLP(3, 2, (8,), "relu", rng=0), MLP(3, 2, (5, 4), "tanh", rng=1)]
    opts = [Adam(net.params, **LINEAR_ADAM) for net in nets]
    twins = [MLP(3, 2, n.hidden, n.activation, rng=s) for s, n in enumerate(nets)]
    twin_opts = [Adam(net.params, **LINEAR_ADAM) for net in twins]
    losses = train_mse_epochs(nets, opts, x, y, 16, np.random.default_rng(0))
    alone = [train_mse_epoch(t, o, x, y, 16, np.random.default_rng(0)) for t, o in
             zip(twins[:1], twin_opts[:1])]
    assert np.isfinite(losses).all() and losses[0] == pytest.approx(alone[0], rel=1e-5)
    assert all(o.t == 3 for o in opts)
