import numpy as np
import pytest

from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.cli.demo import _pendulum_step, pendulum_buffer, pendulum_episodes
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import save_npz

# Measured with this configuration on 3000 random-action transitions, seeds 0-2, gymnasium and
# the equations alike: best validation MSE 3e-5 .. 3.6e-4. The bound leaves ~3x headroom.
PENDULUM_VAL_MSE = 1e-3
FIT = dict(epochs=40, batch_size=64, lr=3e-3, validation_ratio=0.2, patience=5)


@pytest.fixture(scope="module")
def pendulum():
    return pendulum_buffer(3000, seed=0)


@pytest.fixture(scope="module")
def fitted(pendulum):
    model = DynamicsModel(3, 1, hidden=(64, 64), seed=0)
    history = model.fit(pendulum, **FIT)
    return model, history


def _toy_buffer(n=200, seed=0, obs_dim=3, act_dim=2):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    nxt = obs + 0.1 * np.tanh(obs) + 0.05 * act.sum(1, keepdims=True)
    buf = ReplayBuffer(obs_dim, act_dim, n)
    buf.add_batch(obs, act, nxt, np.zeros(n))
    return buf


def test_equations_match_gymnasium():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        th, thdot, u = rng.uniform(-np.pi, np.pi), rng.uniform(-8, 8), rng.uniform(-3, 3)
        env.state = np.array([th, thdot])
        env.step(np.array([u], np.float32))
        np.testing.assert_allclose(env.state, _pendulum_step(th, thdot, np.float32(u)), rtol=1e-5, atol=1e-6)


def test_pendulum_data_shapes_without_gymnasium():
    eps = pendulum_episodes(450, seed=3, use_gymnasium=False)
    assert [len(a) for _, a, _ in eps] == [200, 200, 50]
    obs, acts, rew = eps[0]
    np.testing.assert_allclose(obs[:, 0] ** 2 + obs[:, 1] ** 2, 1, rtol=1e-5)
    assert np.abs(acts).max() <= 2 and (rew <= 0).all()


def test_pendulum_fit_reaches_measured_error(fitted, pendulum):
    model, history = fitted
    best = history["best_epoch"]
    assert min(history["val_mse"]) == history["val_mse"][best - 1] < PENDULUM_VAL_MSE
    # far better than predicting no change
    _, val = pendulum.split(FIT["validation_ratio"], seed=0)
    v = pendulum.get(val)
    assert history["val_mse"][best - 1] < 0.02 * np.mean((v.next_obs - v.obs) ** 2)
    # the best weights were restored
    pred = model.predict(v.obs, v.action)
    np.testing.assert_allclose(np.mean((pred - v.next_obs) ** 2), history["val_mse"][best - 1], rtol=1e-3)
    n = len(history["train_loss"])
    assert len(history["val_loss"]) == len(history["seconds"]) == n
    assert n == FIT["epochs"] or (history["stopped_early"] and n == best + FIT["patience"])
    assert model.version == 1


def test_statistics_follow_contract(fitted, pendulum):
    model, _ = fitted
    train, _ = pendulum.split(FIT["validation_ratio"], seed=0)
    t = pendulum.get(train)
    x = np.concatenate([t.obs, t.action], 1)
    np.testing.assert_allclose(model.input_mean, x.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.input_scale, 1 / x.std(0), rtol=1e-4)
    np.testing.assert_allclose(model.delta_std, (t.next_obs - t.obs).std(0), rtol=1e-4)
    for name in ("input_mean", "input_scale", "delta_mean", "delta_std"):
        assert getattr(model, name).dtype == np.float32
    obs, act = t.obs[:5], t.action[:5]
    h = (np.concatenate([obs, act], 1) - model.input_mean) * model.input_scale
    for w, b in zip(model.net.weights[:-1], model.net.biases[:-1]):
        h = np.maximum(h @ w + b, 0)
    manual = obs + model.delta_mean + model.delta_std * (h @ model.net.weights[-1] + model.net.biases[-1])
    np.testing.assert_allclose(model.predict(obs, act), manual, rtol=1e-5, atol=1e-6)


