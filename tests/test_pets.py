"""Probabilistic ensembles with trajectory sampling (PETS): the Gaussian head's gradients, its
training kernel, fitting, elites, save/load, the particle kernel against its NumPy twin, and
planning with particles."""
import json

import numba
import numpy as np
import pytest

from fastmbrl.algorithms.mbrl import MBRLConfig
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels import num_threads
from fastmbrl.kernels import planner_ops as ops
from fastmbrl.kernels.rollout import pack_model, particle_rollout, slot_of
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.models.mlp import MLP, Adam, GaussianHead, train_mse_epochs
from fastmbrl.planning.controller import Controller
from fastmbrl.planning.planners import CEM
from tests.reference import leaves_box, particle_rollout_reference, quadratic_reward

THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]


def _head_loss(net, head, x, y):
    out = net.forward(x)
    return head.loss_grad(out, y, np.empty_like(out)) + head.bound_penalty()


def test_gaussian_head_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    net = MLP(3, 4, (6,), "silu", np.float64, rng=1)
    for b in net.biases:
        b[...] = rng.normal(0, 0.5, b.shape)
    net.weights[-1][:, 2:] *= 8  # raw log-variances beyond both bounds, and between them
    head = GaussianHead(2, np.float64, max_logvar=0.3, min_logvar=-1.5, penalty=0.05)
    head.bounds += rng.normal(0, 0.1, head.bounds.shape)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    out = net.forward(x)
    assert (out[:, 2:] > head.bounds[0]).any() and (out[:, 2:] < head.bounds[1]).any()
    grad_out = np.empty_like(out)
    head.loss_grad(out, y, grad_out)
    net.backward(grad_out, input_grad=False)
    analytic = np.concatenate([net.flat_grads, head.grad.ravel()])
    flat = [net.flat_params, head.bounds.reshape(-1)]
    numeric = []
    for arr in flat:
        for i in range(arr.size):
            keep = arr[i]
            arr[i] = keep + 1e-6
            up = _head_loss(net, head, x, y)
            arr[i] = keep - 1e-6
            down = _head_loss(net, head, x, y)
            arr[i] = keep
            numeric.append((up - down) / 2e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_gaussian_tile_epoch_matches_the_float64_path():
    """The float32 training kernel (NLL, bounds, per-layer decay) against the float64 NumPy
    path of the same code, step for step (eps far above sqrt(v) keeps Adam linear)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 5)).astype(np.float32)
    y = rng.standard_normal((70, 3)).astype(np.float32)

    def make(dtype):
        net = MLP(5, 6, (16, 9), "silu", dtype, rng=1)
        for b in net.biases:
            b[...] = np.random.default_rng(5).normal(0, 0.3, b.shape)
        head = GaussianHead(3, dtype, max_logvar=0.3, min_logvar=-1.0)
        kw = dict(lr=0.05, eps=10.0)
        return (net, Adam(net.params, weight_decay=[1e-2, 1e-2, 2e-2, 2e-2, 3e-2, 0.0], **kw),
                head, Adam([head.bounds], **kw))

    runs = []
    for dtype in (np.float32, np.float64):
        net, opt, head, hopt = make(dtype)
        loss = train_mse_epochs([net], [opt], x.astype(dtype), y.astype(dtype), 32,
                                np.random.default_rng(3), heads=[head], head_optimizers=[hopt])
        runs.append((loss, net, head))
    (l32, n32, h32), (l64, n64, h64) = runs
    assert l32[0] == pytest.approx(l64[0], rel=1e-5)
    for a, b in zip(n32.params, n64.params):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h32.bounds, h64.bounds, rtol=1e-5, atol=1e-6)
    assert not np.allclose(h64.bounds, [[0.3] * 3, [-1.0] * 3])  # the bounds did learn


def _noisy_buffer(n=2000, seed=0):
    """s' = s + 0.1 a + noise whose std is 0.2 where s0 > 0 and 0.02 elsewhere."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    std = np.where(obs[:, :1] > 0, 0.2, 0.02)
    nxt = obs + 0.1 * act + std * rng.standard_normal((n, 2))
    buf = ReplayBuffer(2, 1, n)
    buf.add_batch(obs, act, nxt.astype(np.float32), np.zeros(n, np.float32))
    return buf


@pytest.fixture(scope="module")
def fitted():
    model = DynamicsModel(2, 1, (32, 32), "silu", ensemble_size=3, probabilistic=True,
                          num_elites=2, particles=4, propagation="tsinf")
    history = model.fit(_noisy_buffer(), epochs=25, batch_size=64, patience=None,
                        weight_decay=[1e-4, 2e-4, 3e-4])
    return model, history


def test_probabilistic_fit_learns_the_noise(fitted):
    model, history = fitted
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.5
    assert history["val_nll"][-1] < history["val_nll"][0] - 0.5
    assert len(history["elites"]) == 2 and history["elites"] == sorted(history["elites"])
    worst = int(np.argmax(history["member_val_loss"]))
    assert worst not in history["elites"] and model.elites.tolist() == history["elites"]
    probe = np.array([[0.5, 0.0], [-0.5, 0.0]], np.float32)
    mean, std = model.predict_distribution(probe, np.zeros((2, 1), np.float32))
    np.testing.assert_allclose(mean, probe, atol=0.05)
    np.testing.assert_allclose(std[0], 0.2, rtol=0.3)  # the noisy half
    np.testing.assert_allclose(std[1], 0.02, rtol=0.5)  # the quiet half


def test_probabilistic_save_load_round_trip(fitted, tmp_path):
    model, _ = fitted
    path = model.save(tmp_path / "m.npz")
    back = DynamicsModel.load(path)
    assert back.probabilistic and back.num_elites == 2
    assert back.elites.tolist() == model.elites.tolist()
    for a, b in zip(back.heads, model.heads):
        np.testing.assert_array_equal(a.bounds, b.bounds)
    probe = np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype(np.float32)
    act = np.zeros((5, 1), np.float32)
    for got, want in zip(back.predict_distribution(probe, act),
                         model.predict_distribution(probe, act)):
        np.testing.assert_array_equal(got, want)
    header, arrays = load_npz(path, "dynamics_model", (4,))
    bad = dict(arrays, elites=np.array([0, 0]))
    save_npz(tmp_path / "bad.npz", "dynamics_model", 4, header, bad)
    with pytest.raises(FormatError, match="elites"):
        DynamicsModel.load(tmp_path / "bad.npz")
    flipped = dict(arrays, m0_logvar_bounds=arrays["m0_logvar_bounds"][::-1])
    save_npz(tmp_path / "flip.npz", "dynamics_model", 4, header, flipped)
    with pytest.raises(FormatError, match="lower bounds"):
        DynamicsModel.load(tmp_path / "flip.npz")


def _random_probabilistic(rng, o=3, a=2, b=2):
    weights = [[rng.normal(0, .4, (o + a, 16)), rng.normal(0, .4, (16, 2 * o))] for _ in range(b)]
    biases = [[rng.normal(0, .1, 16), rng.normal(0, .1, 2 * o)] for _ in range(b)]
    stats = dict(input_mean=rng.normal(0, .1, o + a), input_scale=rng.uniform(.5, 2, o + a),
                 delta_mean=rng.normal(0, .05, o), delta_std=rng.uniform(.1, .3, o))
    bounds = np.stack([np.stack([rng.uniform(0, .5, o), rng.uniform(-3, -2, o)])
                       for _ in range(b)])
    return weights, biases, stats, bounds


@pytest.mark.parametrize("propagation", ["tsinf", "ts1"])
def test_particle_kernel_matches_reference(propagation):
    rng = np.random.default_rng(1)
    k, h, p = 7, 6, 4
    weights, biases, stats, bounds = _random_probabilistic(rng)
    packed = pack_model(weights, biases, "silu", **stats, logvar_bounds=bounds, particles=p,
                        propagation=propagation)
    acts = rng.uniform(-1, 1, (k, h, 2)).astype(np.float32)
    obs = np.array([0.9, -0.2, 0.1], np.float32)  # near the box: some particles terminate
    noise = rng.standard_normal((k * p, h, 3)).astype(np.float32)
    sources = None
    if propagation == "ts1":
        sources = np.zeros((k * p, h), np.int64)
        ops.ts1_sources(rng.random((k, h, p), dtype=np.float32), p // 2, sources,
                        np.zeros(p, np.int64))
    got = []
    for n in THREADS:
        with num_threads(n):
            got.append(particle_rollout(packed, obs, acts, quadratic_reward, leaves_box,
                                        noise=noise, sources=sources))
    np.testing.assert_array_equal(got[0], got[-1])
    want = particle_rollout_reference(weights, biases, "silu", **stats, logvar_bounds=bounds,
                                      obs=obs, actions=acts, reward=quadratic_reward,
                                      particles=p, noise=noise, sources=sources,
                                      terminated=leaves_box)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
    # seeded draws: the same returns for a seed, others for another
    a = particle_rollout(packed, obs, acts, quadratic_reward, leaves_box, seed=3)
    b = particle_rollout(packed, obs, acts, quadratic_reward, leaves_box, seed=3)
    c = particle_rollout(packed, obs, acts, quadratic_reward, leaves_box, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("propagation", ["tsinf", "ts1"])
def test_particle_kernel_branches_from_each_particles_own_state(propagation):
    """Each slot starts from its own state, alive flag and earnings and leaves its end ones in
    place (as the twin's, ts1 moving them with the particle); 2 + 4 steps equal 6 steps."""
    rng = np.random.default_rng(5)
    k, h, p, o = 5, 6, 4, 3
    weights, biases, stats, bounds = _random_probabilistic(rng)
    packed = pack_model(weights, biases, "silu", **stats, logvar_bounds=bounds, particles=p,
                        propagation=propagation)
    acts = rng.uniform(-1, 1, (k, h, 2)).astype(np.float32)
    obs = np.array([0.9, -0.2, 0.1], np.float32)
    noise = rng.standard_normal((k * p, h, o)).astype(np.float32)
    sources = None
    if propagation == "ts1":
        sources = np.zeros((k * p, h), np.int64)
        ops.ts1_sources(rng.random((k, h, p), dtype=np.float32), p // 2, sources,
                        np.zeros(p, np.int64))
    slots = slot_of(k, p // 2, *np.meshgrid(np.arange(k), np.arange(p), indexing="ij"))
    start = (obs + rng.normal(0, 0.3, (k, p, o))).astype(np.float32)
    alive = rng.random((k, p)) > 0.2
    earned = rng.normal(0, 1, (k, p)).astype(np.float32)

    def in_slots(a, shape):
        out = np.zeros(shape, a.dtype)
        out[slots] = a
        return out

    def branch(t0, t1, st, al, ea):
        st, al, ea = (in_slots(v, (k * p,) + v.shape[2:]) for v in (st, al, ea))
        got = particle_rollout(packed, obs, acts[:, t0:t1], quadratic_reward, leaves_box,
                               noise=noise[:, t0:t1], states=st, live=al, returns=ea,
                               sources=None if sources is None else sources[:, t0:t1])
        np.testing.assert_array_equal(got, ea[slots])  # returns in place
        return got, st[slots], al[slots]

    got, ends, still = branch(0, h, start, alive, earned)
    want, want_ends, want_alive = particle_rollout_reference(
        weights, biases, "silu", **stats, logvar_bounds=bounds, obs=obs, actions=acts,
        reward=quadratic_reward, particles=p, noise=noise, sources=sources,
        terminated=leaves_box, states=start, alive=alive, returns=earned, ends=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ends, want_ends, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(still, want_alive)
    assert (~still).any() and still.any()
    for c in range(k):  # a dead particle earns nothing more (ts1 moves it to another slot)
        assert np.isin(earned[c, ~alive[c]], got[c]).all()
    mid = branch(0, 2, start, alive, earned)
    np.testing.assert_allclose(branch(2, h, mid[1], mid[2], mid[0])[0], got, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="only with states"):
        particle_rollout(packed, obs, acts, quadratic_reward, live=alive.reshape(-1))
    with pytest.raises(ValueError, match="states: expected"):
        particle_rollout(packed, obs, acts, quadratic_reward, states=start)


def test_ts1_sources_permute_within_each_candidate():
    k, h, p, per = 5, 4, 6, 2
    sources = np.zeros((k * p, h), np.int64)
    u = np.random.default_rng(0).random((k, h, p), dtype=np.float32)
    ops.ts1_sources(u, per, sources, np.zeros(p, np.int64))
    slots = slot_of(k, per, *np.meshgrid(np.arange(k), np.arange(p), indexing="ij"))
    moved = 0
    for t in range(h):
        for c in range(k):
            src = sources[slots[c], t]
            assert sorted(src) == sorted(slots[c])  # a permutation of the candidate's slots
            moved += int((src != slots[c]).sum())
    assert moved > 0


def test_particle_scores_mean_minus_risk_std():
    rng = np.random.default_rng(0)
    k, per, b = 4, 3, 2
    slot_returns = rng.normal(size=k * per * b).astype(np.float32)
    slot_returns[slot_of(k, per, 2, 5)] = -np.inf
    out = np.empty(k, np.float32)
    ops.particle_scores(slot_returns, k, per, b, 0.5, out)
    slots = slot_of(k, per, *np.meshgrid(np.arange(k), np.arange(per * b), indexing="ij"))
    per_particle = slot_returns[slots].astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = per_particle.mean(axis=1) - 0.5 * per_particle.std(axis=1)
    want[2] = -np.inf
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_tsinf_plan_steers_a_noisy_integrator(fitted):
    """On s' = s + 0.1 a (+ noise) with reward -|s'|^2, the first action pushes s0 towards 0;
    a plan is the same for a seed whatever the thread count."""
    model, _ = fitted
    kw = dict(horizon=4, action_low=-np.ones(1), action_high=np.ones(1), num_samples=40,
              iterations=3, seed=2)
    obs = np.array([-0.6, 0.0], np.float32)  # the quiet side: the noise cannot hide the sign
    actions = []
    for n in THREADS:
        with num_threads(n):
            actions.append(CEM(model, quadratic_reward, **kw).act(obs).copy())
    np.testing.assert_array_equal(actions[0], actions[-1])
    assert actions[0][0] > 0.3
    planner = CEM(model, quadratic_reward, **kw)
    planner.act(obs)
    assert planner.scorer.sampled and np.isfinite(planner.scorer.best_return)


def test_controller_carries_the_sampling_settings(tmp_path):
    pend = DynamicsModel(3, 1, (8,), "silu", ensemble_size=2, probabilistic=True)
    ctl = Controller(pend, "Pendulum-v1", horizon=3, num_samples=8, particles=6,
                     propagation="ts1", risk=0.5)
    ctl.act(np.array([1.0, 0.0, 0.0]))
    ctl.save(tmp_path)
    saved = json.loads((tmp_path / "controller.json").read_text())
    assert (saved["particles"], saved["propagation"], saved["risk"]) == (6, "ts1", 0.5)
    back = Controller.load(tmp_path)
    assert (back.model.particles, back.model.propagation, back.model.risk) == (6, "ts1", 0.5)
    assert back.planner.scorer.sampled
    with pytest.raises(FormatError, match="multiple of 2"):
        Controller.load(tmp_path, particles=5)


def test_config_settings():
    cfg = MBRLConfig.create("Pendulum-v1", model="probabilistic").resolved()
    assert (cfg.ensemble_size, cfg.num_elites, cfg.particles, cfg.propagation, cfg.risk) == (
        5, 5, 20, "tsinf", 0.0)
    assert MBRLConfig.create("Pendulum-v1").resolved().model == "deterministic"
    with pytest.raises(FastMBRLError, match="multiple of num_elites"):
        MBRLConfig.create("Pendulum-v1", model="probabilistic", particles=7).resolved()
    with pytest.raises(FastMBRLError, match="num_elites"):
        MBRLConfig.create("Pendulum-v1", ensemble_size=2, num_elites=3).resolved()
    with pytest.raises(FastMBRLError, match="propagation"):
        MBRLConfig.create("Pendulum-v1", propagation="ts2").resolved()
