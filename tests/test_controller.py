"""Controller.act on the embedded path: checks on obs, the returned buffer, no allocation."""
import numpy as np
import pytest

from fastmbrl import Controller, DynamicsModel
from fastmbrl.errors import FastMBRLError
from fastmbrl.cli.bench.controller import allocations


@pytest.fixture(scope="module")
def controller():
    model = DynamicsModel(3, 1, (16, 16), "silu", seed=0)
    return Controller(model, "Pendulum-v1", planner="cem", horizon=6, num_samples=64,
                      planner_options={"iterations": 2})


def test_act_checks_obs(controller):
    with pytest.raises(ValueError, match=r"obs: expected shape \(3,?\), got \(4,\)"):
        controller.act(np.zeros(4))
    with pytest.raises(ValueError, match=r"obs: expected shape \(3,?\), got \(\)"):
        controller.act(1.0)
    with pytest.raises(ValueError, match="obs: contains NaN"):
        controller.act(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="obs: cannot be cast"):
        controller.act(["a", "b", "c"])


def test_act_returns_a_bounded_action_each_call_its_own(controller):
    controller.reset(seed=2)
    action = controller.act(np.array([1.0, 0.0, 0.5]))
    assert action.shape == (1,) and action.dtype == np.float32
    assert np.abs(action).max() <= 2.0
    kept = action.copy()
    history = [action, controller.act(np.array([-1.0, 0.0, -3.0]))]
    assert history[0] is not history[1]
    np.testing.assert_array_equal(history[0], kept)  # keeping it is safe: later calls leave it
    controller.reset(seed=2)
    out = np.empty(1, np.float32)
    assert controller.act(np.array([1.0, 0.0, 0.5], np.float32), out=out) is out
    np.testing.assert_array_equal(out, kept)


def test_predict_takes_one_observation_or_a_batch(controller):
    rows = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -2.0], [-1.0, 0.0, 3.0]])
    controller.reset(seed=4)
    single = [controller.act(r) for r in rows]
    controller.reset(seed=4)
    batch = controller.predict(rows)
    assert batch.shape == (3, 1) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.stack(single))  # rows in turn, as act would
    controller.reset(seed=4)
    np.testing.assert_array_equal(controller.predict(rows[0]), single[0])
    with pytest.raises(ValueError, match="obs: expected shape"):
        controller.predict(np.zeros((2, 4)))


def test_act_allocates_no_numpy_array(controller):
    scorer = controller.planner.scorer
    batch = scorer.batch(controller.planner.num_samples)
    kernel = allocations(lambda: scorer.score(batch))  # numba unboxing the kernel's arguments
    obs = np.array([0.3, -0.9, 1.5])  # float64, as gymnasium returns
    out = np.empty(1, np.float32)
    got = allocations(lambda: controller.act(obs, out), calls=5, numpy_calls=1)
    assert got["numpy_bytes_per_call"] == 0, got
    assert got["bytes_per_call"] <= kernel["bytes_per_call"] + 160, (got, kernel)
    # without out=, the one (A,) array it returns
    got = allocations(lambda: controller.act(obs), calls=5, numpy_calls=1)
    assert 0 < got["numpy_bytes_per_call"] <= 4 * controller.task.act_dim, got


def test_planning_reward_is_used_unless_shaping_is_off(tmp_path):
    from fastmbrl.errors import FastMBRLError
    from fastmbrl.tasks import get_task

    task = get_task("InvertedPendulum-v5")
    model = DynamicsModel(4, 1, (8,), "silu", seed=0)
    shaped = Controller(model, task, planner="rs", horizon=3, num_samples=16)
    assert shaped.planner.reward_fn is task.planning_reward is not task.reward
    plain = Controller(model, task, planner="rs", horizon=3, num_samples=16, shaping=False)
    assert plain.planner.reward_fn is task.reward
    # a task without a planning reward plans with its reward either way
    assert Controller(DynamicsModel(3, 1, (8,), seed=0), "Pendulum-v1", planner="rs",
                      horizon=3, num_samples=16).planner.reward_fn is get_task("Pendulum-v1").reward
    plain.save(tmp_path)
    assert Controller.load(tmp_path).planner.reward_fn is task.reward
    assert Controller.load(tmp_path, shaping=True).planner.reward_fn is task.planning_reward
    with pytest.raises(FastMBRLError, match="shaping must be True or False"):
        Controller(model, task, planner="rs", horizon=3, num_samples=16, shaping="no")


def test_defaults_come_from_planning(tmp_path):
    from fastmbrl.planning.planners import CEM, DEFAULT_HORIZON, DEFAULT_PLANNER

    model = DynamicsModel(3, 1, (8,), "silu", seed=0)
    ctrl = Controller(model, "Pendulum-v1")
    assert (DEFAULT_PLANNER, DEFAULT_HORIZON) == ("cem", 20)
    assert type(ctrl.planner) is CEM and ctrl.planner.horizon == DEFAULT_HORIZON
    assert ctrl.planner.num_samples == 500  # CEM's own default
    assert ctrl.settings["num_samples"] == 500  # the number used, saved as such
    ctrl.save(tmp_path)
    assert Controller.load(tmp_path).planner.num_samples == 500
    rs = Controller(model, "Pendulum-v1", planner="rs", horizon=3)
    assert rs.planner.num_samples == rs.settings["num_samples"] == 1000