def test_predict_single_row_and_rollout(fitted):
    model, _ = fitted
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(4, 3)).astype(np.float32)
    act = rng.uniform(-2, 2, size=(4, 1)).astype(np.float32)
    batch = model.predict(obs, act)
    np.testing.assert_allclose(model.predict(obs[2], act[2]), batch[2], rtol=1e-6, atol=1e-6)
    actions = rng.uniform(-2, 2, size=(4, 6, 1)).astype(np.float32)
    states = model.rollout(obs, actions)
    assert states.shape == (4, 7, 3)
    s = obs
    for t in range(6):
        s = model.predict(s, actions[:, t])
        np.testing.assert_allclose(states[:, t + 1], s, rtol=1e-6)
    np.testing.assert_allclose(model.rollout(obs[1], actions[1]), states[1], rtol=1e-5, atol=1e-6)


def test_prediction_error_report(fitted):
    model, _ = fitted
    held_out = [(o, a) for o, a, _ in pendulum_episodes(400, seed=5)]
    report = model.prediction_error(held_out, horizon=10)
    assert report["windows"] == 2 * (200 - 10 + 1)
    assert report["mse"].shape == (10,) and report["mse_per_dim"].shape == (10, 3)
    assert report["mse"][0] < report["mse"][-1]  # open-loop error compounds
    obs, act = held_out[0]
    pred = model.rollout(obs[3], act[3:13])
    one = ((pred[1:] - obs[4:14]) ** 2).mean(1)
    sub = model.prediction_error([(obs[3:14], act[3:13])], horizon=10)
    np.testing.assert_allclose(sub["mse"], one, rtol=1e-5)
    buf = pendulum_buffer(400, seed=5)
    np.testing.assert_allclose(model.prediction_error(buf, 10)["mse"], report["mse"], rtol=1e-5)
    with pytest.raises(ValueError, match="at least 500 steps"):
        model.prediction_error(held_out, horizon=500)
    with pytest.raises(ValueError, match=r"trajectories\[0\] obs"):
        model.prediction_error([(obs[:5], act[:5])], horizon=2)


def test_fit_is_reproducible():
    buf = _toy_buffer()
    runs = []
    for _ in range(2):
        m = DynamicsModel(3, 2, hidden=(16,), activation="tanh", seed=4)
        h = m.fit(buf, epochs=3, batch_size=32, input_noise=0.01)
        runs.append((m.net.flat_params.copy(), h))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for key in ("train_loss", "val_loss", "val_mse", "best_epoch"):
        assert runs[0][1][key] == runs[1][1][key]
    other = DynamicsModel(3, 2, hidden=(16,), activation="tanh", seed=5)
    other.fit(buf, epochs=3, batch_size=32)
    assert not np.array_equal(other.net.flat_params, runs[0][0])


def test_fit_verbose_and_no_validation(capsys):
    m = DynamicsModel(3, 2, hidden=(8,), seed=0)
    h = m.fit(_toy_buffer(), epochs=2, batch_size=50, validation_ratio=0.0, verbose=True)
    assert capsys.readouterr().out.count("epoch") == 2
    assert np.isnan(h["val_loss"]).all() and len(h["train_loss"]) == 2


def test_ignore_obs_dims():
    buf = _toy_buffer()
    m = DynamicsModel(3, 2, hidden=(8,), ignore_obs_dims=(0,), seed=0)
    m.fit(buf, epochs=1, batch_size=50)
    assert m.input_scale[0] == 0 and (m.input_scale[1:] > 0).all()
    obs = np.zeros((2, 3), np.float32)
    obs[1, 0] = 100.0
    delta = m.predict(obs, np.zeros((2, 2))) - obs
    np.testing.assert_allclose(delta[0], delta[1], atol=1e-4)  # float32 rounding of obs + delta
    with pytest.raises(ValueError, match="ignore_obs_dims"):
        DynamicsModel(3, 2, ignore_obs_dims=(3,))
    with pytest.raises(ValueError, match="ignore_obs_dims"):
        DynamicsModel(3, 2, ignore_obs_dims=(1, 1))


