"""MB-MF: imitation of a controller, DAgger labelling, TRPO from the imitated policy, run
directories, CLI and resume, with tiny budgets on Pendulum-v1."""
import json

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl.cli import main  # noqa: E402
from fastmbrl.errors import FastMBRLError, FormatError  # noqa: E402
from fastmbrl.algorithms.evaluate import load_controller  # noqa: E402
from fastmbrl.algorithms.mbmf import (  # noqa: E402
    MBMFConfig, MBMFRun, behaviour_clone, dagger_rollouts, train,
)
from fastmbrl.algorithms.rundir import read_metrics, read_run_config  # noqa: E402
from fastmbrl.tasks import get_task  # noqa: E402
from fastmbrl.algorithms.trpo import TRPOConfig, TRPORun  # noqa: E402
from fastmbrl.models.policies import GaussianPolicy, PolicyController  # noqa: E402

QUIET = lambda *a: None  # noqa: E731
TINY = dict(
    steps=1400, dagger_rounds=2, dagger_steps=100, bc_epochs=3,
    mbrl=dict(steps=500, random_steps=200, steps_per_iteration=150, episode_length=150, planner="rs",
              horizon=6, num_samples=32, hidden=(16, 16), epochs=2, batch_size=64),
    trpo=dict(steps_per_iteration=200, hidden=(16,), value_hidden=(16,), value_epochs=2),
)


class LinearExpert:
    """A fixed deterministic controller a = clip(K s), counting its resets."""

    def __init__(self, gain, low, high):
        self.gain, self.low, self.high = np.asarray(gain), low, high
        self.resets = []

    def act(self, obs):
        return np.clip(self.gain @ np.asarray(obs, np.float64), self.low, self.high).astype(np.float32)

    def reset(self, seed=None):
        self.resets.append(seed)


def pendulum_expert():
    task = get_task("Pendulum-v1")
    return task, LinearExpert([[-1.0, 0.5, -0.3]], task.action_low, task.action_high)


