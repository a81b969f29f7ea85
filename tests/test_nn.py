import numpy as np
import pytest

from fastmbrl.models.mlp import ACTIVATIONS, MLP, SGD, Adam, get_activation

ACTS = ["relu", "tanh", "silu"]


def _loss(net, x, r):
    return float(np.sum(net.forward(x) * r))


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_check_float64(activation, seed):
    """Every parameter and the input gradient against central differences, in float64."""
    rng = np.random.default_rng(seed)
    in_dim, out_dim = rng.integers(1, 6, size=2)
    hidden = tuple(rng.integers(2, 9, size=rng.integers(1, 4)))
    net = MLP(in_dim, out_dim, hidden, activation, dtype=np.float64, rng=rng)
    for b in net.biases:  # non-zero biases so their gradients are exercised too
        b[...] = rng.normal(0, 0.3, size=b.shape)
    x = rng.normal(size=(7, in_dim))
    r = rng.normal(size=(7, out_dim))  # loss = sum(out * r), so dL/dout = r
    net.forward(x)
    gx = net.backward(r)
    h = 1e-6

    def rel_err(a, b):
        return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)

    for p, g in zip(net.params, net.grads):
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = _loss(net, x, r)
            p[idx] = old - h
            down = _loss(net, x, r)
            p[idx] = old
            num[idx] = (up - down) / (2 * h)
        assert rel_err(g, num) < 1e-6, (p.shape, rel_err(g, num))
    num_x = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num_x[idx] = (_loss(net, xp, r) - _loss(net, xm, r)) / (2 * h)
    assert rel_err(gx, num_x) < 1e-6


@pytest.mark.parametrize("activation", ACTS)
def test_activations_match_definitions(activation):
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, size=(5, 4))
    z[0, 0] = 0.0
    act = get_activation(activation)
    a = act.forward(z)
    expected = {"relu": np.maximum(z, 0), "tanh": np.tanh(z), "silu": z / (1 + np.exp(-z))}[activation]
    np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-15)
    g = rng.normal(size=z.shape)
    eps = 1e-6
    num = (act.forward(z + eps) - act.forward(z - eps)) / (2 * eps)
    mask = np.abs(z) > 1e-3 if activation == "relu" else np.ones(z.shape, bool)  # relu kink
    np.testing.assert_allclose(act.backward(z, a, g.copy())[mask], (g * num)[mask], rtol=1e-6, atol=1e-9)


def test_activation_aliases_and_errors():
    assert get_activation("swish") is ACTIVATIONS["silu"]
    assert MLP(2, 1, (3,), "swish", rng=0).activation == "silu"
    with pytest.raises(ValueError, match="activation"):
        MLP(2, 1, (3,), "gelu")
    with pytest.raises(ValueError, match="overlap"):
        z = np.ones(3)
        get_activation("silu").forward(z, z)


def test_activations_propagate_nan():
    z = np.array([np.nan, -1.0, 2.0], np.float32)
    for name in ACTS:
        assert np.isnan(get_activation(name).forward(z)[0]), name


def test_layout_and_contract():
    net = MLP(5, 3, (8, 6), rng=0)
    assert net.dtype == np.float32 and net.activation == "relu"
    assert [w.shape for w in net.weights] == [(5, 8), (8, 6), (6, 3)]
    assert [b.shape for b in net.biases] == [(8,), (6,), (3,)]
    assert all(p is q for p, q in zip(net.params[0::2], net.weights))
    assert all(p.flags.c_contiguous and p.dtype == np.float32 for p in net.params)
    assert all(np.shares_memory(p, net.flat_params) for p in net.params)
    assert net.flat_params.size == sum(p.size for p in net.params)
    assert [g.shape for g in net.grads] == [p.shape for p in net.params]
    out = net.forward(np.ones((4, 5)))
    assert out.shape == (4, 3) and out.dtype == np.float32


def test_seeded_init_is_reproducible():
    a = MLP(4, 2, (16,), rng=7)
    b = MLP(4, 2, (16,), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, MLP(4, 2, (16,), rng=8).flat_params)


def test_float32_matches_float64():
    n64 = MLP(6, 2, (32, 32), "silu", dtype=np.float64, rng=1)
    n32 = MLP(6, 2, (32, 32), "silu", rng=1)
    n32.load_state_dict(n64.state_dict())
    x = np.random.default_rng(0).normal(size=(10, 6))
    np.testing.assert_allclose(n32.forward(x), n64.forward(x), rtol=1e-4, atol=1e-5)