def test_non_finite_loss_names_epoch_and_restores():
    m = DynamicsModel(3, 2, hidden=(8,), seed=0)
    buf = _toy_buffer()
    m.fit(buf, epochs=1, batch_size=50)
    before, version = m.state_dict(), m.version
    with pytest.raises(FastMBRLError, match="non-finite at epoch 1"):
        m.fit(buf, epochs=3, batch_size=10, lr=1e30)
    for k, v in before.items():
        np.testing.assert_array_equal(m.state_dict()[k], v)
    assert m.version >= version


def test_save_load_round_trip(fitted, tmp_path):
    model, _ = fitted
    path = model.save(tmp_path / "model")
    back = DynamicsModel.load(path)
    assert (back.hidden, back.activation, back.obs_dim, back.act_dim) == ((64, 64), "relu", 3, 1)
    assert back.version == 1
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    a = np.random.default_rng(1).uniform(-2, 2, size=(50, 1)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x, a), model.predict(x, a))


def test_load_refuses_bad_files(fitted, tmp_path):
    model, _ = fitted
    state = model.state_dict()
    header = {"obs_dim": 3, "act_dim": 1, "hidden": [64, 64], "activation": "relu",
              "ignore_obs_dims": [], "seed": 0, "dtype": "float32"}
    save_npz(tmp_path / "v9.npz", "dynamics_model", 9, header, state)
    with pytest.raises(FormatError, match="version 9"):
        DynamicsModel.load(tmp_path / "v9.npz")
    save_npz(tmp_path / "buf.npz", "replay_buffer", 1, header, state)
    with pytest.raises(FormatError, match="replay_buffer"):
        DynamicsModel.load(tmp_path / "buf.npz")
    save_npz(tmp_path / "shape.npz", "dynamics_model", 1, {**header, "hidden": [32, 64]}, state)
    with pytest.raises(FormatError, match=r"'hidden' is \[32, 64\].*widths \[64, 64\]"):
        DynamicsModel.load(tmp_path / "shape.npz")
    save_npz(tmp_path / "act.npz", "dynamics_model", 1, {**header, "activation": "gelu"}, state)
    with pytest.raises(FormatError, match="activation"):
        DynamicsModel.load(tmp_path / "act.npz")
    bad = dict(state, delta_std=np.full(3, np.nan, np.float32))
    save_npz(tmp_path / "nan.npz", "dynamics_model", 1, header, bad)
    with pytest.raises(FormatError, match="delta_std"):
        DynamicsModel.load(tmp_path / "nan.npz")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(model.save(tmp_path / "ok").read_bytes()[:100])
    with pytest.raises(FormatError, match="corrupt"):
        DynamicsModel.load(trunc)


def test_load_state_checks_and_bumps_version():
    m = DynamicsModel(3, 2, hidden=(8,), seed=0)
    state = DynamicsModel(3, 2, hidden=(8,), seed=1).state_dict()
    m.load_state(state)
    assert m.version == 1
    np.testing.assert_array_equal(m.net.weights[0], state["W0"])
    before = m.net.flat_params.copy()
    with pytest.raises(ValueError, match="input_scale"):
        m.load_state(dict(state, input_scale=-np.ones(5)))
    with pytest.raises(ValueError, match=r"state\['delta_mean'\]: expected shape \(3\)"):
        m.load_state(dict(state, delta_mean=np.zeros(5)))
    with pytest.raises(ValueError, match="missing 'delta_std'"):
        m.load_state({k: v for k, v in state.items() if k != "delta_std"})
    np.testing.assert_array_equal(m.net.flat_params, before)
    assert m.version == 1


