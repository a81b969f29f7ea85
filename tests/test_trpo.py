import json

import numpy as np
import pytest

from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.models.mlp import MLP
from fastmbrl.cli import main
from fastmbrl.algorithms.rundir import read_run_config
from fastmbrl.algorithms.trpo import (
    GaussianPolicy, PolicyBatch, PolicyController, TRPOConfig, TRPORun,
    conjugate_gradient, gae, gaussian_kl, line_search, train, trpo_update,
)
from tests.reference import gae_reference


def tiny_batch(seed=0, n=7, obs_dim=3, act_dim=2, hidden=(5,)):
    rng = np.random.default_rng(seed)
    policy = GaussianPolicy(obs_dim, act_dim, hidden, "tanh", init_log_std=-0.3, rng=seed)
    policy.net.weights[-1] *= 100  # undo the small output init: a less trivial Jacobian
    policy.log_std[:] = rng.normal(-0.3, 0.2, act_dim)
    obs = rng.normal(size=(n, obs_dim))
    actions = policy.net.forward(obs) + rng.normal(size=(n, act_dim))
    return policy, PolicyBatch(policy, obs, actions, rng.normal(size=n))


@pytest.mark.parametrize("activation", ["tanh", "relu", "silu"])
def test_mlp_jvp_matches_finite_differences(activation):
    net = MLP(3, 2, (6, 5), activation, dtype=np.float64, rng=1)
    x = np.random.default_rng(2).normal(size=(4, 3))
    v = np.random.default_rng(3).normal(size=net.flat_params.size)
    net.forward(x)
    jv = net.jvp(v)
    theta, eps = net.flat_params.copy(), 1e-6
    net.flat_params[:] = theta + eps * v
    plus = net.forward(x).copy()
    net.flat_params[:] = theta - eps * v
    minus = net.forward(x).copy()
    np.testing.assert_allclose(jv, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="tangent"):
        net.jvp(v[:-1])


def test_fisher_vector_product_equals_explicit_fisher_matrix():
    policy, batch = tiny_batch()
    net, k = policy.net, policy.net.flat_params.size
    theta, eps = net.flat_params.copy(), 1e-6
    jac = np.empty((batch.obs.shape[0], policy.act_dim, k))  # dμ/dθ by central differences
    for i in range(k):
        net.flat_params[:] = theta
        net.flat_params[i] += eps
        plus = net.forward(batch.obs).copy()
        net.flat_params[i] -= 2 * eps
        jac[:, :, i] = (plus - net.forward(batch.obs)) / (2 * eps)
    net.flat_params[:] = theta
    inv_var = np.exp(-2 * policy.log_std)
    fisher = np.zeros((policy.num_params, policy.num_params))
    fisher[:k, :k] = np.einsum("nai,a,naj->ij", jac, inv_var, jac) / batch.obs.shape[0]
    fisher[k:, k:] = 2 * np.eye(policy.act_dim)  # log σ block of a Gaussian
    v = np.random.default_rng(5).normal(size=policy.num_params)
    np.testing.assert_allclose(batch.fisher_vector_product(v), fisher @ v, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(batch.fisher_vector_product(v, damping=0.3),
                               fisher @ v + 0.3 * v, rtol=1e-6, atol=1e-9)


def test_fisher_is_the_hessian_of_the_mean_kl():
    policy, batch = tiny_batch(seed=1)
    v = np.random.default_rng(6).normal(size=policy.num_params)
    theta, eps = batch.theta_old, 1e-4
    kl = lambda t: batch.surrogate_and_kl(t)[1]  # noqa: E731
    second_difference = (kl(theta + eps * v) + kl(theta - eps * v) - 2 * kl(theta)) / eps**2
    # surrogate_and_kl ran forwards at other θ: the product must still use θ_old's activations
    np.testing.assert_allclose(v @ batch.fisher_vector_product(v), second_difference, rtol=1e-4)


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(20, 20))
    a = m @ m.T + 0.5 * np.eye(20)
    b = rng.normal(size=20)
    x = conjugate_gradient(lambda v: a @ v, b, iters=60, tol=1e-20)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(conjugate_gradient(lambda v: a @ v, np.zeros(20)), 0.0)
    with pytest.raises(ValueError, match="iters"):
        conjugate_gradient(lambda v: a @ v, b, iters=0)


