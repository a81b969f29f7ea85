"""Settings and inputs that used to be accepted and gave nonsense: every float setting of the
planners is finite and in range, the buffer stores only real numbers and true flags, a reward
that raises is reported as itself, a fit too small to validate says so."""
import numba
import numpy as np
import pytest

from fastmbrl import Controller, DynamicsModel, ReplayBuffer
from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels.rollout import pack_model
from fastmbrl.planning.planners import CEM, ICEM, MPPI, RandomShooting, colored_noise_matrix
from tests.reference import quadratic_reward
from tests.test_planners import linear_model

KW = dict(horizon=4, action_low=[-1.0], action_high=[1.0])
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def packed():
    return pack_model(activation="relu", **linear_model())


@pytest.mark.parametrize("cls, setting, value, accepted", [
    (ICEM, "noise_beta", NAN, r"in \[0, 10\]"),
    (ICEM, "noise_beta", INF, r"in \[0, 10\]"),
    (ICEM, "noise_beta", 1e3, r"in \[0, 10\]"),
    (ICEM, "noise_beta", -1.0, r"in \[0, 10\]"),
    (ICEM, "decay", NAN, ">= 1"),
    (ICEM, "decay", INF, ">= 1"),
    (ICEM, "decay", 0.5, ">= 1"),
    (ICEM, "keep_fraction", NAN, r"in \[0, 1\]"),
    (ICEM, "alpha", NAN, r"in \[0, 1\)"),
    (ICEM, "alpha", 1.0, r"in \[0, 1\)"),
    (CEM, "alpha", NAN, r"in \[0, 1\)"),
    (CEM, "alpha", -0.1, r"in \[0, 1\)"),
    (CEM, "alpha", INF, r"in \[0, 1\)"),
    (CEM, "elites", NAN, r"fraction in \(0, 1\)"),
    (CEM, "elites", 1.5, r"fraction in \(0, 1\)"),
    (CEM, "elites", 0.0, r"fraction in \(0, 1\)"),
    (CEM, "elites", INF, r"fraction in \(0, 1\)"),
    (MPPI, "temperature", INF, "> 0"),
    (MPPI, "temperature", NAN, "> 0"),
    (MPPI, "temperature", 0.0, "> 0"),
    (MPPI, "smoothing", NAN, r"in \[0, 1\]"),
    (MPPI, "smoothing", 1.5, r"in \[0, 1\]"),
    (CEM, "init_std", NAN, "init_std"),
    (CEM, "init_std", 1e39, "init_std"),
    (CEM, "init_std", -1.0, "init_std"),
    (MPPI, "noise_std", INF, "noise_std"),
])
def test_float_settings_must_be_finite_and_in_range(packed, cls, setting, value, accepted):
    with pytest.raises(ValueError, match=setting) as info:
        cls(packed, quadratic_reward, num_samples=32, **KW, **{setting: value})
    assert len(str(info.value).splitlines()) == 1
    if setting not in ("init_std", "noise_std"):  # arrays: "contains NaN", "must be positive"
        assert info.match(accepted)


def test_the_largest_accepted_noise_beta_gives_finite_noise(packed):
    planner = ICEM(packed, quadratic_reward, num_samples=32, noise_beta=10.0, **KW)
    assert np.isfinite(planner.act(np.zeros(2, np.float32))).all()
    assert np.isfinite(colored_noise_matrix(100, 10.0)).all()
    with pytest.raises(ValueError, match="beta"):
        colored_noise_matrix(16, NAN)


@pytest.mark.parametrize("low, high, message", [
    (-3e38, 3e38, r"within \[-1e\+06, 1e\+06\]"),
    (-1.0, 2e6, r"within \[-1e\+06, 1e\+06\]"),
    (-INF, 1.0, "NaN or infinite"),
    (NAN, 1.0, "NaN or infinite"),
    (1.0, 1.0, "below action_high"),
    (2.0, 1.0, "below action_high"),
])
def test_action_bounds_must_be_finite_moderate_and_ordered(packed, low, high, message):
    for cls in (RandomShooting, CEM, MPPI, ICEM):
        with pytest.raises(ValueError, match=message):
            cls(packed, quadratic_reward, num_samples=32, horizon=4, action_low=[low],
                action_high=[high])


def test_wide_but_moderate_bounds_are_accepted(packed):
    planner = MPPI(packed, quadratic_reward, num_samples=32, horizon=4, action_low=[-1e6],
                   action_high=[1e6])
    action = planner.act(np.zeros(2, np.float32))
    assert np.isfinite(action).all() and abs(action[0]) <= 1e6


# ------------------------------------------------------------------------------ the buffer
def _row(**changes):
    row = dict(obs=np.zeros(3), action=np.zeros(2), next_obs=np.ones(3), reward=1.0,
               terminated=False, truncated=False)
    row.update(changes)
    return row


@pytest.mark.parametrize("field", ["obs", "action", "next_obs", "reward"])
def test_buffer_refuses_complex_values(field):
    buf = ReplayBuffer(3, 2, 10)
    row = _row()
    row[field] = np.asarray(row[field]) + 1j
    with pytest.raises(ValueError, match=f"{field}: complex values are not accepted"):
        buf.add(**row)
    batch = {k: np.asarray(v)[None].repeat(2, axis=0) for k, v in _row().items()}
    batch[field] = batch[field] + 0j  # complex even with a zero imaginary part
    with pytest.raises(ValueError, match=f"{field}: complex"):
        buf.add_batch(**batch)
    assert len(buf) == 0


