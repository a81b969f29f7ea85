"""Tasks: reward / termination parity with the real Gymnasium environments, and the registry."""
from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
import warnings

import numba
import numpy as np
import pytest

from fastmbrl import tasks
from fastmbrl.algorithms import MBRLConfig, TRPOConfig, preset, presets, register_preset
from fastmbrl.errors import FastMBRLError, MissingExtraError
from fastmbrl.kernels import FASTMATH
from fastmbrl.tasks import Task, get_task, list_tasks, register_task
from fastmbrl.tasks import task as task_module

BUILTIN = ["Pendulum-v1", "MountainCarContinuous-v0", "InvertedPendulum-v5", "Reacher-v5",
           "HalfCheetah-v5", "Hopper-v5", "Swimmer-v5", "InvertedDoublePendulum-v5", "Pusher-v5"]
DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tasks.md"

# InvertedDoublePendulum-v5's reward reads the tip position from MuJoCo's last RK4 stage, not
# from the final state in the observation (see its docstring): measured up to ≈2e-4 on steps
# whose observation is not saturated.
TOLERANCE = {"InvertedDoublePendulum-v5": 1e-3}

pytestmark = pytest.mark.filterwarnings("ignore:MuJoCo. compiler attribute 'settotalmass'")


def _mountain_car_near_goal(env, rng):
    # random actions never reach the goal from the usual start: start close to it instead
    env.unwrapped.state = np.array([rng.uniform(0.3, 0.45), rng.uniform(0.0, 0.07)], np.float32)
    return env.unwrapped.state.copy()


START = {"MountainCarContinuous-v0": _mountain_car_near_goal}


def rollout(task, steps=400, seed=0, episode_cap=100):
    """Random transitions of the real env: float32 (obs, act, next_obs), float64 rewards, flags.

    Actions span 1.5 × the action box, so that the rewards' clipping (or not) is exercised.
    """
    try:
        env = task.make_env()
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(seed)
    mid = (task.action_low + task.action_high) / 2
    span = 1.5 * (task.action_high - task.action_low)
    start = START.get(task.name)
    rows = []
    episode, t = 0, 0
    obs, _ = env.reset(seed=seed)
    if start:
        obs = start(env, rng)
    for _ in range(steps):
        act = (mid + (rng.random(task.act_dim) - 0.5) * span).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(act)
        rows.append((obs, act, next_obs, float(reward), bool(terminated)))
        obs, t = next_obs, t + 1
        if terminated or truncated or t == episode_cap:
            episode, t = episode + 1, 0
            obs, _ = env.reset(seed=seed + episode)
            if start:
                obs = start(env, rng)
    env.close()
    obs, act, next_obs, rewards, flags = zip(*rows)
    as32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return as32(obs), as32(act), as32(next_obs), np.array(rewards), np.array(flags), episode


def assert_parity(task, tolerance=1e-5, **kwargs):
    obs, act, next_obs, rewards, flags, episodes = rollout(task, **kwargs)
    assert episodes >= 3
    out = np.full(len(rewards), np.nan, np.float32)
    assert task.reward(obs, act, next_obs, out) is None
    error = np.abs(out.astype(np.float64) - rewards)
    if task.name == "InvertedDoublePendulum-v5":
        # the observation clips joint speeds and the constraint force at ±10, the env does not:
        # compare on the steps where none is saturated (joint limit hits excluded)
        error = error[(np.abs(next_obs[:, 5:9]) < 10).all(axis=1)]
    assert error.max() < tolerance, f"{task.name}: max |Δreward| = {error.max():.3g}"
    if task.terminated is None:
        assert not flags.any()
    else:
        done = np.zeros(len(flags), np.bool_)
        assert task.terminated(obs, act, next_obs, done) is None
        np.testing.assert_array_equal(done, flags)
        assert flags.any(), "the rollout should reach a terminal state"


@pytest.fixture(autouse=True, scope="module")
def _mujoco_warnings_to_python():
    """MuJoCo appends its warnings (HalfCheetah's model uses a deprecated attribute) to
    MUJOCO_LOG.TXT in the working directory unless a handler is set."""
    try:
        import mujoco
    except ImportError:
        yield
        return
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}"))
    yield
    mujoco.set_mju_user_warning(previous)