def test_line_search_rejects_kl_violating_steps():
    # surrogate c·θ improves along the step; the KL |θ|² exceeds δ until the step is quartered
    f = lambda t: (float(t.sum()), float(t @ t))  # noqa: E731
    theta, frac, gain, kl = line_search(f, np.zeros(2), np.ones(2), max_kl=0.2)
    assert frac == 0.25 and kl <= 0.2 and gain > 0
    np.testing.assert_allclose(theta, [0.25, 0.25])
    # no step improves the surrogate: the old parameters are kept
    theta, frac, gain, kl = line_search(f, np.zeros(2), -np.ones(2), max_kl=10.0)
    assert frac == 0.0 and gain == 0.0
    np.testing.assert_array_equal(theta, 0.0)
    # a real batch with a step far outside the trust region
    policy, batch = tiny_batch(seed=2)
    step, _ = batch.natural_step(max_kl=1e-3, damping=1e-3, cg_iters=50)
    theta, frac, gain, kl = line_search(batch.surrogate_and_kl, batch.theta_old, 20 * step, 1e-3)
    assert 0 < frac < 1 and kl <= 1e-3 and gain > 0
    _, kl_full = batch.surrogate_and_kl(batch.theta_old + 20 * step)
    assert kl_full > 1e-3


def test_full_natural_step_reaches_the_trust_region_boundary():
    policy, batch = tiny_batch(seed=3, n=40)
    delta, damping = 1e-4, 1e-2
    step, g = batch.natural_step(max_kl=delta, damping=damping, cg_iters=30)
    surr_old, _ = batch.surrogate_and_kl(batch.theta_old)
    surr, kl = batch.surrogate_and_kl(batch.theta_old + step)
    # the quadratic model ½ stepᵀF step = δ · sᵀFs / sᵀ(F + λI)s: δ up to the damping's share
    fs = batch.fisher_vector_product(step)
    predicted = 0.5 * step @ fs
    assert delta * 0.7 < predicted <= delta
    assert kl == pytest.approx(predicted, rel=0.05)
    assert g @ step > 0 and surr > surr_old


def test_trpo_update_keeps_kl_within_delta():
    policy, batch = tiny_batch(seed=4, n=30)
    before = policy.get_flat()
    stats = trpo_update(policy, batch.obs, batch.actions, batch.adv, max_kl=0.01)
    assert 0 < stats["kl"] <= 0.01 and stats["surrogate_improvement"] > 0
    mu_new = policy.net.forward(batch.obs)
    assert gaussian_kl(batch.mu_old, batch.log_std_old, mu_new, policy.log_std) == \
        pytest.approx(stats["kl"])
    assert not np.array_equal(before, policy.get_flat())
    with pytest.raises(ValueError, match="max_kl"):
        trpo_update(policy, batch.obs, batch.actions, batch.adv, max_kl=0.0)


def test_gae_matches_plain_loop():
    rng = np.random.default_rng(0)
    n = 60
    r, v, nv = rng.normal(size=(3, n))
    term = rng.random(n) < 0.05
    end = term | (rng.random(n) < 0.05)
    end[-1] = True
    for gamma, lam in ((0.99, 0.95), (0.9, 1.0), (1.0, 0.0)):
        np.testing.assert_allclose(gae(r, v, nv, term, end, gamma, lam),
                                   gae_reference(r, v, nv, term, end, gamma, lam), rtol=1e-12)
    with pytest.raises(ValueError, match="values"):
        gae(r, v[:-1], nv, term, end)
    with pytest.raises(ValueError, match="lam"):
        gae(r, v, nv, term, end, 0.99, 1.5)


