"""Planners on a problem with a known optimum: a double integrator (linear dynamics, written as
an exactly-linear ReLU network) with a quadratic cost, solved in closed form."""
import warnings

import numba
import numpy as np
import pytest

from fastmbrl.kernels import num_threads
from fastmbrl.kernels.rollout import pack_model
from fastmbrl.planners import CEM, ICEM, MPPI, RandomShooting, colored_noise_matrix
from tests.reference import StandInDynamics, quadratic_reward, rollout_reference

THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]

DT, H, X0, BOUND = 0.5, 8, np.array([0.5, 0.0], np.float32), 1.0


def linear_model():
    """delta = z @ M with z = (pos, vel, u): pos += DT vel, vel += DT u; relu(z) - relu(-z) = z."""
    m = np.array([[0.0, 0.0], [DT, 0.0], [0.0, DT]])
    return dict(weights=[np.hstack([np.eye(3), -np.eye(3)]), np.vstack([m, -m])],
                biases=[np.zeros(6), np.zeros(2)], input_mean=np.zeros(3),
                input_scale=np.ones(3), delta_mean=np.zeros(2), delta_std=np.ones(2))


def optimum():
    """Unconstrained minimiser of sum_t |x_{t+1}|^2 + 0.1 u_t^2 (least squares over U)."""
    a = np.array([[1.0, DT], [0.0, 1.0]])
    b = np.array([[0.0], [DT]])
    free = np.zeros((2 * H, 2))
    forced = np.zeros((2 * H, H))
    x = np.eye(2)
    for t in range(H):
        x = a @ x
        free[2 * t: 2 * t + 2] = x
        for s in range(t + 1):
            forced[2 * t: 2 * t + 2, s] = (np.linalg.matrix_power(a, t - s) @ b)[:, 0]
    lhs = np.vstack([forced, np.sqrt(0.1) * np.eye(H)])
    rhs = -np.concatenate([free @ X0, np.zeros(H)])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def score(plan):
    return rollout_reference(activation="relu", obs=X0, actions=plan[None].astype(np.float64),
                             reward=quadratic_reward, **linear_model())[0]


@pytest.fixture(scope="module")
def packed():
    return pack_model(activation="relu", **linear_model())


BUDGET = 2000
MAKERS = {
    "rs": lambda p, **kw: RandomShooting(p, quadratic_reward, num_samples=BUDGET, **kw),
    "cem": lambda p, **kw: CEM(p, quadratic_reward, population=250, elites=25, iterations=8, **kw),
    "mppi": lambda p, **kw: MPPI(p, quadratic_reward, num_samples=250, iterations=8,
                                 temperature=0.02, noise_std=0.2, **kw),
    "icem": lambda p, **kw: ICEM(p, quadratic_reward, population=400, elites=25, iterations=8,
                                 noise_beta=1.0, **kw),
}


def make(name, packed, **kw):
    kw.setdefault("seed", 0)
    return MAKERS[name](packed, horizon=H, action_low=[-BOUND], action_high=[BOUND], **kw)


def test_optimum_is_inside_the_bounds():
    assert np.abs(optimum()).max() < 0.9 * BOUND


@pytest.mark.parametrize("name", ["cem", "mppi", "icem"])
def test_near_optimum_and_ahead_of_random_shooting(packed, name):
    best = score(optimum()[:, None])
    planner = make(name, packed)
    assert planner.last_num_evaluated == 0
    plan = planner.plan(X0)
    assert planner.last_num_evaluated <= BUDGET and planner.last_num_diverged == 0
    random = score(make("rs", packed).plan(X0))
    got = score(plan)
    assert got >= best - 0.06 * abs(best), (got, best)
    assert best - got < (best - random) / 3, (got, random, best)
    assert abs(plan[0, 0] - optimum()[0]) < 0.2


@pytest.mark.parametrize("name", list(MAKERS))
def test_shapes_bounds_and_thread_determinism(packed, name):
    planner = make(name, packed, seed=3)
    plans = []
    for n in THREADS:
        planner.reset(seed=3)
        with num_threads(n):
            plans.append([planner.plan(X0 * s).copy() for s in (1.0, -3.0, 30.0)])
    for plan in plans[0]:
        assert plan.shape == (H, 1) and plan.dtype == np.float32
        assert (plan >= -BOUND).all() and (plan <= BOUND).all()
    for other in plans[1:]:
        for a, b in zip(plans[0], other):
            np.testing.assert_array_equal(a, b)
    action = planner.act(X0)
    assert action.shape == (1,) and np.isfinite(planner.last_best_return)


@pytest.mark.parametrize("name", list(MAKERS))
def test_diverging_model_gives_safe_action(name):
    model = linear_model()
    model["weights"][1] = np.where(model["weights"][1] != 0, np.inf, 0.0)
    planner = make(name, pack_model(activation="relu", **model))
    with pytest.warns(RuntimeWarning, match="diverged"):
        action = planner.act(X0)
    assert np.isfinite(action).all() and (np.abs(action) <= BOUND).all()
    assert planner.last_num_diverged == planner.last_num_evaluated > 0
    assert planner.last_best_return == -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        planner.act(X0)


def test_follows_model_version():
    model = linear_model()
    stand_in = StandInDynamics(model)
    planner = make("cem", stand_in, warm_start=False)
    first = planner.plan(X0).copy()
    stand_in.net.weights[1][[2, 5]] *= -1  # reversed controls: vel -= DT u
    stand_in.version += 1
    planner.reset(seed=0)
    second = planner.plan(X0)
    assert planner.packed.version == 1 and first[0, 0] * second[0, 0] < 0


def test_warm_start_shifts_solution(packed):
    planner = RandomShooting(packed, quadratic_reward, horizon=H, action_low=[-1],
                             action_high=[1], num_samples=8)
    plan = planner.plan(X0)
    np.testing.assert_array_equal(planner._mean[:-1], plan[1:])
    assert planner._mean[-1, 0] == 0.0


def test_colored_noise():
    white = colored_noise_matrix(16, 0.0)
    np.testing.assert_allclose(white @ white.T, np.eye(16), atol=1e-5)
    red = colored_noise_matrix(16, 2.0)
    cov = red @ red.T
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=1e-5)
    assert cov[0, 1] > 0.5


def test_bad_arguments(packed):
    kw = dict(horizon=H, action_low=[-1], action_high=[1])
    with pytest.raises(ValueError, match="horizon"):
        RandomShooting(packed, quadratic_reward, horizon=0, action_low=[-1], action_high=[1])
    with pytest.raises(ValueError, match="action_low must be below"):
        RandomShooting(packed, quadratic_reward, horizon=H, action_low=[1], action_high=[1])
    with pytest.raises(ValueError, match="action_high"):
        RandomShooting(packed, quadratic_reward, horizon=H, action_low=[-1], action_high=[1, 2])
    with pytest.raises(ValueError, match="elites"):
        CEM(packed, quadratic_reward, population=10, elites=20, **kw)
    with pytest.raises(ValueError, match="sampling"):
        CEM(packed, quadratic_reward, sampling="uniform", **kw)
    with pytest.raises(ValueError, match="temperature"):
        MPPI(packed, quadratic_reward, temperature=0, **kw)
    with pytest.raises(ValueError, match="keep_fraction"):
        ICEM(packed, quadratic_reward, keep_fraction=1.5, **kw)
    with pytest.raises(TypeError, match="numba"):
        RandomShooting(packed, lambda *a: None, **kw)
    planner = RandomShooting(packed, quadratic_reward, num_samples=8, **kw)
    with pytest.raises(ValueError, match="obs"):
        planner.plan(np.zeros(3))