@pytest.fixture
def registry():
    """Restore the registries of tasks and presets after a test that registers some."""
    saved = dict(task_module._REGISTRY)
    saved_presets = {algo: dict(table) for algo, table in presets._PRESETS.items()}
    yield
    task_module._REGISTRY.clear()
    task_module._REGISTRY.update(saved)
    for algo, table in presets._PRESETS.items():
        table.clear()
        table.update(saved_presets[algo])


@pytest.mark.parametrize("name", BUILTIN)
def test_reward_and_termination_match_environment(name):
    pytest.importorskip("gymnasium")
    assert_parity(get_task(name), TOLERANCE.get(name, 1e-5))


# Pendulum's env keeps θ in float64 while the observation holds cos θ, sin θ in float32;
# MountainCar's float32 step is usually exact, but a build from the shared numba cache after a
# full suite differed by one ulp of the velocity (7.45e-9), which is what is allowed
KNOWN_DYNAMICS = {"Pendulum-v1": 2e-6, "MountainCarContinuous-v0": 7.5e-9}


def _random_state(name, rng):
    if name == "Pendulum-v1":  # float64, as the env keeps it; speeds up to the ±8 limit
        return np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-8, 8)])
    # float32, as the env keeps it after a step; the left wall (-1.2, v < 0) one time in four
    pos = np.float32(-1.2) if rng.random() < 0.25 else rng.uniform(-1.2, 0.6)
    return np.array([pos, rng.uniform(-0.07, 0.07)], np.float32)


@pytest.mark.parametrize("name", sorted(KNOWN_DYNAMICS))
def test_known_dynamics_match_the_environment_step_by_step(name):
    pytest.importorskip("gymnasium")
    task = get_task(name)
    env = task.make_env()
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    span = 1.5 * task.action_high  # beyond the bounds: the env's clipping is part of the step
    worst = 0.0
    for i in range(600):
        if i % 3 == 0:  # a fresh random state, else the env's own next one
            env.unwrapped.state = _random_state(name, rng)
        obs = np.asarray(env.unwrapped._get_obs() if name == "Pendulum-v1"
                         else env.unwrapped.state, np.float32)
        act = rng.uniform(-span, span).astype(np.float32)
        expected = env.step(act)[0]
        got = np.full((1, task.obs_dim), np.nan, np.float32)
        assert task.dynamics(obs[None], act[None], got) is None
        worst = max(worst, float(np.abs(got[0] - expected).max()))
    env.close()
    assert worst <= KNOWN_DYNAMICS[name], f"{name}: max |Δnext_obs| = {worst:.3g}"


def test_only_pendulum_and_mountain_car_know_their_dynamics():
    assert {n for n in list_tasks() if get_task(n).dynamics is not None} == set(KNOWN_DYNAMICS)


def test_inverted_pendulum_planning_reward_is_the_reward_minus_cart_position_squared():
    pytest.importorskip("gymnasium")
    task = get_task("InvertedPendulum-v5")
    obs, act, next_obs, rewards, flags, _ = rollout(task)
    out = np.full(len(rewards), np.nan, np.float32)
    task.planning_reward(obs, act, next_obs, out)
    assert flags.any() and (~flags).any()
    expected = np.where(flags, 0.0, rewards - next_obs[:, 0].astype(np.float64) ** 2)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the rail bounds |x| by 1: surviving never scores below failing
    edge = next_obs[:2].copy()
    edge[:, 0], edge[:, 1] = [1.0, -1.0], [0.0, 0.3]
    task.planning_reward(obs[:2], act[:2], edge, out[:2])
    assert out[0] >= out[1] == 0.0