def test_predict_bad_inputs(fitted):
    model, _ = fitted
    with pytest.raises(ValueError, match=r"obs: expected shape \(N, 3\)"):
        model.predict(np.zeros((2, 4)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"act: expected shape \(1\)"):
        model.predict(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"act: expected shape \(2, 1\)"):
        model.predict(np.zeros((2, 3)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="obs: contains NaN"):
        model.predict([np.nan, 0, 0], [0])
    with pytest.raises(ValueError, match="actions"):
        model.rollout(np.zeros((2, 3)), np.zeros((3, 4, 1)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), "epochs"),
    (dict(batch_size=-1), "batch_size"),
    (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(validation_ratio=1.5), "validation_ratio"),
    (dict(patience=0), "patience"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(input_noise=-0.1), "input_noise"),
])
def test_fit_bad_arguments(kwargs, message):
    m = DynamicsModel(3, 2, hidden=(8,))
    with pytest.raises(ValueError, match=message):
        m.fit(_toy_buffer(), **kwargs)
    assert m.version == 0


def test_fit_bad_buffers_and_constructor():
    m = DynamicsModel(3, 2, hidden=(8,))
    with pytest.raises(ValueError, match="expected a ReplayBuffer"):
        m.fit([(1, 2, 3)])
    with pytest.raises(ValueError, match="obs_dim=4"):
        m.fit(_toy_buffer(obs_dim=4))
    with pytest.raises(ValueError, match="no training rows"):
        m.fit(ReplayBuffer(3, 2, 10))
    with pytest.raises(ValueError, match="obs_dim"):
        DynamicsModel(0, 2)
    with pytest.raises(ValueError, match="activation"):
        DynamicsModel(3, 2, activation="elu")


def _cli_args(module, argv):
    import argparse

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_demo_smoke(capsys):
    from fastmbrl.cli import demo

    assert demo.run(_cli_args(demo, ["--steps", "600", "--epochs", "2"])) == 0
    out = capsys.readouterr().out
    assert "validation MSE" in out and "20 steps" in out


def test_bench_train_smoke(capsys):
    import json

    from fastmbrl.cli.bench import train

    argv = ["--json", "--configs", "pendulum_small", "--samples", "512", "--repeats", "1"]
    assert train.run(_cli_args(train, argv)) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["config"] == "pendulum_small" and row["samples_per_s"] > 0
    assert row["numpy_samples_per_s"] > 0


@pytest.fixture(scope="module")
def ensemble(pendulum):
    model = DynamicsModel(3, 1, hidden=(32, 32), activation="silu", seed=1, ensemble_size=3)
    history = model.fit(pendulum, **FIT)
    return model, history


def test_ensemble_members_fit_their_own_bootstrap(ensemble, pendulum):
    model, history = ensemble
    assert len(model.nets) == 3 and model.net is model.nets[0]
    params = [net.flat_params for net in model.nets]
    assert not np.array_equal(params[0], params[1]) and not np.array_equal(params[1], params[2])
    _, val = pendulum.split(FIT["validation_ratio"], seed=1)
    v = pendulum.get(val)
    x = ((np.concatenate([v.obs, v.action], axis=1) - model.input_mean)
         * model.input_scale).astype(np.float32)  # the normalised network inputs
    outs = [net.forward(x).copy() for net in model.nets]
    member_mse = [float(np.mean(((o * model.delta_std + model.delta_mean) + v.obs - v.next_obs)
                                ** 2)) for o in outs]
    # every member learned the dynamics, and the reported loss is the members' mean
    assert max(member_mse) < PENDULUM_VAL_MSE
    best = history["best_epoch"]
    assert min(history["val_mse"]) == history["val_mse"][best - 1]
    # predictions are the members' mean
    mean_next = np.mean([o * model.delta_std + model.delta_mean for o in outs], axis=0) + v.obs
    np.testing.assert_allclose(model.predict(v.obs, v.action), mean_next, rtol=1e-5, atol=1e-6)
    roll = model.rollout(v.obs[:4], v.action[:4, None].repeat(2, axis=1))
    np.testing.assert_allclose(roll[:, 1], mean_next[:4], rtol=1e-5, atol=1e-6)


