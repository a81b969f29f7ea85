"""The built-in tasks: their rewards and terminations as compiled functions, and their facts.

Every reward / termination function follows one contract so that the planner's rollout kernel
can call it on a whole batch of imagined transitions:

    reward(obs, act, next_obs, out)      obs, next_obs (N, O), act (N, A) float32; out (N,) float32
    terminated(obs, act, next_obs, out)  same inputs; out (N,) np.bool_

Both write into `out` and return None. They are `numba.njit(cache=True, fastmath=FASTMATH)`
functions at module level, so NumPy code can call them too.

The built-in functions reproduce the Gymnasium 1.x reward from (obs, act, next_obs) alone
(tests/test_tasks.py checks this against the real environments). Where the default observation
hides a quantity the reward needs, the task creates its environment with the option that exposes
it (see each function's docstring). Two limits hold for all of them:
- arithmetic is float32 on float32 observations, so a velocity computed as a difference of
  positions, (x' - x) / dt, carries a rounding error up to spacing(float32(|x|)) / dt, which
  grows with the distance travelled (the model ignores absolute x, so a controller may shift x
  to 0 before planning to keep it small);
- a threshold test (e.g. |angle| > 0.2) can disagree with the float64 environment when the value
  lies within half a float32 spacing of the threshold.
"""
from __future__ import annotations

import numba
import numpy as np

from fastmbrl.kernels import FASTMATH
from fastmbrl.tasks.task import _REGISTRY, Task

__all__ = [  # the rewards and terminations, for users' tasks and tests
    "pendulum_reward",
    "pendulum_dynamics",
    "mountain_car_reward",
    "mountain_car_terminated",
    "mountain_car_dynamics",
    "inverted_pendulum_reward",
    "inverted_pendulum_planning_reward",
    "inverted_pendulum_terminated",
    "reacher_reward",
    "half_cheetah_reward",
    "hopper_reward",
    "hopper_planning_reward",
    "hopper_terminated",
    "swimmer_reward",
    "inverted_double_pendulum_reward",
    "inverted_double_pendulum_terminated",
    "pusher_reward",
]

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_INF = np.float32(np.inf)


# ---------------------------------------------------------------------------------------------
# shared helpers (compiled)

@numba.njit(cache=True, fastmath=FASTMATH)
def _clip(x, lo, hi):
    # written with comparisons so that NaN passes through, as np.clip does
    if x > hi:
        return hi
    if x < lo:
        return lo
    return x


@numba.njit(cache=True, fastmath=FASTMATH)
def _sum_sq(act, i):
    s = _F0
    for j in range(act.shape[1]):
        s += act[i, j] * act[i, j]
    return s


@numba.njit(cache=True, fastmath=FASTMATH)
def _dist3(x, i, a, b):
    """Euclidean distance between x[i, a:a+3] and x[i, b:b+3]."""
    d0 = x[i, a] - x[i, b]
    d1 = x[i, a + 1] - x[i, b + 1]
    d2 = x[i, a + 2] - x[i, b + 2]
    return np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)


# ---------------------------------------------------------------------------------------------
# Pendulum-v1

@numba.njit(cache=True, fastmath=FASTMATH)
def pendulum_reward(obs, act, next_obs, out):
    """Pendulum-v1: -(θ² + 0.1 θ̇² + 0.001 u²), θ, θ̇ of the state before the step.

    obs = (cos θ, sin θ, θ̇); atan2 gives θ already wrapped to [-π, π] as the env's
    angle_normalize does. u is clipped to [-2, 2] as in the env.
    """
    for i in range(obs.shape[0]):
        th = np.arctan2(obs[i, 1], obs[i, 0])
        thdot = obs[i, 2]
        u = _clip(act[i, 0], np.float32(-2.0), np.float32(2.0))
        out[i] = -(th * th + np.float32(0.1) * thdot * thdot + np.float32(0.001) * u * u)


@numba.njit(cache=True)
def pendulum_dynamics(obs, act, next_obs):
    """Pendulum-v1's step (g = 10, m = l = 1, dt = 0.05, |θ̇| ≤ 8, |u| ≤ 2) from (cos θ, sin θ, θ̇).

    In float64 like the env; the env keeps θ in float64 between steps while an observation
    holds cos θ and sin θ in float32, so a step agrees with the env to float32 rounding.
    Compiled without fastmath so that no contraction changes the env's arithmetic.
    """
    for i in range(obs.shape[0]):
        th = np.arctan2(np.float64(obs[i, 1]), np.float64(obs[i, 0]))
        thdot = np.float64(obs[i, 2])
        u = _clip(np.float64(act[i, 0]), -2.0, 2.0)
        thdot = _clip(thdot + (15.0 * np.sin(th) + 3.0 * u) * 0.05, -8.0, 8.0)
        th = th + thdot * 0.05
        next_obs[i, 0] = np.cos(th)
        next_obs[i, 1] = np.sin(th)
        next_obs[i, 2] = thdot