def test_policy_save_load_round_trip(tmp_path):
    policy, batch = tiny_batch(seed=5)
    policy.obs_norm.update(np.random.default_rng(1).normal(3.0, 2.0, size=(50, 3)))
    path = policy.save(tmp_path / "policy.npz", "Pendulum-v1", [-2.0, -2.0], [2.0, 2.0])
    loaded, header, _ = GaussianPolicy.load(path)
    assert header["task"] == "Pendulum-v1" and loaded.net.hidden == (5,)
    np.testing.assert_array_equal(loaded.get_flat(), policy.get_flat())
    obs = np.random.default_rng(2).normal(size=(4, 3))
    np.testing.assert_array_equal(loaded.mean(obs), policy.mean(obs))
    ctrl = PolicyController.load(tmp_path)  # a run directory works as well as the file
    ctrl.reset()
    expected = np.clip(policy.mean(obs[:1])[0], -2.0, 2.0).astype(np.float32)
    np.testing.assert_array_equal(ctrl.act(obs[0]), expected)
    with pytest.raises(ValueError, match="obs"):
        ctrl.act(np.zeros(4))
    # files of another kind are refused
    from fastmbrl.io import save_npz
    save_npz(tmp_path / "other.npz", "model", 1, {}, {"x": np.zeros(2)})
    with pytest.raises(FormatError):
        GaussianPolicy.load(tmp_path / "other.npz")


SMOKE = dict(steps=800, steps_per_iteration=400, value_epochs=2, hidden=(16,), value_hidden=(16,))


def test_smoke_run_writes_run_directory_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = TRPORun(TRPOConfig("Pendulum-v1", **SMOKE), out, log=lambda *a: None)
    first.write_config()
    row = first.iterate()
    first.record(row)
    assert read_run_config(out, "trpo")["algo"] == "trpo"
    assert {"config.json", "metrics.jsonl", "policy.npz", "trpo_state.npz", "state.json"} <= \
        {p.name for p in out.iterdir()}
    for key in ("iteration", "env_steps", "mean_return", "kl", "surrogate_improvement",
                "entropy", "value_loss", "env_s", "act_s", "policy_s", "value_s", "wall_s"):
        assert key in row
    assert row["env_steps"] == 400 and row["kl"] <= 0.01 and len(row["episode_returns"]) == 2
    with open(out / "metrics.jsonl", "a") as fh:  # a row of an unfinished iteration
        fh.write(json.dumps({**row, "iteration": 2}) + "\n")
    resumed = TRPORun.resume(out, log=lambda *a: None)
    assert (resumed.iteration, resumed.env_steps, len(resumed.metrics)) == (1, 400, 1)
    np.testing.assert_array_equal(resumed.policy.get_flat(), first.policy.get_flat())
    np.testing.assert_array_equal(resumed.value.net.flat_params, first.value.net.flat_params)
    resumed.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["env_steps"] == 800
    # the resumed run continues exactly as the uninterrupted one would have
    same = {k: v for k, v in first.iterate().items() if not k.endswith("_s")}
    assert {k: v for k, v in rows[-1].items() if not k.endswith("_s")} == same
    with pytest.raises(FastMBRLError, match="already holds a run"):
        resumed.write_config()


def test_cli_trains_and_reports(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "Pendulum-v1", "--algo", "trpo", "--steps", "400",
                 "--steps-per-iteration", "200", "--max-kl", "0.02", "--out", out, "--quiet"]) == 0
    assert "done: 400 steps" in capsys.readouterr().out
    assert read_run_config(out, "trpo")["max_kl"] == 0.02
    assert main(["train", "Pendulum-v1", "--resume", out]) == 2
    assert "either a task or --resume" in capsys.readouterr().err