@pytest.mark.parametrize("value", [2.5, NAN, -1, 2, INF, "yes", 1 + 0j])
@pytest.mark.parametrize("flag", ["terminated", "truncated"])
def test_buffer_refuses_flags_that_are_not_booleans(flag, value):
    buf = ReplayBuffer(3, 2, 10)
    with pytest.raises(ValueError, match=flag):
        buf.add(**_row(**{flag: value}))
    batch = {k: np.asarray(v)[None].repeat(2, axis=0) for k, v in _row().items()}
    batch[flag] = np.array([0, value], dtype=object if isinstance(value, str) else None)
    with pytest.raises(ValueError, match=flag):
        buf.add_batch(**batch)
    assert len(buf) == 0


def test_buffer_takes_booleans_and_zero_one_as_flags():
    buf = ReplayBuffer(3, 2, 20)
    for value in (True, False, 0, 1, 0.0, 1.0, np.bool_(True), np.float32(1)):
        buf.add(**_row(terminated=value, truncated=value))
    batch = {k: np.asarray(v)[None].repeat(3, axis=0) for k, v in _row().items()}
    batch["terminated"] = np.array([0, 1, 1])
    batch["truncated"] = np.array([1.0, 0.0, 0.0])
    buf.add_batch(**batch)
    assert buf.terminated.tolist() == [True, False, False, True, False, True, True, True,
                                       False, True, True]
    assert buf.truncated.dtype == np.bool_


# ------------------------------------------------------------------ a reward that raises
@numba.njit
def _raising_reward(obs, act, next_obs, out):
    for i in range(obs.shape[0]):
        if obs[i, 0] > 100.0:
            raise ValueError("reward: the state left the table")
        out[i] = -next_obs[i, 0] ** 2


@numba.njit
def _raising_terminated(obs, act, next_obs, out):
    for i in range(obs.shape[0]):
        if obs[i, 0] > 100.0:
            raise KeyError("terminated: no such state")
        out[i] = False


@pytest.mark.parametrize("cls", [RandomShooting, CEM, MPPI, ICEM])
def test_a_reward_that_raises_is_reported_as_itself(packed, cls):
    planner = cls(packed, _raising_reward, num_samples=32, **KW)
    with pytest.raises(ValueError, match="the state left the table") as info:
        planner.act(np.array([500.0, 0.0], np.float32))
    assert not isinstance(info.value, SystemError)
    assert any("_raising_reward" in note for note in getattr(info.value, "__notes__", ()))
    # the planner still works afterwards
    assert np.isfinite(planner.act(np.array([0.5, 0.0], np.float32))).all()


def test_the_rollout_function_reports_a_raising_reward_as_itself(packed):
    from fastmbrl.kernels.rollout import rollout

    actions = np.zeros((8, 3, packed.act_dim), np.float32)
    with pytest.raises(ValueError, match="the state left the table") as info:
        rollout(packed, np.array([500.0, 0.0], np.float32), actions, _raising_reward)
    assert any("_raising_reward" in note for note in info.value.__notes__)


def test_a_termination_function_that_raises_is_reported_as_itself(packed):
    planner = CEM(packed, quadratic_reward, _raising_terminated, num_samples=32, **KW)
    with pytest.raises(KeyError, match="no such state") as info:
        planner.act(np.array([500.0, 0.0], np.float32))
    assert any("_raising_terminated" in note for note in info.value.__notes__)


# ------------------------------------------------------------------ fits too small to validate
def _buffer(n):
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(3, 2, 100)
    if n:
        obs = rng.normal(size=(n, 3))
        buf.add_batch(obs, rng.normal(size=(n, 2)), obs + 0.1, np.zeros(n))
    return buf


@pytest.mark.parametrize("seed", range(4))
def test_a_one_row_fit_with_validation_is_refused_saying_how_many_rows(seed):
    model = DynamicsModel(3, 2, hidden=(8,), seed=seed)
    with pytest.raises(FastMBRLError, match=r"at least 2 transitions.*holds 1") as info:
        model.fit(_buffer(1), epochs=2, batch_size=8, validation_ratio=0.1)
    assert "validation_ratio=0" in str(info.value)
    assert model.version == 0


def test_a_fit_without_validation_says_so_instead_of_nan():
    model = DynamicsModel(3, 2, hidden=(8,), seed=0)
    history = model.fit(_buffer(1), epochs=2, batch_size=8, validation_ratio=0.0)
    assert history["validation_rows"] == 0 and history["train_rows"] == 1
    assert history["val_loss"] == [] and history["val_mse"] == []
    assert len(history["train_loss"]) == 2 and np.isfinite(history["train_loss"]).all()
    history = model.fit(_buffer(2), epochs=1, batch_size=8, validation_ratio=0.5)
    assert history["validation_rows"] == 1 and history["train_rows"] == 1
    assert np.isfinite(history["val_loss"]).all()


# ---------------------------------------------------------------------- controller settings
@pytest.fixture(scope="module")
def model():
    return DynamicsModel(3, 1, (8,), seed=0)


@pytest.mark.parametrize("settings, message", [
    (dict(horizon="20"), "horizon must be a positive integer"),
    (dict(horizon=2.5), "horizon must be a positive integer"),
    (dict(num_samples=0), "num_samples must be a positive integer"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(seed=1.5), "seed must be a non-negative integer"),
    (dict(planner_options={"alpha": NAN}), "alpha must be a finite number"),
    (dict(planner_options={"bogus": 1}), "planner_options: cem takes no option 'bogus'"),
    (dict(planner_options={"horizon": 3}), "planner_options: cem takes no option 'horizon'"),
    (dict(task=3), "task must be a task name or a Task, got 3"),
])
def test_controller_settings_are_checked(model, settings, message):
    with pytest.raises((ValueError, FastMBRLError), match=message):
        Controller(model, **{"task": "Pendulum-v1", "num_samples": 16, **settings})