# ---------------------------------------------------------------------------------------------
# MountainCarContinuous-v0

@numba.njit(cache=True, fastmath=FASTMATH)
def _mountain_car_at_goal(next_obs, i):
    # the env compares its float32 state with the Python floats 0.45 and 0.0 in float32 (NEP 50)
    return next_obs[i, 0] >= np.float32(0.45) and next_obs[i, 1] >= _F0


@numba.njit(cache=True, fastmath=FASTMATH)
def mountain_car_reward(obs, act, next_obs, out):
    """MountainCarContinuous-v0: 100 on reaching the goal (position ≥ 0.45, velocity ≥ 0 after
    the step), minus 0.1 a², with the raw (unclipped) action as in the env."""
    for i in range(obs.shape[0]):
        a = act[i, 0]
        r = -np.float32(0.1) * a * a
        if _mountain_car_at_goal(next_obs, i):
            r += np.float32(100.0)
        out[i] = r


@numba.njit(cache=True, fastmath=FASTMATH)
def mountain_car_terminated(obs, act, next_obs, out):
    """MountainCarContinuous-v0 terminates at the goal."""
    for i in range(obs.shape[0]):
        out[i] = _mountain_car_at_goal(next_obs, i)


@numba.njit(cache=True)
def mountain_car_dynamics(obs, act, next_obs):
    """MountainCarContinuous-v0's step, to the last bit as a rule (a float32 ulp at most: builds
    of this function seen in a test suite's shared cache differed by one). The env's state is float32 and NumPy 2 keeps
    float32 where it meets a Python float (NEP 50, comparisons too), so the arithmetic is float32
    but for the cosine (math.cos, float64) and, when the action is clipped, the force term, which
    the env then computes from Python floats. No fastmath: a fused multiply-add rounds
    differently."""
    for i in range(obs.shape[0]):
        pos, vel, a = obs[i, 0], obs[i, 1], act[i, 0]
        gravity = 0.0025 * np.cos(np.float64(np.float32(3.0) * pos))
        if a > np.float32(1.0):
            dv = np.float32(0.0015 - gravity)
        elif a < np.float32(-1.0):
            dv = np.float32(-0.0015 - gravity)
        else:
            dv = a * np.float32(0.0015) - np.float32(gravity)
        vel = _clip(vel + dv, np.float32(-0.07), np.float32(0.07))
        pos = _clip(pos + vel, np.float32(-1.2), np.float32(0.6))
        if pos == np.float32(-1.2) and vel < _F0:
            vel = _F0
        next_obs[i, 0] = pos
        next_obs[i, 1] = vel


# ---------------------------------------------------------------------------------------------
# InvertedPendulum-v5

@numba.njit(cache=True, fastmath=FASTMATH)
def _inverted_pendulum_failed(next_obs, i):
    for j in range(next_obs.shape[1]):
        if not np.isfinite(next_obs[i, j]):
            return True
    return abs(next_obs[i, 1]) > np.float32(0.2)


@numba.njit(cache=True, fastmath=FASTMATH)
def inverted_pendulum_reward(obs, act, next_obs, out):
    """InvertedPendulum-v5: 1 while the pole angle next_obs[1] stays within ±0.2 and the
    observation is finite, 0 on the failing step (v5 gives no reward there)."""
    for i in range(obs.shape[0]):
        out[i] = _F0 if _inverted_pendulum_failed(next_obs, i) else _F1


@numba.njit(cache=True, fastmath=FASTMATH)
def inverted_pendulum_planning_reward(obs, act, next_obs, out):
    """The planner's objective for InvertedPendulum-v5: the reward minus the squared cart
    position next_obs[0]. Every plan that keeps the pole up earns the same flat reward, so
    nothing keeps the cart centred; it drifts to where the model has seen little data (and to
    the rail at |x| = 1, which the model barely learns) and the pole falls there. The rail
    keeps |x| <= 1, so surviving a step never scores below failing."""
    for i in range(obs.shape[0]):
        if _inverted_pendulum_failed(next_obs, i):
            out[i] = _F0
        else:
            out[i] = _F1 - next_obs[i, 0] * next_obs[i, 0]