def test_bad_inputs(tmp_path):
    with pytest.raises(FastMBRLError, match="max_kl"):
        TRPOConfig("Pendulum-v1", max_kl=-1.0).resolved()
    with pytest.raises(FastMBRLError, match="steps"):
        TRPOConfig("Pendulum-v1", steps=0).resolved()
    with pytest.raises(FastMBRLError, match="gamma"):
        TRPOConfig("Pendulum-v1", gamma=1.5).resolved()
    with pytest.raises(FastMBRLError):
        TRPOConfig("NoSuchTask-v0").resolved()
    with pytest.raises(FastMBRLError, match="unknown setting"):
        train("Pendulum-v1", planner="cem")
    with pytest.raises(FastMBRLError, match="no config.json"):
        TRPORun.resume(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"fastmbrl_version": "0", "run_format": 1, "config": {"task": "Pendulum-v1"}}))
    with pytest.raises(FormatError, match="not a trpo run"):
        TRPORun.resume(tmp_path)
    policy, batch = tiny_batch()
    with pytest.raises(ValueError, match="actions"):
        PolicyBatch(policy, batch.obs, batch.actions[:, :1], batch.adv)
    with pytest.raises(ValueError, match="advantages"):
        PolicyBatch(policy, batch.obs, batch.actions, batch.adv[:-1])
    with pytest.raises(ValueError, match="theta"):
        policy.set_flat(np.zeros(3))
    with pytest.raises(FileNotFoundError):
        PolicyController.load(tmp_path / "missing")


def test_fisher_stride_uses_every_kth_state():
    policy, batch = tiny_batch(seed=6, n=9)
    sub = PolicyBatch(policy, batch.obs, batch.actions, batch.adv, fisher_stride=3)
    every_third = PolicyBatch(policy, batch.obs[::3], batch.actions[::3], batch.adv[::3])
    v = np.random.default_rng(7).normal(size=policy.num_params)
    np.testing.assert_allclose(sub.fisher_vector_product(v), every_third.fisher_vector_product(v),
                               rtol=1e-12)
    # the gradient still averages over the whole batch
    np.testing.assert_allclose(sub.surrogate_gradient(), batch.surrogate_gradient(), rtol=1e-12)


def test_running_norm_matches_batch_statistics():
    from fastmbrl.algorithms.trpo import RunningNorm
    rng = np.random.default_rng(0)
    data = rng.normal([1.0, -5.0], [2.0, 0.1], size=(300, 2))
    norm = RunningNorm(2)
    for chunk in np.array_split(data, 7):
        norm.update(chunk)
    np.testing.assert_allclose(norm.mean, data.mean(axis=0), rtol=1e-5)
    # the 1e-4 prior weight (mean 0, var 1) shifts the variance by about 1e-4 · mean² / n
    np.testing.assert_allclose(norm.var, data.var(axis=0), rtol=1e-5, atol=2e-5)
    z = norm.normalize(data)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    assert np.abs(norm.normalize(np.array([[1e9, -1e9]]))).max() == norm.clip


def test_a_batch_too_large_for_memory_is_refused_before_anything_is_written(tmp_path):
    from fastmbrl.limits import ResourceLimitError

    with pytest.raises(ResourceLimitError, match="steps_per_iteration=100000000000"):
        TRPORun.start("Pendulum-v1", tmp_path / "run", steps=10**12,
                      steps_per_iteration=10**11)
    assert not (tmp_path / "run").exists()


def test_a_config_whose_sizes_disagree_with_the_saved_networks_is_refused(tmp_path):
    out = tmp_path / "run"
    TRPORun.run("Pendulum-v1", out, log=lambda *a: None, **{**SMOKE, "steps": 400})
    for key, value, file in (("hidden", [4096, 4096], "policy.npz"),
                             ("value_hidden", [16, 16], "trpo_state.npz")):
        meta = json.loads((out / "config.json").read_text())
        original = meta["config"][key]
        meta["config"][key] = value
        (out / "config.json").write_text(json.dumps(meta))
        with pytest.raises(FastMBRLError, match=f"{key} .* disagrees with {file}"):
            TRPORun.resume(out, log=lambda *a: None)
        meta["config"][key] = original
        (out / "config.json").write_text(json.dumps(meta))
    assert TRPORun.resume(out, log=lambda *a: None).iteration == 1