def test_ensemble_save_load_and_bad_state(ensemble, tmp_path):
    model, _ = ensemble
    path = model.save(tmp_path / "ens")
    back = DynamicsModel.load(path)
    assert back.ensemble_size == 3 and "ensemble_size=3" in repr(back)
    for a, b in zip(model.nets, back.nets):
        np.testing.assert_array_equal(a.flat_params, b.flat_params)
    state = model.state_dict()
    assert {"m0_W0", "m2_b2", "input_mean"} <= set(state) and "W0" not in state
    bad = dict(state, m2_W1=np.zeros((3, 3), np.float32))
    before = [net.flat_params.copy() for net in back.nets]
    with pytest.raises(ValueError, match="m2_W1|W1"):
        back.load_state(bad)
    for net, old in zip(back.nets, before):  # nothing changed, member 0 and 1 included
        np.testing.assert_array_equal(net.flat_params, old)
    with pytest.raises(ValueError, match="members"):
        back.load_state(dict(state, m3_W0=state["m0_W0"]))
    with pytest.raises(ValueError, match="ensemble_size"):
        DynamicsModel(3, 1, ensemble_size=0)


def test_packed_form_is_cached_per_spec_until_the_version_changes():
    from fastmbrl.kernels.isa import SPECS, get_spec
    from fastmbrl.kernels.rollout import pack_model

    model = DynamicsModel(3, 2, hidden=(16,), seed=0, ensemble_size=2)
    first = model.packed()
    assert model.packed() is first and model.packed(get_spec()) is first
    assert first.isa == get_spec() and first.num_members == 2 and first.version == 0
    other = "generic" if first.isa.name != "generic" else "avx2"
    laid_out = model.packed(other)
    assert laid_out.isa == SPECS[other] and model.packed(SPECS[other]) is laid_out
    assert model.packed() is first  # one cache entry per spec
    state = model.state_dict()
    state["m1_W0"] = 2 * state["m1_W0"]
    model.load_state(state)
    second = model.packed()
    assert second is not first and second.version == model.version == 1
    want = pack_model([net.weights for net in model.nets], [net.biases for net in model.nets],
                      "relu", model.input_mean, model.input_scale, model.delta_mean,
                      model.delta_std, 1)
    np.testing.assert_array_equal(second.weights, want.weights)
    np.testing.assert_array_equal(second.biases, want.biases)
    assert not np.array_equal(second.weights, first.weights)


def test_angle_inputs_fit_predict_pack_and_save(tmp_path):
    from fastmbrl.kernels.rollout import rollout
    from tests.reference import quadratic_reward
    buf = _toy_buffer(300, seed=4, obs_dim=3, act_dim=2)
    model = DynamicsModel(3, 2, hidden=(16,), activation="tanh", angle_obs_dims=(1,), seed=2)
    assert model.net.in_dim == 3 + 1 + 2 and model.input_mean.shape == (6,)
    model.fit(buf, epochs=3, batch_size=32)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    turned = obs.copy()
    turned[:, 1] += np.float32(2 * np.pi)
    # a full turn of the angle changes nothing but the angle itself
    np.testing.assert_allclose(model.predict(turned, act) - turned, model.predict(obs, act) - obs,
                               rtol=1e-4, atol=1e-4)
    # the kernel computes the same features as the model
    actions = rng.uniform(-1, 1, (9, 4, 2)).astype(np.float32)
    states = model.rollout(np.repeat(obs[:1], 9, axis=0), actions)
    out = np.empty(9, np.float32)
    want = np.zeros(9)
    for t in range(4):
        quadratic_reward(states[:, t], actions[:, t], states[:, t + 1], out)
        want += out
    packed = model.packed()  # chunks of one tile: 9 candidates span several
    got = rollout(packed, obs[0], actions, quadratic_reward, rows=packed.isa.tile_rows)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    back = DynamicsModel.load(model.save(tmp_path / "angles"))
    assert back.angle_obs_dims == (1,)
    np.testing.assert_array_equal(back.predict(obs, act), model.predict(obs, act))
    with pytest.raises(ValueError, match="angle_obs_dims"):
        DynamicsModel(3, 2, angle_obs_dims=(3,))
    with pytest.raises(ValueError, match="angle_obs_dims"):
        DynamicsModel(3, 2, ignore_obs_dims=(1,), angle_obs_dims=(1,))