@numba.njit(cache=True, fastmath=FASTMATH)
def inverted_pendulum_terminated(obs, act, next_obs, out):
    """InvertedPendulum-v5 terminates when |angle| > 0.2 or the observation is not finite."""
    for i in range(obs.shape[0]):
        out[i] = _inverted_pendulum_failed(next_obs, i)


# ---------------------------------------------------------------------------------------------
# Reacher-v5

@numba.njit(cache=True, fastmath=FASTMATH)
def reacher_reward(obs, act, next_obs, out):
    """Reacher-v5: -‖fingertip − target‖ − ‖a‖² after the step.

    next_obs[8:10] is the planar fingertip − target vector; both bodies sit at z = 0.01, so the
    env's 3-D norm equals the planar one. The env reads the same body positions for the
    observation and for the reward, so this is exact.
    """
    for i in range(obs.shape[0]):
        dx = next_obs[i, 8]
        dy = next_obs[i, 9]
        out[i] = -np.sqrt(dx * dx + dy * dy) - _sum_sq(act, i)


# ---------------------------------------------------------------------------------------------
# HalfCheetah-v5 (created with exclude_current_positions_from_observation=False: obs[0] = x)

_HALF_CHEETAH_DT = np.float32(0.05)  # timestep 0.01 × frame_skip 5


@numba.njit(cache=True, fastmath=FASTMATH)
def half_cheetah_reward(obs, act, next_obs, out):
    """HalfCheetah-v5: (x' − x) / dt − 0.1 ‖a‖², dt = 0.05.

    Needs the environment made with exclude_current_positions_from_observation=False, which puts
    the root x position at obs[0] (18-D observation instead of 17).
    """
    for i in range(obs.shape[0]):
        vel = (next_obs[i, 0] - obs[i, 0]) / _HALF_CHEETAH_DT
        out[i] = vel - np.float32(0.1) * _sum_sq(act, i)


# ---------------------------------------------------------------------------------------------
# Hopper-v5 (created with exclude_current_positions_from_observation=False:
# obs = qpos (x, z, angle, 3 joints) then qvel (6) clipped to ±10)

_HOPPER_DT = np.float32(0.008)  # timestep 0.002 × frame_skip 4


@numba.njit(cache=True, fastmath=FASTMATH)
def _hopper_healthy(next_obs, i):
    # written as "inside the open interval" so that NaN counts as unhealthy, as in the env
    lim = np.float32(100.0)
    for j in range(2, next_obs.shape[1]):
        if not (-lim < next_obs[i, j] < lim):
            return False
    z = next_obs[i, 1]
    angle = next_obs[i, 2]
    return (np.float32(0.7) < z < _INF) and (np.float32(-0.2) < angle < np.float32(0.2))


@numba.njit(cache=True, fastmath=FASTMATH)
def hopper_reward(obs, act, next_obs, out):
    """Hopper-v5: (x' − x) / dt + 1·healthy − 0.001 ‖a‖², dt = 0.008, health after the step.

    Needs exclude_current_positions_from_observation=False (obs[0] = x, 12-D observation).
    Healthy: 0.7 < z, |angle| < 0.2, and every qpos[2:] and qvel entry within ±100. The
    observation clips qvel to ±10, so a joint speed beyond ±100 (unhealthy for the env) cannot be
    seen; this check then reports healthy. Everything else is exact.
    """
    for i in range(obs.shape[0]):
        vel = (next_obs[i, 0] - obs[i, 0]) / _HOPPER_DT
        healthy = _F1 if _hopper_healthy(next_obs, i) else _F0
        out[i] = vel + healthy - np.float32(0.001) * _sum_sq(act, i)


# The planner's objective for Hopper-v5 (see hopper_planning_reward). Over a horizon of 30-40
# steps (0.24-0.32 s) a plan that hops fast and falls near its end out-earns one that stays up,
# and a slow sink into a crouch (measured: z from 1.25 to 0.87 over 150 steps, thigh joint to
# -1.1 rad) or a forward lean (the torso at 0.15 rad for 100 steps) is invisible to it until the
# fall can no longer be avoided; in the episode, staying up for its 1000 steps is worth 1000.
HOPPER_FALL_PENALTY = np.float32(200.0)  # more than 40 healthy steps earn at 3 m/s
HOPPER_SPEED_CAP = np.float32(0.3)  # m/s of forward speed credited
HOPPER_MIN_HEIGHT = np.float32(1.2)  # z below it costs HOPPER_HEIGHT_WEIGHT * shortfall^2
HOPPER_HEIGHT_WEIGHT = np.float32(20.0)
HOPPER_JOINT_SLACK = np.float32(0.1)  # rad; joints further from 0 cost the weight * excess^2
HOPPER_JOINT_WEIGHT = np.float32(10.0)
HOPPER_ANGLE_WEIGHT = np.float32(20.0)  # times the torso angle^2 (the episode ends beyond ±0.2)