def test_behaviour_cloning_reduces_imitation_error():
    task, expert = pendulum_expert()
    rng = np.random.default_rng(0)
    theta, vel = rng.uniform(-np.pi, np.pi, 600), rng.uniform(-8, 8, 600)
    obs = np.stack([np.cos(theta), np.sin(theta), vel], axis=1)
    labels = np.array([expert.act(o) for o in obs], np.float64)
    policy = GaussianPolicy(3, 1, (32,), "tanh", rng=1)
    policy.obs_norm.update(obs)
    error = lambda: float(np.mean((policy.mean(obs) - labels) ** 2))  # noqa: E731
    before = error()
    loss = behaviour_clone(policy, obs, labels, epochs=40, batch_size=64, lr=3e-3, rng=2)
    assert error() < 0.05 * before
    assert loss == pytest.approx(error(), rel=0.5)  # the reported loss is that error, mid-epoch
    with pytest.raises(ValueError, match="actions"):
        behaviour_clone(policy, obs, labels[:-1], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        behaviour_clone(policy, obs, labels, epochs=0)


def test_dagger_labels_visited_states_with_the_expert():
    task, expert = pendulum_expert()
    policy = GaussianPolicy(3, 1, (8,), "tanh", rng=3)
    act = PolicyController(policy, task.name, task.action_low, task.action_high).act
    env = task.make_env()
    states, labels, taken, returns, _ = dagger_rollouts(env, act, expert, 150, iter([7, 8]), 100)
    env.close()
    assert states.shape == (150, 3) and labels.shape == (150, 1) and len(returns) == 2
    assert expert.resets == [7, 8]  # reset with each episode's seed
    np.testing.assert_array_equal(labels, [expert.act(s) for s in states])
    np.testing.assert_array_equal(taken, [act(s) for s in states])  # the learner acted
    # the states are the learner's trajectory from the seeded reset, not the expert's
    replay = task.make_env()
    obs, _ = replay.reset(seed=7)
    np.testing.assert_allclose(states[0], obs)
    obs, *_ = replay.step(act(obs))
    np.testing.assert_allclose(states[1], obs)
    replay.close()


def test_fine_tuning_starts_from_the_given_policy():
    policy = GaussianPolicy(3, 1, (16,), "tanh", init_log_std=-1.0, rng=4)
    policy.net.weights[-1] *= 100
    policy.obs_norm.update(np.random.default_rng(5).normal(size=(50, 3)))
    obs = np.random.default_rng(6).normal(size=(5, 3))
    expected = policy.mean(obs).copy()
    run = TRPORun(TRPOConfig("Pendulum-v1", steps=400, hidden=(16,)), initial_policy=policy)
    assert run.policy is policy
    np.testing.assert_array_equal(run.policy.mean(obs), expected)
    np.testing.assert_array_equal(run.policy.log_std, [-1.0])
    with pytest.raises(FastMBRLError, match="initial_policy"):
        TRPORun(TRPOConfig("Pendulum-v1", hidden=(8,)), initial_policy=policy)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("mbmf") / "run"
    return out, train("Pendulum-v1", out=out, log=QUIET, seed=1, **TINY)


def test_run_directory_phases_and_one_env_step_axis(finished):
    out, run = finished
    rows = read_metrics(out)
    assert rows == run.metrics
    phases = [r["phase"] for r in rows]
    assert phases == ["mbrl"] * 2 + ["bc", "dagger", "dagger"] + ["trpo"] * 4
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    steps = [r["env_steps"] for r in rows]
    assert steps == [350, 500, 500, 600, 700, 900, 1100, 1300, 1400]
    assert run.env_steps == TINY["steps"] and run.phase == "done"
    assert read_run_config(out, "mbmf")["dagger_rounds"] == 2
    assert read_run_config(out / "mbrl", "mbrl")["steps"] == 500
    assert read_run_config(out / "trpo", "trpo")["steps"] == 700
    # the TRPO sub-run's first row is recorded here, shifted by the earlier phases' steps
    sub = read_metrics(out / "trpo")
    assert sub[0]["env_steps"] + 700 == rows[5]["env_steps"]
    assert sub[0]["kl"] == rows[5]["kl"] and rows[5]["phase_iteration"] == 1
    # the imitated policy fine-tuned by TRPO is the one saved and evaluated
    policy, _, _ = GaussianPolicy.load(out / "policy.npz")
    np.testing.assert_array_equal(policy.get_flat(), run.trpo_run.policy.get_flat())
    ctrl = load_controller(out)
    assert isinstance(ctrl, PolicyController)
    with pytest.raises(FastMBRLError, match="no planner settings"):
        load_controller(out, horizon=3)


def test_fine_tuning_begins_with_the_imitated_policy(tmp_path):
    # TRPO steps bounded by a KL of 1e-12 barely move the policy: what the fine-tuning ends with
    # is then what it began with, which must be the imitated policy (and the fine-tuning sigma)
    def stop_before_fine_tuning(msg):
        if msg.startswith("phase 3"):
            raise KeyboardInterrupt

    settings = {**TINY, "trpo": {**TINY["trpo"], "max_kl": 1e-12}}
    with pytest.raises(KeyboardInterrupt):
        train("Pendulum-v1", out=tmp_path / "r", log=stop_before_fine_tuning, seed=2, **settings)
    imitated = GaussianPolicy.load(tmp_path / "r" / "policy.npz")[0].get_flat()
    run = MBMFRun.resume(tmp_path / "r", QUIET)
    run.train()
    tuned = GaussianPolicy.load(tmp_path / "r" / "policy.npz")[0].get_flat()
    k = run.policy.net.flat_params.size
    assert run.metrics[-1]["phase"] == "trpo"
    np.testing.assert_allclose(tuned[:k], imitated[:k], atol=1e-3)  # the same mean network
    np.testing.assert_allclose(tuned[k:], [-1.0], atol=1e-3)  # the fine-tuning sigma
    assert np.abs(imitated[:k]).max() > 0.05  # a network, not zeros


def test_resume_between_phases_and_inside_trpo(tmp_path, finished):
    out = tmp_path / "run"

    def stop_in_second_dagger_round(msg):
        if msg.startswith("dagger round 1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("Pendulum-v1", out=out, log=stop_in_second_dagger_round, seed=1, **TINY)
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] == "imitation"
    run = MBMFRun.resume(out, QUIET)
    # the round interrupted before it was recorded is done again
    assert run.rounds == 1 and [r["phase"] for r in run.metrics][-1] == "bc"
    first_trpo = {}

    def stop_after_first_trpo_row(msg):
        if msg.startswith("iteration 1:") and "kl" in msg:
            first_trpo["seen"] = True
        elif first_trpo and msg.startswith("iteration 2:"):
            raise KeyboardInterrupt

    run.log = stop_after_first_trpo_row
    with pytest.raises(KeyboardInterrupt):
        run.train()
    resumed = MBMFRun.resume(out, QUIET)
    assert resumed.phase == "trpo"
    resumed.train()
    assert resumed.phase == "done" and resumed.env_steps == finished[1].env_steps
    rows = read_metrics(out)
    assert [r["phase"] for r in rows] == [r["phase"] for r in finished[1].metrics]
    assert [r["env_steps"] for r in rows] == [r["env_steps"] for r in finished[1].metrics]
    # the same seed gives the same run whether or not it was interrupted
    np.testing.assert_array_equal(resumed.policy.get_flat(), finished[1].policy.get_flat())


def test_cli_train_eval_resume(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "Pendulum-v1", "--algo", "mbmf", "--steps", "900", "--mbrl-steps", "400",
            "--random-steps", "200", "--steps-per-iteration", "200", "--horizon", "5",
            "--num-samples", "32", "--epochs", "2", "--dagger-rounds", "1", "--dagger-steps",
            "100", "--bc-epochs", "2", "--max-kl", "0.02", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "done: 900 steps" in capsys.readouterr().out
    cfg = read_run_config(out, "mbmf")
    assert cfg["trpo"]["max_kl"] == 0.02 and cfg["mbrl"]["horizon"] == 5
    assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["planner"] == "policy" and len(result["returns"]) == 1
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # finished: nothing to do
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(FastMBRLError, match="must exceed"):
        MBMFConfig("Pendulum-v1", steps=600, mbrl=dict(steps=500, random_steps=100),
                   dagger_steps=200, dagger_rounds=1).resolved()
    with pytest.raises(FastMBRLError, match="dagger_rounds"):
        MBMFConfig("Pendulum-v1", dagger_rounds=-1).resolved()
    with pytest.raises(FastMBRLError, match="bc_epochs"):
        MBMFConfig("Pendulum-v1", bc_epochs=0).resolved()
    with pytest.raises(FastMBRLError, match="unknown trpo setting"):
        MBMFConfig("Pendulum-v1", trpo=dict(steps=10)).resolved()
    with pytest.raises(FastMBRLError, match="unknown mbrl setting"):
        MBMFConfig("Pendulum-v1", mbrl=dict(horizn=3)).resolved()
    with pytest.raises(FastMBRLError, match="max_kl"):
        MBMFConfig("Pendulum-v1", trpo=dict(max_kl=-1.0)).resolved()
    with pytest.raises(FastMBRLError, match="task or seed"):
        MBMFConfig("Pendulum-v1", mbrl=dict(seed=3)).resolved()
    with pytest.raises(FastMBRLError, match="unknown setting"):
        train("Pendulum-v1", horizon=3)
    with pytest.raises(FastMBRLError, match="No-Such"):
        MBMFConfig("No-Such-Task").resolved()
    cfg = MBMFConfig("Pendulum-v1").resolved()  # defaults: TRPO's budget after the other phases
    assert cfg.trpo_config().steps == TRPOConfig("Pendulum-v1").resolved().steps
    assert cfg.trpo_config().init_log_std == -1.0
    (tmp_path / "config.json").write_text(json.dumps(
        {"fastmbrl_version": "0", "run_format": 1, "config": {"algo": "trpo"}}))
    with pytest.raises(FormatError, match="not a mbmf run"):
        MBMFRun.resume(tmp_path)
    assert main(["train", "--algo", "mbmf"]) == 2
    assert "task name is required" in capsys.readouterr().err