def test_absolute_entries_are_learned_as_values_and_the_kernel_agrees(tmp_path):
    """A learned reward column: its target is r(s, a) itself, never r' - r (the previous
    reward, which the model does not see, would make that unlearnable)."""
    from fastmbrl.kernels.rollout import rollout
    from fastmbrl.tasks.learned import learned_reward, learned_terminated

    rng = np.random.default_rng(5)
    n = 600
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    obs[:, 2:] = rng.normal(size=(n, 2))  # the previous step's reward and flag: noise here
    act = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    nxt = obs.copy()
    nxt[:, :2] += 0.1 * act
    nxt[:, 2] = -obs[:, 0] ** 2 - 0.5 * act[:, 0] ** 2  # r(s, a)
    nxt[:, 3] = 0
    buf = ReplayBuffer(4, 1, n)
    buf.add_batch(obs, act, nxt, nxt[:, 2])
    kw = dict(hidden=(32, 32), activation="tanh", ignore_obs_dims=(2, 3), seed=1)
    model = DynamicsModel(4, 1, absolute_obs_dims=(2, 3), **kw)
    hist = model.fit(buf, epochs=60, batch_size=64, lr=3e-3)
    as_delta = DynamicsModel(4, 1, **kw)
    hist_delta = as_delta.fit(buf, epochs=60, batch_size=64, lr=3e-3)
    pred = model.predict(obs, act)
    reward_mse = float(np.mean((pred[:, 2] - nxt[:, 2]) ** 2))
    delta_mse = float(np.mean((as_delta.predict(obs, act)[:, 2] - nxt[:, 2]) ** 2))
    variance = float(np.var(nxt[:, 2]))  # about 2
    assert reward_mse < 0.05 * variance and delta_mse > 0.3 * variance, (reward_mse, delta_mse)
    assert min(hist["val_mse"]) < min(hist_delta["val_mse"])
    assert np.abs(pred[:, 3]).max() < 0.1
    # the kernel steps the same way (the carried entries are values) and scores with them
    actions = rng.uniform(-1, 1, (7, 3, 1)).astype(np.float32)
    states = model.rollout(np.repeat(obs[:1], 7, axis=0), actions)
    want, out = np.zeros(7), np.empty(7, np.float32)
    for t in range(3):
        learned_reward(states[:, t], actions[:, t], states[:, t + 1], out)
        want += out
    packed = model.packed()
    got = rollout(packed, obs[0], actions, learned_reward, learned_terminated,
                  rows=packed.isa.tile_rows)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    back = DynamicsModel.load(model.save(tmp_path / "absolute"))
    assert back.absolute_obs_dims == (2, 3)
    np.testing.assert_array_equal(back.predict(obs, act), pred)
    with pytest.raises(ValueError, match="absolute_obs_dims"):
        DynamicsModel(4, 1, absolute_obs_dims=(4,))


def test_a_model_with_absolute_entries_is_format_version_3(tmp_path):
    from fastmbrl.io import load_npz

    plain = DynamicsModel(3, 1, (8,), seed=0).save(tmp_path / "plain")
    valued = DynamicsModel(3, 1, (8,), seed=0, absolute_obs_dims=(2,)).save(tmp_path / "valued")
    assert load_npz(plain, "dynamics_model", (2,))[0]["format_version"] == 2
    assert load_npz(valued, "dynamics_model", (3,))[0]["format_version"] == 3
    assert DynamicsModel.load(valued).absolute_obs_dims == (2,)