@numba.njit(cache=True, fastmath=FASTMATH)
def hopper_planning_reward(obs, act, next_obs, out):
    """The planner's objective for Hopper-v5: on a healthy step, forward speed up to
    HOPPER_SPEED_CAP, + 1 − 0.001 ‖a‖², less quadratic costs on a torso below
    HOPPER_MIN_HEIGHT, on the torso's angle (next_obs[2]) and on the thigh, leg and foot joints
    (next_obs[3:6]) beyond ±HOPPER_JOINT_SLACK; on the step that ends the episode,
    −HOPPER_FALL_PENALTY."""
    for i in range(obs.shape[0]):
        if not _hopper_healthy(next_obs, i):
            out[i] = -HOPPER_FALL_PENALTY
            continue
        vel = min((next_obs[i, 0] - obs[i, 0]) / _HOPPER_DT, HOPPER_SPEED_CAP)
        low = max(HOPPER_MIN_HEIGHT - next_obs[i, 1], _F0)
        bent = _F0
        for j in range(3, 6):
            e = max(abs(next_obs[i, j]) - HOPPER_JOINT_SLACK, _F0)
            bent += e * e
        angle = next_obs[i, 2]
        out[i] = (vel + _F1 - np.float32(0.001) * _sum_sq(act, i)
                  - HOPPER_HEIGHT_WEIGHT * low * low - HOPPER_ANGLE_WEIGHT * angle * angle
                  - HOPPER_JOINT_WEIGHT * bent)


@numba.njit(cache=True, fastmath=FASTMATH)
def hopper_terminated(obs, act, next_obs, out):
    """Hopper-v5 terminates when unhealthy (see hopper_reward for the one unobservable case)."""
    for i in range(obs.shape[0]):
        out[i] = not _hopper_healthy(next_obs, i)


# ---------------------------------------------------------------------------------------------
# Swimmer-v5 (created with exclude_current_positions_from_observation=False: obs[0:2] = x, y)

_SWIMMER_DT = np.float32(0.04)  # timestep 0.01 × frame_skip 4


@numba.njit(cache=True, fastmath=FASTMATH)
def swimmer_reward(obs, act, next_obs, out):
    """Swimmer-v5: (x' − x) / dt − 1e-4 ‖a‖², dt = 0.04.

    Needs exclude_current_positions_from_observation=False (obs[0:2] = x, y; 10-D observation).
    """
    for i in range(obs.shape[0]):
        vel = (next_obs[i, 0] - obs[i, 0]) / _SWIMMER_DT
        out[i] = vel - np.float32(1e-4) * _sum_sq(act, i)


# ---------------------------------------------------------------------------------------------
# InvertedDoublePendulum-v5
# obs = (cart x, sin θ1, sin θ2, cos θ1, cos θ2, qvel (3) clipped to ±10, constraint force)

_POLE = np.float32(0.6)  # both links are 0.6 long; the tip site is at the end of the second


@numba.njit(cache=True, fastmath=FASTMATH)
def _double_pendulum_tip(next_obs, i):
    s1 = next_obs[i, 1]
    s2 = next_obs[i, 2]
    c1 = next_obs[i, 3]
    c2 = next_obs[i, 4]
    # θ2 is relative to the first link: sin/cos of θ1 + θ2 by the addition formulas
    x = next_obs[i, 0] + _POLE * (s1 + s1 * c2 + c1 * s2)
    y = _POLE * (c1 + c1 * c2 - s1 * s2)
    return x, y