def test_hopper_planning_reward_shapes_the_healthy_steps_and_penalises_the_fall():
    pytest.importorskip("gymnasium")
    b = tasks.builtin
    task = get_task("Hopper-v5")
    obs, act, next_obs, rewards, flags, _ = rollout(task)
    out = np.full(len(rewards), np.nan, np.float32)
    task.planning_reward(obs, act, next_obs, out)
    assert flags.any() and (~flags).any()
    x, nx = obs.astype(np.float64), next_obs.astype(np.float64)
    speed = (nx[:, 0] - x[:, 0]) / 0.008
    healthy = (rewards - speed                      # the env's 1 − 0.001 ‖a‖²
               + np.minimum(speed, float(b.HOPPER_SPEED_CAP))
               - float(b.HOPPER_HEIGHT_WEIGHT)
               * np.maximum(float(b.HOPPER_MIN_HEIGHT) - nx[:, 1], 0) ** 2
               - float(b.HOPPER_ANGLE_WEIGHT) * nx[:, 2] ** 2
               - float(b.HOPPER_JOINT_WEIGHT)
               * (np.maximum(np.abs(nx[:, 3:6]) - float(b.HOPPER_JOINT_SLACK), 0) ** 2).sum(1))
    expected = np.where(flags, -float(b.HOPPER_FALL_PENALTY), healthy)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-3)
    assert (healthy != rewards)[~flags].mean() > 0.3  # the shaping terms are exercised
    # a fall costs more than 40 healthy steps at 3 m/s earn
    assert b.HOPPER_FALL_PENALTY > 40 * (3.0 + 1.0)


def test_builtin_tasks_are_registered_and_consistent():
    assert set(BUILTIN) <= set(list_tasks())
    assert list_tasks() == sorted(list_tasks())
    for name in BUILTIN:
        task = get_task(name)
        assert task.name == name and task.action_low.dtype == np.float32
        assert task.action_low.shape == task.action_high.shape == (task.act_dim,)
        # every built-in task has an MBRL preset in the config's own names, and it resolves
        assert set(preset("mbrl", name)) <= MBRLConfig.setting_names()
        assert MBRLConfig(task=name).resolved().steps == preset("mbrl", name)["steps"]
        assert TRPOConfig(task=name).resolved().steps > 0
    # absolute positions exposed for the reward are hidden from the model
    assert get_task("HalfCheetah-v5").ignore_obs_dims == (0,)
    assert get_task("HalfCheetah-v5").angle_obs_dims == (2,)
    exposed = {"exclude_current_positions_from_observation": False}
    assert get_task("HalfCheetah-v5").env_kwargs == exposed


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_spaces_match_environments(name):
    pytest.importorskip("gymnasium")
    task = get_task(name)
    try:
        env = task.make_env()
    except MissingExtraError as exc:
        pytest.skip(f"{name}: {exc}")
    assert env.observation_space.shape == (task.obs_dim,)
    np.testing.assert_array_equal(env.action_space.low, task.action_low)
    np.testing.assert_array_equal(env.action_space.high, task.action_high)
    env.close()


def test_unknown_task_lists_known_ones():
    with pytest.raises(FastMBRLError, match="unknown task 'Pendulum-v0'") as exc:
        get_task("Pendulum-v0")
    assert "Did you mean 'Pendulum-v1'" in str(exc.value)
    assert all(name in str(exc.value) for name in BUILTIN)
    with pytest.raises(FastMBRLError, match="unknown task"):
        get_task(None)


def test_discrete_action_space_is_refused():
    pytest.importorskip("gymnasium")
    with pytest.raises(FastMBRLError, match="Discrete action space.*only Box"):
        Task.from_env("CartPole-v1", tasks.pendulum_reward)


def test_from_env_reads_spaces_and_facts():
    pytest.importorskip("gymnasium")
    task = Task.from_env("Pendulum-v1", tasks.pendulum_reward, name="pendulum-copy",
                         angle_obs_dims=())
    assert (task.obs_dim, task.act_dim, task.ignore_obs_dims) == (3, 1, ())
    np.testing.assert_array_equal(task.action_high, [2.0])
    with pytest.raises(FastMBRLError, match="cannot make Gymnasium environment 'NoSuchEnv-v0'"):
        Task.from_env("NoSuchEnv-v0", tasks.pendulum_reward)


