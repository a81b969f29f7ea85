"""`fastmbrl bench plan`: the NumPy twin of every planner does the planner's model work and
scores as the kernel does; the MPPI and iCEM rows; `--model RUNDIR` with the user's planner
settings; bad settings refused. Tiny sizes: speed is never asserted."""
import dataclasses
import json

import numpy as np
import pytest

from fastmbrl.cli import main
from fastmbrl.cli.bench.plan import (CONFIGS, NumpyPlanner, make_planner, measure, model_arrays,
                                     numpy_reward, random_model)
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.planning.controller import Controller
from fastmbrl.planning.planners import PLANNERS
from tests.reference import rollout_reference

F32 = np.float32


def _tiny(name, **changes):
    if CONFIGS[name].planner == "beam":
        changes.setdefault("options", {"beams": 2})
    return dataclasses.replace(CONFIGS[name], hidden=(8,), horizon=3,
                               samples=max(4, CONFIGS[name].samples // 50), **changes)


def test_a_row_per_planner_including_mppi_and_icem():
    planners = {name: cfg.planner for name, cfg in CONFIGS.items()}
    assert planners["cheetah_mppi"] == "mppi" and planners["cheetah_icem"] == "icem"
    assert set(planners.values()) == set(PLANNERS)
    row = measure(_tiny("cheetah_icem"), repeats=1, reference_repeats=1)
    assert row["config"] == "cheetah_icem" and row["planner"] == "icem"
    assert row["ms_per_plan"] > 0 and row["reference_ms_per_plan"] > 0


@pytest.mark.parametrize("name", ["cheetah_rs", "cheetah_cem", "cheetah_mppi", "cheetah_icem",
                                  "cheetah_ens5", "cheetah_beam"])
def test_the_numpy_twin_scores_as_the_kernel_and_does_its_work(name):
    cfg = _tiny(name)
    model = random_model(cfg)
    planner = make_planner(cfg, model)
    twin = NumpyPlanner(planner, model, cfg.rewards[1])
    obs = np.random.default_rng(3).standard_normal(cfg.obs_dim).astype(F32)
    # the same candidates, scored by the kernel, the twin and the float64 reference
    batch = planner.scorer.batch(4)
    batch.actions[:] = np.random.default_rng(4).uniform(-1, 1, batch.actions.shape)
    planner.scorer.begin(obs)
    planner.scorer.score(batch)
    members = (list(zip(model["weights"], model["biases"])) if cfg.members > 1
               else [(model["weights"], model["biases"])])
    stats = [{k: np.atleast_2d(model[k])[m] for k in ("input_mean", "input_scale",
                                                      "delta_mean", "delta_std")}
             for m in range(cfg.members)]
    reward = lambda o, a, n, out: out.__setitem__(slice(None), cfg.rewards[1](o, a, n))  # noqa
    expected = np.mean([rollout_reference(w, b, "relu", obs=obs, actions=batch.actions,
                                          reward=reward, **st)
                        for (w, b), st in zip(members, stats)], axis=0)
    np.testing.assert_allclose(batch.returns, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(twin.returns(obs, batch.actions), expected, rtol=1e-4, atol=1e-4)
    # a plan of the twin scores as many candidates as the planner's (once warm)
    scored = []
    branch = twin.branch
    twin.branch = lambda s, a, cand: (scored.append(len(cand)), branch(s, a, cand))[1]
    for _ in range(2):
        scored.clear()
        plan = twin.plan(obs)
        planner.plan(obs)
    assert sum(scored) == planner.last_num_evaluated
    assert plan.shape == (cfg.horizon, cfg.act_dim)
    assert (np.abs(plan) <= 1).all()


@pytest.fixture(scope="module")
def saved_controller(tmp_path_factory):
    """A tiny Pendulum controller (an untrained silu ensemble) saved with a few observations."""
    d = tmp_path_factory.mktemp("bench") / "ctrl"
    model = DynamicsModel(3, 1, hidden=(8,), activation="silu", ensemble_size=2, seed=1)
    Controller(model, "Pendulum-v1", planner="cem", horizon=3, num_samples=8,
               planner_options={"iterations": 2}).save(d)
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(3, 1, 5)
    buf.add_batch(rng.standard_normal((5, 3)), rng.uniform(-2, 2, (5, 1)),
                  rng.standard_normal((5, 3)), rng.standard_normal(5))
    buf.save(d / "buffer.npz")
    return d, model


def test_the_twin_of_a_trained_model_scores_as_its_planner(saved_controller):
    d, model = saved_controller
    ctrl = Controller.load(d)
    planner = ctrl.planner
    twin = NumpyPlanner(planner, model_arrays(model), numpy_reward(planner.reward_fn))
    obs = np.array([0.6, 0.8, -1.0], F32)
    batch = planner.scorer.batch(5)
    batch.actions[:] = np.random.default_rng(5).uniform(-2, 2, batch.actions.shape)
    planner.scorer.begin(obs)
    planner.scorer.score(batch)
    np.testing.assert_allclose(twin.returns(obs, batch.actions), batch.returns, rtol=1e-4,
                               atol=1e-4)


def test_model_row_with_the_users_planner_settings(saved_controller, capsys):
    d, _ = saved_controller
    argv = ["bench", "plan", "--json", "--repeats", "1", "--model", str(d)]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (row["config"], row["planner"], row["num_samples"], row["horizon"]) == \
        ("model", "cem", 8, 3)
    assert row["planner_options"] == {"iterations": 2} and row["members"] == 2
    assert row["model_steps_per_plan"] == 8 * 2 * 3 * 2
    assert row["observations"] == "buffer.npz"
    assert main([*argv, "--planner", "icem", "--horizon", "4", "--num-samples", "12",
                 "--planner-options", '{"iterations": 2, "elites": 3}']) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (row["planner"], row["num_samples"], row["horizon"]) == ("icem", 12, 4)
    assert row["planner_options"] == {"iterations": 2, "elites": 3}
    icem = PLANNERS["icem"].candidates_per_call(12, iterations=2, elites=3)
    assert row["model_steps_per_plan"] == icem * 4 * 2


def _refused(capsys, argv, *named):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fastmbrl: error: "), err
    for n in named:
        assert n in err, (n, err)


def test_bad_settings_are_refused(saved_controller, tmp_path, capsys):
    d, _ = saved_controller
    base = ["bench", "plan", "--repeats", "1", "--model", str(d)]
    _refused(capsys, [*base, "--planner-options", '{"nope": 1}'], "cem", "'nope'")
    _refused(capsys, [*base, "--planner", "mppi", "--planner-options", '{"temperature": -1}'],
             "temperature")
    _refused(capsys, [*base, "--horizon", "0"], "horizon")
    _refused(capsys, ["bench", "plan", "--num-samples", "5"], "--num-samples", "--model")
    _refused(capsys, ["bench", "plan", "--model", str(tmp_path / "none")], "does not exist")
    with pytest.raises(SystemExit):
        main([*base, "--planner-options", "[1]"])
    assert "expected a JSON object" in capsys.readouterr().err


@pytest.mark.parametrize("members", [1, 2])
@pytest.mark.parametrize("tail_policy", ["mean", "random"])
def test_the_beam_search_plans_as_its_numpy_twin(members, tail_policy):
    # the same seed draws the same children: the tree, kept states per member, selection and
    # warm start of the kernel planner and of the NumPy twin give the same plans
    cfg = dataclasses.replace(CONFIGS["cheetah_beam"], hidden=(16,), horizon=6, samples=20,
                              members=members, options={"beams": 4, "tail": 3,
                                                        "tail_policy": tail_policy})
    model = random_model(cfg)
    planner = make_planner(cfg, model, seed=3)
    twin = NumpyPlanner(planner, model, cfg.rewards[1], seed=3)
    obs = np.random.default_rng(3).standard_normal(cfg.obs_dim).astype(F32)
    for _ in range(3):
        np.testing.assert_allclose(planner.plan(obs), twin.plan(obs), atol=1e-5)