def test_forward_out_and_batch_sizes():
    net = MLP(3, 2, (5,), "tanh", rng=0)
    x = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    buf = np.empty((9, 2), np.float32)
    assert net.forward(x, out=buf) is buf
    first = buf.copy()
    net.forward(x[:4])  # another batch size, another workspace
    np.testing.assert_array_equal(net.forward(x), first)
    with pytest.raises(ValueError, match="out"):
        net.forward(x, out=np.empty((9, 2)))
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 3\)"):
        net.forward(np.ones((4, 2)))
    with pytest.raises(ValueError, match="grad_out"):
        net.backward(np.ones((8, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        MLP(3, 2, (5,), rng=0).backward(np.ones((1, 2)))


def test_state_dict_round_trip_and_refusals():
    a = MLP(3, 2, (4, 4), rng=0)
    b = MLP(3, 2, (4, 4), rng=1)
    ids = [id(p) for p in b.params]
    b.load_state_dict(a.state_dict())
    assert [id(p) for p in b.params] == ids
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert set(a.state_dict()) == {"W0", "b0", "W1", "b1", "W2", "b2"}
    before = b.flat_params.copy()
    bad = a.state_dict()
    bad["W1"] = np.ones((4, 5))
    with pytest.raises(ValueError, match=r"state\['W1'\]: expected shape \(4, 4\)"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["b2"] = np.array([np.nan, 0.0])
    with pytest.raises(ValueError, match="finite"):
        b.load_state_dict(bad)
    with pytest.raises(ValueError, match="keys"):
        b.load_state_dict({"W0": a.weights[0]})
    np.testing.assert_array_equal(b.flat_params, before)


def _adam_reference(p, grads_seq, lr, b1, b2, eps, wd):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads_seq, 1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_matches_reference_fused_and_not(weight_decay):
    rng = np.random.default_rng(0)
    net = MLP(3, 2, (4,), dtype=np.float64, rng=0)
    loose = [p.copy() for p in net.params]  # separate arrays: the per-array path
    start = net.flat_params.copy()
    seq = [rng.normal(size=start.size) for _ in range(5)]
    fused = Adam(net.params, lr=0.01, weight_decay=weight_decay)
    split = Adam(loose, lr=0.01, weight_decay=weight_decay)
    # parameters that tile one flat vector keep one state array; separate ones one each
    assert len(fused.m) == 1 and len(split.m) == len(loose)
    ids = [id(p) for p in net.params]
    for g in seq:
        net.flat_grads[:] = g
        fused.step(net.grads)
        split.step([g_.copy() for g_ in net.grads])
    assert [id(p) for p in net.params] == ids
    expected = _adam_reference(start, seq, 0.01, 0.9, 0.999, 1e-8, weight_decay)
    np.testing.assert_allclose(net.flat_params, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in loose]), expected, rtol=1e-12)


def test_sgd_momentum_matches_reference():
    p = np.array([1.0, -2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    ref, buf = p.copy(), np.zeros(2)
    for g in ([1.0, 1.0], [0.5, -1.0], [0.0, 2.0]):
        opt.step([np.array(g)])
        buf = 0.9 * buf + np.array(g)
        ref -= 0.1 * buf
    np.testing.assert_allclose(p, ref)


def test_optimizer_errors():
    p = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="lr"):
        Adam([p], lr=0)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="momentum"):
        SGD([p], lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match=r"params\[0\]"):
        SGD([np.zeros(3, int)], lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[0\]: expected shape \(3,\)"):
        Adam([p]).step([np.zeros(4)])
    with pytest.raises(ValueError, match="expected 1 arrays"):
        Adam([p]).step([p, p])


def test_training_reduces_loss():
    """A small regression fits: forward, backward and Adam work together in float32."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(256, 2)).astype(np.float32)
    y = np.sin(2 * x[:, :1]) * x[:, 1:]
    net = MLP(2, 1, (32, 32), "tanh", rng=0)
    opt = Adam(net.params, lr=3e-3)
    losses = []
    for _ in range(300):
        err = net.forward(x) - y
        losses.append(float(np.mean(err ** 2)))
        net.backward(2 * err / err.size, input_grad=False)
        opt.step(net.grads)
    assert losses[-1] < 0.05 * losses[0]