def test_override_changing_the_observation_is_refused():
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    with pytest.raises(FastMBRLError, match="expects observation size 18 .* has 17 and 6"):
        # hiding x again would break the reward, which reads it at obs[0]
        get_task("HalfCheetah-v5").make_env(exclude_current_positions_from_observation=True)
    env = get_task("Pendulum-v1").make_env(max_episode_steps=7)  # harmless overrides pass through
    assert env.spec.max_episode_steps == 7
    env.close()


def test_make_env_without_gymnasium(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(MissingExtraError, match=r"fastmbrl\[envs\]"):
        get_task("Pendulum-v1").make_env()


def test_register_get_overwrite(registry):
    base = get_task("Pendulum-v1")
    task = Task(name="my-pendulum", env_id="Pendulum-v1", obs_dim=3, act_dim=1,
                action_low=[-2.0], action_high=[2.0], reward=base.reward)
    assert register_task(task) is task and get_task("my-pendulum") is task
    assert "my-pendulum" in list_tasks()
    with pytest.raises(FastMBRLError, match="already registered"):
        register_task(task)
    register_task(task, overwrite=True)
    with pytest.raises(FastMBRLError, match="expects a Task"):
        register_task("my-pendulum")
    # a task without a preset runs on the configs' defaults; a registered preset is used
    assert MBRLConfig(task="my-pendulum").resolved().horizon == 20
    register_preset("mbrl", "my-pendulum", {"horizon": 7, "planner": "rs"})
    cfg = MBRLConfig(task="my-pendulum").resolved()
    assert (cfg.horizon, cfg.planner, cfg.num_samples) == (7, "rs", 1000)
    assert MBRLConfig(task="my-pendulum", horizon=3).resolved().horizon == 3
    with pytest.raises(FastMBRLError, match="already has a mbrl preset"):
        register_preset("mbrl", "my-pendulum", {"horizon": 8})
    with pytest.raises(FastMBRLError, match=r"unknown setting\(s\) \['horizn'\]"):
        register_preset("mbrl", "my-pendulum", {"horizn": 8}, overwrite=True)
    register_preset("mbrl", "my-pendulum", {"horizon": 0}, overwrite=True)
    with pytest.raises(FastMBRLError, match="horizon must be a positive integer"):
        MBRLConfig(task="my-pendulum").resolved()
    with pytest.raises(FastMBRLError, match="unknown algorithm 'ppo'"):
        register_preset("ppo", "my-pendulum", {})


def test_deprecated_task_defaults_still_set_the_mbrl_settings(registry):
    """Task(defaults=...) of earlier versions: the facts become fields, the rest a preset."""
    with pytest.warns(DeprecationWarning, match="register_preset"):
        task = Task(name="old-style", env_id="Pendulum-v1", obs_dim=3, act_dim=1,
                    action_low=[-2.0], action_high=[2.0], reward=tasks.pendulum_reward,
                    defaults={"ignore_obs_dims": (2,), "model_hidden": (16,), "iterations": 3,
                              "random_steps": 100, "planner_options": {"iterations": 2}})
    register_task(task)
    assert task.ignore_obs_dims == (2,)
    cfg = MBRLConfig(task="old-style").resolved()
    assert (cfg.hidden, cfg.steps, cfg.random_steps) == ((16,), 100 + 3 * 1000, 100)
    assert cfg.planner_options == {"iterations": 2}
    with pytest.raises(TypeError):
        task.defaults["model_hidden"] = (8,)  # read-only under the runs that use it


@numba.njit(cache=True, fastmath=FASTMATH)
def _wrong_signature(obs, act, out):
    out[:] = np.float32(0.0)


@numba.njit(cache=True, fastmath=FASTMATH)
def _returns_array(obs, act, next_obs, out):
    out[:] = np.float32(0.0)
    return out


def test_register_refuses_bad_functions(registry):
    kwargs = dict(name="bad", env_id="Pendulum-v1", obs_dim=3, act_dim=1,
                  action_low=[-2.0], action_high=[2.0])
    with pytest.raises(FastMBRLError, match="reward must be a numba.njit function"):
        Task(reward=lambda obs, act, next_obs, out: None, **kwargs)
    with pytest.raises(FastMBRLError, match="terminated must be None or a numba.njit"):
        Task(reward=tasks.pendulum_reward, terminated=np.isnan, **kwargs)
    with pytest.raises(FastMBRLError, match="planning_reward must be None or a numba.njit"):
        Task(reward=tasks.pendulum_reward, planning_reward=np.sum, **kwargs)
    with pytest.raises(FastMBRLError, match="planning_reward.*failed"):
        register_task(Task(reward=tasks.pendulum_reward, planning_reward=_wrong_signature,
                           **kwargs))
    with pytest.raises(FastMBRLError, match="reward.*failed"):
        register_task(Task(reward=_wrong_signature, **kwargs))
    with pytest.raises(FastMBRLError, match=r"dynamics must be None or a numba.njit function "
                                            r"\(obs, act, next_obs\)"):
        Task(reward=tasks.pendulum_reward, dynamics=lambda obs, act, nxt: None, **kwargs)
    with pytest.raises(FastMBRLError, match="dynamics.*failed"):  # the reward's signature
        register_task(Task(reward=tasks.pendulum_reward, dynamics=tasks.pendulum_reward,
                           **kwargs))
    with pytest.raises(FastMBRLError, match="return None"):
        register_task(Task(reward=_returns_array, **kwargs))
    assert "bad" not in list_tasks()


@pytest.mark.parametrize("field, value, message", [
    ("action_low", [-2.0, -2.0], "action_low: expected shape"),
    ("action_low", [3.0], "below action_high"),
    ("action_high", [np.inf], "NaN or infinite"),
    ("obs_dim", 0, "obs_dim must be a positive integer"),
    ("name", "", "name must be a non-empty string"),
    ("ignore_obs_dims", (3,), r"ignore_obs_dims must be distinct .* \[0, 3\)"),
    ("angle_obs_dims", (1, 1), r"angle_obs_dims must be distinct"),
    ("angle_obs_dims", "x", r"angle_obs_dims must be a sequence of indices"),
    ("defaults", {"horizn": 5}, r"unknown key\(s\) \['horizn'\]"),
    ("defaults", [("horizon", 3)], "defaults must be a dict"),
])
def test_task_validation(field, value, message):
    kwargs = dict(name="t", env_id="Pendulum-v1", obs_dim=3, act_dim=1, action_low=[-2.0],
                  action_high=[2.0], reward=tasks.pendulum_reward)
    kwargs[field] = value
    with pytest.raises(FastMBRLError, match=message):
        Task(**kwargs)


def test_an_observation_entry_is_hidden_or_an_angle_not_both():
    with pytest.raises(FastMBRLError, match="must not share an index"):
        Task(name="t", env_id="Pendulum-v1", obs_dim=3, act_dim=1, action_low=[-2.0],
             action_high=[2.0], reward=tasks.pendulum_reward, ignore_obs_dims=(0,),
             angle_obs_dims=(0,))


def test_task_arrays_are_read_only_copies():
    low = np.array([-2.0], np.float32)
    task = Task(name="t", env_id="Pendulum-v1", obs_dim=3, act_dim=1, action_low=low,
                action_high=[2.0], reward=tasks.pendulum_reward)
    low[0] = -5.0
    assert task.action_low[0] == -2.0
    with pytest.raises(ValueError):
        task.action_low[0] = 0.0


def test_docs_example_registers_a_task_with_parity(registry, tmp_path, monkeypatch):
    """The Python blocks of docs/tasks.md, run as a user module, register a working task."""
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    code = "\n".join(re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S))
    module_path = tmp_path / "user_walker_task.py"
    module_path.write_text(code)
    spec = importlib.util.spec_from_file_location("user_walker_task", module_path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "user_walker_task", module)
    spec.loader.exec_module(module)
    task = get_task("Walker2d-v5")
    assert task.obs_dim == 18 and task.act_dim == 6
    assert task.ignore_obs_dims == (0,)
    cfg = MBRLConfig(task="Walker2d-v5").resolved()
    assert (cfg.planner, cfg.horizon) == ("cem", 30)
    assert_parity(task)