@numba.njit(cache=True, fastmath=FASTMATH)
def inverted_double_pendulum_reward(obs, act, next_obs, out):
    """InvertedDoublePendulum-v5: 10·alive − 0.01 x_tip² − (y_tip − 2)² − 1e-3 ω1² − 5e-3 ω2².

    The tip is rebuilt from the cart position and the link angles after the step; alive means
    y_tip > 1. Not exact, by design of the env: it reads the tip from MuJoCo's site positions,
    which its RK4 step leaves at the last intermediate stage rather than at the final state
    (a difference of order timestep² × change of acceleration). Measured on 10,000 random steps:
    |Δreward| median 7e-6, 99.9th percentile 1.6e-4, largest 2e-3 when the cart hits its joint
    limit; no termination flag differed, but it can flip when y_tip is that close to 1. The
    angular speeds ω1, ω2 come from the observation, which clips them to ±10; the env does not.
    """
    for i in range(obs.shape[0]):
        x, y = _double_pendulum_tip(next_obs, i)
        w1 = next_obs[i, 6]
        w2 = next_obs[i, 7]
        alive = np.float32(10.0) if y > _F1 else _F0
        dy = y - np.float32(2.0)
        out[i] = (alive - (np.float32(0.01) * x * x + dy * dy)
                  - (np.float32(1e-3) * w1 * w1 + np.float32(5e-3) * w2 * w2))


@numba.njit(cache=True, fastmath=FASTMATH)
def inverted_double_pendulum_terminated(obs, act, next_obs, out):
    """InvertedDoublePendulum-v5 terminates when the tip height y_tip ≤ 1 (see the reward)."""
    for i in range(obs.shape[0]):
        _, y = _double_pendulum_tip(next_obs, i)
        out[i] = not (y > _F1)


# ---------------------------------------------------------------------------------------------
# Pusher-v5: obs[14:17] fingertip ("tips_arm"), obs[17:20] object, obs[20:23] goal

@numba.njit(cache=True, fastmath=FASTMATH)
def pusher_reward(obs, act, next_obs, out):
    """Pusher-v5: −‖object − goal‖ − 0.5 ‖object − fingertip‖ − 0.1 ‖a‖², after the step.

    The env reads the same body positions for the observation and for the reward: exact.
    """
    for i in range(obs.shape[0]):
        near = _dist3(next_obs, i, 17, 14)
        dist = _dist3(next_obs, i, 17, 20)
        out[i] = -dist - np.float32(0.5) * near - np.float32(0.1) * _sum_sq(act, i)


# ---------------------------------------------------------------------------------------------
# the registry's built-in entries; the settings that suit each are in fastmbrl.algorithms.presets

def _builtin(name, obs_dim, act_dim, bound, reward, terminated=None, planning_reward=None,
             env_kwargs=None, ignore_obs_dims=(), angle_obs_dims=(), dynamics=None):
    # registered without the compile-on-register check: importing stays cheap
    _REGISTRY[name] = Task(
        name=name, env_id=name, obs_dim=obs_dim, act_dim=act_dim,
        action_low=np.full(act_dim, -bound, np.float32),
        action_high=np.full(act_dim, bound, np.float32),
        reward=reward, terminated=terminated, planning_reward=planning_reward,
        env_kwargs=env_kwargs or {}, ignore_obs_dims=ignore_obs_dims,
        angle_obs_dims=angle_obs_dims, dynamics=dynamics)


_X_VISIBLE = {"exclude_current_positions_from_observation": False}

_builtin("Pendulum-v1", 3, 1, 2.0, pendulum_reward, dynamics=pendulum_dynamics)
_builtin("MountainCarContinuous-v0", 2, 1, 1.0, mountain_car_reward, mountain_car_terminated,
         dynamics=mountain_car_dynamics)
_builtin("InvertedPendulum-v5", 4, 1, 3.0, inverted_pendulum_reward, inverted_pendulum_terminated,
         planning_reward=inverted_pendulum_planning_reward)
_builtin("Reacher-v5", 10, 2, 1.0, reacher_reward)
# HalfCheetah's body angle (obs[2]) turns freely: a turned-over body is near the states seen
# before only when the model sees it as (sin, cos)
_builtin("HalfCheetah-v5", 18, 6, 1.0, half_cheetah_reward, env_kwargs=_X_VISIBLE,
         ignore_obs_dims=(0,), angle_obs_dims=(2,))
_builtin("Hopper-v5", 12, 3, 1.0, hopper_reward, hopper_terminated,
         planning_reward=hopper_planning_reward, env_kwargs=_X_VISIBLE,
         ignore_obs_dims=(0,))
_builtin("Swimmer-v5", 10, 2, 1.0, swimmer_reward, env_kwargs=_X_VISIBLE,
         ignore_obs_dims=(0, 1))
_builtin("InvertedDoublePendulum-v5", 9, 1, 1.0, inverted_double_pendulum_reward,
         inverted_double_pendulum_terminated)
_builtin("Pusher-v5", 23, 7, 2.0, pusher_reward)