def test_saved_population_option_still_loads(tmp_path):
    import json

    from fastmbrl.errors import FastMBRLError

    model = DynamicsModel(3, 1, (8,), "silu", seed=0)
    Controller(model, "Pendulum-v1", planner="icem", horizon=3, num_samples=30).save(tmp_path)
    path = tmp_path / "controller.json"
    meta = json.loads(path.read_text())
    meta["planner_options"] = {"population": 24, "elites": 5}  # as an older file could hold it
    path.write_text(json.dumps(meta))
    with pytest.warns(DeprecationWarning, match="population"):
        ctrl = Controller.load(tmp_path)
    assert ctrl.planner.num_samples == 30  # the saved setting overrides it, as it always did
    with pytest.warns(DeprecationWarning, match="population"):
        ctrl = Controller.load(tmp_path, num_samples=None)
    assert ctrl.planner.num_samples == 24 and ctrl.planner.num_elites == 5
    with pytest.raises(FastMBRLError, match="unknown planner"):
        Controller(model, "Pendulum-v1", planner="nope")


@pytest.mark.parametrize("planner, options", [("cem", {"iterations": 50}),
                                              ("mppi", {"iterations": 50}),
                                              ("icem", {"iterations": 50})])
def test_a_deadline_stops_refining_and_still_gives_a_bounded_action(planner, options):
    import time

    model = DynamicsModel(3, 1, (64, 64), "silu", seed=0)
    ctrl = Controller(model, "Pendulum-v1", planner=planner, horizon=20, num_samples=400,
                      planner_options=options)
    obs = np.array([0.3, -0.9, 1.5])

    def timed(**kw):
        t = time.perf_counter()
        action = ctrl.act(obs, **kw)
        return action, 1e3 * (time.perf_counter() - t)

    _, full = timed()
    actions, spent = zip(*(timed(deadline_ms=full / 20) for _ in range(5)))
    # the first iteration always runs, so a plan costs at least one iteration past the budget
    assert np.median(spent) < full / 4, (spent, full)
    for a in actions:
        assert np.isfinite(a).all() and np.abs(a).max() <= 2.0
    ctrl.reset(seed=1)
    a, _ = timed(deadline_ms=1e6)  # a budget never reached: the same plan as without one
    ctrl.reset(seed=1)
    np.testing.assert_array_equal(a, ctrl.act(obs))
    with pytest.raises(ValueError, match="deadline_ms"):
        ctrl.act(obs, deadline_ms=0)
    with pytest.raises(ValueError, match="deadline_ms"):
        Controller(model, "Pendulum-v1", planner=planner, deadline_ms=float("nan"))
    timed_ctrl = Controller(model, "Pendulum-v1", planner=planner, horizon=20, num_samples=400,
                            planner_options=options, deadline_ms=full / 20)
    assert timed_ctrl.settings["deadline_ms"] == full / 20


def test_controller_json_keeps_the_action_bounds_and_a_load_checks_them(controller, tmp_path):
    import json

    from fastmbrl.errors import FormatError

    controller.save(tmp_path)
    meta = json.loads((tmp_path / "controller.json").read_text())
    assert meta["action_low"] == [-2.0] and meta["action_high"] == [2.0]
    assert Controller.load(tmp_path).settings == controller.settings
    meta["action_high"] = [3.0]  # a file from a task whose bounds have changed since
    (tmp_path / "controller.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"action_high \[3.0\] differs"):
        Controller.load(tmp_path)
    meta["action_high"] = ["x"]
    (tmp_path / "controller.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="action_high"):
        Controller.load(tmp_path)


def test_known_dynamics_plan_the_swing_up_and_save_as_settings(tmp_path):
    """Every planner's machinery on a FunctionModel; iCEM at its default budget swings the
    pendulum up with the true model, and the controller saves without a model.npz."""
    pytest.importorskip("gymnasium")
    from fastmbrl.models.function import FunctionModel

    model = FunctionModel.of_task("Pendulum-v1")
    ctrl = Controller(model, "Pendulum-v1", planner="icem", horizon=30)
    env = ctrl.task.make_env()
    obs, _ = env.reset(seed=1_000_000)  # 32° off upright (from the bottom ~-240 is the best)
    total = 0.0
    for _ in range(200):
        obs, reward, *_ = env.step(ctrl.act(obs))
        total += reward
    env.close()
    assert total > -200
    ctrl.save(tmp_path / "known")
    assert not (tmp_path / "known" / "model.npz").exists()
    again = Controller.load(tmp_path / "known")
    assert isinstance(again.model, FunctionModel) and again.settings == ctrl.settings
    obs0 = np.array([1.0, 0.0, 0.0], np.float32)
    again.reset(0)
    ctrl.reset(0)
    np.testing.assert_array_equal(again.act(obs0), ctrl.act(obs0))


def test_function_models_refuse_what_they_cannot_be(tmp_path):
    from fastmbrl.models.function import FunctionModel
    from fastmbrl.tasks import mountain_car_dynamics

    with pytest.raises(FastMBRLError, match="HalfCheetah-v5 has no known dynamics"):
        FunctionModel.of_task("HalfCheetah-v5")
    with pytest.raises(FastMBRLError, match="dynamics: expected a numba.njit function"):
        FunctionModel(lambda obs, act, nxt: None, 2, 1)
    mine = FunctionModel(mountain_car_dynamics, 2, 1)  # not the task's: not saveable
    ctrl = Controller(mine, "MountainCarContinuous-v0", planner="rs", horizon=5, num_samples=8)
    with pytest.raises(FastMBRLError, match="code, not data"):
        ctrl.save(tmp_path / "mine")
    assert not (tmp_path / "mine").exists()
    with pytest.raises(FastMBRLError, match="do not fit task"):
        Controller(mine, "Pendulum-v1")
    np.testing.assert_array_equal(mine.predict([0.0, 0.0], [1.0]).shape, (2,))
