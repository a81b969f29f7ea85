"""Planners on a problem with a known optimum: a double integrator (linear dynamics, written as
an exactly-linear ReLU network) with a quadratic cost, solved in closed form."""
import warnings

import numba
import numpy as np
import pytest

from fastmbrl.kernels import num_threads
from fastmbrl.kernels.rollout import pack_model
from fastmbrl.planning.planners import (CEM, ICEM, MPPI, PLANNERS, BeamSearch, RandomShooting,
                                        colored_noise_matrix, num_samples_for)
from fastmbrl.planning.scorer import Scorer
from tests.reference import (dynamics_model, lq_optimum, particle_rollout_reference,
                             quadratic_reward, rollout_reference)

THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]

DT, H, X0, BOUND = 0.5, 8, np.array([0.5, 0.0], np.float32), 1.0


def linear_model():
    """delta = z @ M with z = (pos, vel, u): pos += DT vel, vel += DT u; relu(z) - relu(-z) = z."""
    m = np.array([[0.0, 0.0], [DT, 0.0], [0.0, DT]])
    return dict(weights=[np.hstack([np.eye(3), -np.eye(3)]), np.vstack([m, -m])],
                biases=[np.zeros(6), np.zeros(2)], input_mean=np.zeros(3),
                input_scale=np.ones(3), delta_mean=np.zeros(2), delta_std=np.ones(2))


def optimum(x0=X0):
    """Unconstrained minimiser of sum_t |x_{t+1}|^2 + 0.1 u_t^2 (least squares over U)."""
    return lq_optimum(x0, H, 0.1, DT)[0]


def score(plan):
    return rollout_reference(activation="relu", obs=X0, actions=plan[None].astype(np.float64),
                             reward=quadratic_reward, **linear_model())[0]


@pytest.fixture(scope="module")
def packed():
    return pack_model(activation="relu", **linear_model())


BUDGET = 2000
MAKERS = {
    "rs": lambda p, **kw: RandomShooting(p, quadratic_reward, num_samples=BUDGET, **kw),
    "cem": lambda p, **kw: CEM(p, quadratic_reward, num_samples=250, elites=25, iterations=8,
                               **kw),
    "mppi": lambda p, **kw: MPPI(p, quadratic_reward, num_samples=250, iterations=8,
                                 temperature=0.02, noise_std=0.2, **kw),
    "icem": lambda p, **kw: ICEM(p, quadratic_reward, num_samples=400, elites=25, iterations=8,
                                 noise_beta=1.0, **kw),
    # 3 trees of 40 children per depth, each child with the rest of the horizon: 1800 rows;
    # a cold plan far from the nominal (zeros) needs a wider noise than the default, which
    # suits warm-started closed loop
    "beam": lambda p, **kw: BeamSearch(p, quadratic_reward, num_samples=40, beams=4,
                                       iterations=3, noise_std=0.5, **kw),
}


def make(name, packed, low=-BOUND, high=BOUND, **kw):
    kw.setdefault("seed", 0)
    return MAKERS[name](packed, horizon=H, action_low=[low], action_high=[high], **kw)


def test_optimum_is_inside_the_bounds():
    assert np.abs(optimum()).max() < 0.9 * BOUND


@pytest.mark.parametrize("name", ["cem", "mppi", "icem", "beam"])
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
def test_statistics_count_the_candidates_of_the_last_call(packed, name):
    planner = make(name, packed)
    planner.plan(X0)
    # what each planner scores per call: K per iteration; iCEM's shrinking population, the
    # elites it keeps (none in its first iteration of a first call) and, last, the mean
    sizes = {"rs": [BUDGET], "cem": [250] * 8, "mppi": [250] * 8,
             "icem": [max(int(400 / 1.25 ** i), 50) if i else 400 for i in range(8)],
             # per tree, the children of each depth, then their tails (none after the last)
             "beam": 3 * ([40] * H + [40] * (H - 1))}[name]
    kept = {"icem": 8}.get(name, 0)  # ceil(0.3 x 25 elites)
    first = sum(sizes) + kept * (len(sizes) - 1) + (name == "icem")
    assert planner.last_num_evaluated == first and planner.last_num_diverged == 0
    plan = planner.plan(X0)
    assert planner.last_num_evaluated == first + kept  # counts only the last call
    if name in ("rs", "beam"):  # the plan is the best candidate (the best final branch)
        assert planner.last_best_return == pytest.approx(score(plan), rel=1e-5)
    planner.reset()
    assert (planner.last_best_return, planner.last_num_evaluated) == (-np.inf, 0)


@pytest.mark.parametrize("name", list(MAKERS))
def test_plans_stay_in_and_use_asymmetric_bounds(packed, name):
    """Far from the origin the unconstrained optimum leaves the box [-0.3, 0.7]: plans must
    stay inside it and push against the bound that binds."""
    low, high = -0.3, 0.7
    for x0, binding in ((np.array([15.0, 0.0], np.float32), low),
                        (np.array([-15.0, 0.0], np.float32), high)):
        assert not (low <= optimum(x0)[0] <= high)
        plan = make(name, packed, low=low, high=high, warm_start=False).plan(x0)
        assert (plan >= low).all() and (plan <= high).all(), plan
        assert abs(plan[0, 0] - binding) <= 0.1 * (high - low), plan


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
    planner = make(name, pack_model(activation="relu", **model), low=-0.3, high=0.7)
    with pytest.warns(RuntimeWarning, match="diverged"):
        action = planner.act(X0)
    middle = (np.float32(-0.3) + np.float32(0.7)) / np.float32(2)
    assert action[0] == middle  # the sampling mean: the middle of the box
    assert planner.last_num_diverged == planner.last_num_evaluated > 0
    assert planner.last_best_return == -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        planner.act(X0)


@pytest.mark.parametrize("name", list(MAKERS))
def test_follows_model_version(name):
    # a refit model (the MBRL loop keeps its planner) is planned with from the next call on,
    # by every batch a planner scores (the beam's branches included)
    model = dynamics_model(linear_model())
    planner = make(name, model, warm_start=False)
    first = planner.plan(X0).copy()
    assert planner.packed is model.packed()
    state = model.state_dict()
    state["W1"][[2, 5]] *= -1  # reversed controls: vel -= DT u
    model.load_state(state)
    planner.reset(seed=0)
    second = planner.plan(X0)
    assert planner.packed is model.packed() and planner.packed.version == model.version
    assert first[0, 0] * second[0, 0] < 0


class _Resized:
    """A model to a planner is anything with packed(isa) and version: this one grows its
    hidden layer (zero units) when its version changes."""

    def __init__(self):
        self.version = 0

    def packed(self, isa=None):
        model = linear_model()
        extra = 30 * self.version
        model["weights"] = [np.hstack([model["weights"][0], np.zeros((3, extra))]),
                            np.vstack([model["weights"][1], np.zeros((extra, 2))])]
        model["biases"][0] = np.zeros(6 + extra)
        return pack_model(activation="relu", version=self.version, isa=isa, **model)


def test_a_model_that_changed_shape_is_refused():
    model = _Resized()
    planner = make("rs", model)
    planner.plan(X0)
    model.version += 1
    with pytest.raises(ValueError, match="model: its shape changed"):
        planner.plan(X0)


@pytest.mark.parametrize("warm_start", [True, False])
def test_warm_start_seeds_the_next_call_with_the_shifted_solution(packed, warm_start):
    # with one candidate, a warm-started call scores only the previous solution shifted by one
    # step, its tail the middle of the box (1 for [-1, 3])
    planner = RandomShooting(packed, quadratic_reward, horizon=H, action_low=[-1],
                             action_high=[3], num_samples=1, warm_start=warm_start)
    first = planner.plan(X0).copy()
    shifted = np.vstack([first[1:], [[1.0]]])
    assert np.array_equal(planner.plan(X0), shifted) == warm_start
    planner.reset()  # forgets it
    assert not np.array_equal(planner.plan(X0), np.vstack([shifted[1:], [[1.0]]]))


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
    with pytest.raises(ValueError, match=r"elites \(20\) must not exceed num_samples \(10\)"):
        CEM(packed, quadratic_reward, num_samples=10, elites=20, **kw)
    with pytest.raises(ValueError, match="sampling"):
        CEM(packed, quadratic_reward, sampling="uniform", **kw)
    with pytest.raises(ValueError, match="temperature"):
        MPPI(packed, quadratic_reward, temperature=0, **kw)
    with pytest.raises(ValueError, match="keep_fraction"):
        ICEM(packed, quadratic_reward, keep_fraction=1.5, **kw)
    with pytest.raises(TypeError, match="numba"):
        RandomShooting(packed, lambda *a: None, **kw)
    with pytest.raises(TypeError, match="model: expected a DynamicsModel or a PackedModel"):
        RandomShooting(object(), quadratic_reward, **kw)
    with pytest.raises(ValueError, match="isa: the packed model is laid out for"):
        RandomShooting(pack_model(activation="relu", isa="generic", **linear_model()),
                       quadratic_reward, isa="avx2", **kw)
    planner = RandomShooting(packed, quadratic_reward, num_samples=8, **kw)
    with pytest.raises(ValueError, match="obs"):
        planner.plan(np.zeros(3))
    with pytest.raises(ValueError, match=r"beams \(20\) must not exceed num_samples \(10\)"):
        BeamSearch(packed, quadratic_reward, num_samples=10, beams=20, **kw)
    for tail in (-1, 1.5, True):
        with pytest.raises(ValueError, match="tail must be a non-negative integer"):
            BeamSearch(packed, quadratic_reward, tail=tail, **kw)
    with pytest.raises(ValueError, match="tail_policy must be one of mean, random"):
        BeamSearch(packed, quadratic_reward, tail_policy="greedy", **kw)
    with pytest.raises(ValueError, match="candidates_per_call: pass horizon="):
        BeamSearch.candidates_per_call(100)


class _SampledBeamTwin:
    """BeamSearch under trajectory sampling, plan after plan, written per particle with the
    reference rollout: the children's (and a random tail's) draws replayed from the planner's
    generator and the particles' noise (and ts1 members) from the scorer's, in the order the
    planner asks; warm-started from the previous plan, shifted."""

    def __init__(self, planner, model, reward, terminated=None):
        self.p, self.model, self.reward, self.terminated = planner, model, reward, terminated
        self.prng = np.random.default_rng(planner.seed)
        self.srng = np.random.default_rng([planner.seed, 7])
        low, high = planner.action_low, planner.action_high
        self.nominal = np.broadcast_to((low + high) / 2, planner.noise.shape).astype(np.float32)

    def _rollout(self, actions, states, alive, earned):
        packed = self.p.packed
        p, o = packed.particles, packed.obs_dim
        n, t = actions.shape[0], actions.shape[1]
        noise = self.srng.standard_normal((n * p, t, o), dtype=np.float32)
        sources = None
        if packed.propagation == "ts1":
            sources = np.zeros((n * p, t), np.int64)
            ops.ts1_sources(self.srng.random((n, t, p), dtype=np.float32),
                            p // packed.num_members, sources, np.zeros(p, np.int64))
        ret, ends, still = particle_rollout_reference(
            **self.model, obs=None, actions=actions, reward=self.reward, particles=p,
            noise=noise, sources=sources, terminated=self.terminated, states=states,
            alive=alive, returns=earned, ends=True)
        with np.errstate(invalid="ignore"):
            score = ret.mean(axis=1) - packed.risk * ret.std(axis=1)
        score[~np.isfinite(ret).all(axis=1)] = -np.inf
        return score.astype(np.float32), ret, ends, still

    def plan(self, obs):
        """(plan (H, A), its model score)."""
        pl, u = self.p, self.nominal
        h, a = u.shape
        k, w = pl.num_samples, pl.beams
        low, high = pl.action_low, pl.action_high
        p = pl.packed.particles
        states = np.broadcast_to(np.asarray(obs, np.float64), (1, p, obs.shape[0]))
        alive, earned = np.ones((1, p), bool), np.zeros((1, p))
        prefix, best_score = np.zeros((1, 0, a), np.float32), None
        for d in range(h):
            parent = np.arange(k) * states.shape[0] // k
            z = self.prng.standard_normal((k, 1, a), dtype=np.float32)
            act = np.clip(u[d] + pl.noise[d] * z, low, high).astype(np.float32)
            act[np.r_[True, parent[1:] != parent[:-1]], 0] = u[d]
            score, ret, ends, still = self._rollout(act, states[parent], alive[parent],
                                                    earned[parent])
            value = score
            t = min(pl.tail, h - 1 - d)
            if t:
                if pl.tail_policy == "mean":
                    tail = np.ascontiguousarray(np.broadcast_to(u[d + 1:d + 1 + t], (k, t, a)))
                else:
                    draw = self.prng.random((k, t, a), dtype=np.float32)
                    tail = np.clip(low + (high - low) * draw, low, high).astype(np.float32)
                value = self._rollout(tail, ends, still, ret)[0]
            best = np.argsort(-value, kind="stable")[:w]
            prefix = np.concatenate([prefix[parent[best]], act[best]], axis=1)
            states, alive, earned = ends[best], still[best], ret[best]
            best_score = score[best[0]]
        self.nominal = np.concatenate([prefix[0, 1:], (low + high)[None] / 2]).astype(np.float32)
        return prefix[0], best_score


@pytest.mark.parametrize("propagation, risk, tail_policy", [
    ("tsinf", 0.0, "mean"), ("ts1", 0.5, "mean"), ("tsinf", 0.3, "random")])
def test_a_beam_search_on_particles_plans_as_its_twin(propagation, risk, tail_policy):
    from tests.reference import leaves_box
    rng = np.random.default_rng(4)
    o, a, b, p = 3, 2, 2, 4
    weights = [[rng.normal(0, .4, (o + a, 16)), rng.normal(0, .4, (16, 2 * o))]
               for _ in range(b)]
    biases = [[rng.normal(0, .1, 16), rng.normal(0, .1, 2 * o)] for _ in range(b)]
    model = dict(weights=weights, biases=biases, activation="silu",
                 input_mean=rng.normal(0, .1, o + a), input_scale=rng.uniform(.5, 2, o + a),
                 delta_mean=rng.normal(0, .05, o), delta_std=rng.uniform(.1, .3, o),
                 logvar_bounds=np.stack([np.stack([rng.uniform(0, .5, o),
                                                   rng.uniform(-3, -2, o)])
                                         for _ in range(b)]))
    packed = pack_model(**model, particles=p, propagation=propagation, risk=risk)
    obs = np.array([0.8, -0.3, 0.2], np.float32)  # near the box's edge: some particles leave
    kw = dict(horizon=5, action_low=[-1, -0.5], action_high=[1, 1], num_samples=12, beams=3,
              tail=2, tail_policy=tail_policy, noise_std=0.4, seed=6)
    plans = []
    for n in THREADS:
        with num_threads(n):
            plans.append(BeamSearch(packed, quadratic_reward, leaves_box, **kw).plan(obs).copy())
    np.testing.assert_array_equal(plans[0], plans[-1])
    planner = BeamSearch(packed, quadratic_reward, leaves_box, **kw)
    twin = _SampledBeamTwin(planner, model, quadratic_reward, leaves_box)
    for _ in range(2):  # a cold plan, then one warm-started from it
        want, want_score = twin.plan(obs)
        np.testing.assert_allclose(planner.plan(obs), want, atol=1e-6)
        assert planner.last_best_return == pytest.approx(want_score, rel=1e-4, abs=1e-4)


def test_a_beam_search_refuses_what_its_branches_cannot_hold():
    from fastmbrl import DynamicsModel
    model = DynamicsModel(2, 1, (8,), "silu", ensemble_size=2, probabilistic=True,
                          particles=4, propagation="ts1")
    planner = BeamSearch(model, quadratic_reward, horizon=H, action_low=[-1], action_high=[1],
                         num_samples=20)
    scorer = planner.scorer
    acts = np.zeros((4, 1, 1), np.float32)
    states, live = np.zeros((2, 4, 2, 2), np.float32), np.ones((2, 4, 2), bool)
    with pytest.raises(ValueError, match="earned: expected"):
        scorer.branch(acts, states, live)
    with pytest.raises(ValueError, match=f"1 <= t <= {H}"):
        scorer.branch(np.zeros((4, H + 1, 1), np.float32), states, live,
                      np.zeros((2, 4, 2), np.float32))
    model.set_sampling(propagation="expectation")  # each member keeps its own state
    planner = BeamSearch(model, quadratic_reward, horizon=H, action_low=[-1], action_high=[1],
                         num_samples=20)
    with pytest.raises(ValueError, match="earned: only for a model sampled"):
        planner.scorer.branch(acts, np.zeros((2, 4, 2), np.float32), np.ones((2, 4), bool),
                              np.zeros((2, 4, 1), np.float32))
    assert np.isfinite(planner.plan(X0)).all()


def test_num_samples_is_the_budget_of_every_planner(packed):
    kw = dict(horizon=H, action_low=[-1], action_high=[1])
    for name, cls in PLANNERS.items():
        assert cls(packed, quadratic_reward, num_samples=24, **kw).num_samples == 24, name
    assert CEM(packed, quadratic_reward, **kw).num_samples == 500
    assert ICEM(packed, quadratic_reward, **kw).num_samples == 40


OPTIONS = [("rs", {}), ("cem", {}), ("cem", {"iterations": 3, "elites": 0.2}),
           ("mppi", {"iterations": 2}), ("icem", {}), ("icem", {"warm_start": False}),
           ("icem", {"elites": 6, "iterations": 4, "decay": 1.5, "keep_fraction": 0.5}),
           ("beam", {"tail": 0}), ("beam", {"beams": 7}), ("beam", {"tail": 3, "beams": 20})]


def _model_steps(planner):
    """Model steps of the last plan per ensemble member, from what it scored: a beam search
    scores each child for one step and then, after every depth but the last, for its tail."""
    if not isinstance(planner, BeamSearch):
        return planner.last_num_evaluated * H
    tails = [min(planner.tail, H - 1 - d) for d in range(H)]
    depths_with_a_tail = sum(t > 0 for t in tails)
    assert planner.last_num_evaluated == planner.num_samples * (H + depths_with_a_tail)
    return planner.num_samples * (H + sum(tails))


@pytest.mark.parametrize("name, options", OPTIONS)
def test_candidates_per_call_is_what_a_plan_scores(packed, name, options):
    cls = PLANNERS[name]
    planner = cls(packed, quadratic_reward, horizon=H, action_low=[-1], action_high=[1],
                  num_samples=60, **options)
    for _ in range(3):  # the first call of an episode may score fewer (no kept elites yet)
        planner.plan(X0)
    options = {**options, "horizon": H}  # the beam's cost depends on it, the others ignore it
    # a plan costs candidates_per_call x horizon model steps (rounded up to whole candidates)
    assert -(-_model_steps(planner) // H) == cls.candidates_per_call(60, **options)
    # a budget in candidates gives the largest sample count that keeps within it
    budget = cls.candidates_per_call(60, **options)
    assert num_samples_for(name, budget, **options) == 60
    assert num_samples_for(name, budget - 1, **options) < 60
    assert cls.candidates_per_call(num_samples_for(name, budget - 1, **options),
                                   **options) <= budget - 1


def test_a_budget_below_the_least_sample_count_gives_the_least():
    assert num_samples_for("icem", 5) == 10  # iCEM's 10 elites need 10 samples
    assert num_samples_for("rs", 0) == 1
    assert num_samples_for("beam", 3, horizon=H, beams=10) == 10  # a child for each beam


@pytest.mark.parametrize("cls", [CEM, ICEM])
def test_population_is_a_deprecated_alias_of_num_samples(packed, cls):
    kw = dict(horizon=H, action_low=[-1], action_high=[1], elites=4, iterations=2)
    new = cls(packed, quadratic_reward, num_samples=24, **kw)
    with pytest.warns(DeprecationWarning, match="population.*num_samples"):
        old = cls(packed, quadratic_reward, population=24, **kw)
    assert old.num_samples == 24
    np.testing.assert_array_equal(old.plan(X0), new.plan(X0))
    for explicit in (24, cls.DEFAULT_NUM_SAMPLES):  # even the default
        with pytest.raises(ValueError, match="not both"):
            cls(packed, quadratic_reward, num_samples=explicit, population=24, **kw)
    with pytest.raises(ValueError, match="population must be a positive integer"):
        with pytest.warns(DeprecationWarning):
            cls(packed, quadratic_reward, population=0, **kw)


# --- no allocation per call after warm-up (the embedded path) ----------------------------------
from fastmbrl.cli.bench.controller import allocations
from fastmbrl.kernels import planner_ops as ops


def test_allocation_probe_sees_numpy_temporaries():
    x = np.zeros(7)
    assert allocations(lambda: np.isfinite(x).all(), calls=3)["numpy_bytes_per_call"] >= 7


@pytest.mark.parametrize("name", list(MAKERS))
def test_steady_state_allocates_no_numpy_array(packed, name):
    planner = make(name, packed)
    obs64, buf = X0.astype(np.float64), np.empty((H, 1), np.float32)
    # the only transient memory of a call: numba unboxing the rollout kernel's array arguments
    # (48 bytes each) when the scorer calls it, plus a few Python scalars
    batch = planner.scorer.batch(planner.num_samples)
    kernel = allocations(lambda: planner.scorer.score(batch))
    for call in (lambda: planner.plan(X0), lambda: planner.act(obs64),
                 lambda: planner.plan(obs64, out=buf)):
        got = allocations(call, calls=5, numpy_calls=1)
        assert got["numpy_bytes_per_call"] == 0, got
        assert got["bytes_per_call"] <= kernel["bytes_per_call"] + 160, (got, kernel)


@pytest.mark.parametrize("propagation", ["tsinf", "ts1"])
def test_a_beam_search_on_particles_allocates_no_numpy_array(propagation):
    from fastmbrl import DynamicsModel
    model = DynamicsModel(2, 1, (8,), "silu", ensemble_size=2, probabilistic=True,
                          particles=4, propagation=propagation)
    planner = BeamSearch(model, quadratic_reward, horizon=H, action_low=[-1], action_high=[1],
                         num_samples=20, tail_policy="random")
    got = allocations(lambda: planner.plan(X0), calls=5, numpy_calls=1)
    assert got["numpy_bytes_per_call"] == 0, got


@pytest.mark.parametrize("name", list(MAKERS))
def test_returned_buffer_and_out(packed, name):
    a, b = make(name, packed, seed=5), make(name, packed, seed=5)
    plan = a.plan(X0)
    assert not plan.flags.writeable and a.plan(X0) is plan
    out = np.full((H, 1), np.nan, np.float32)
    assert b.plan(X0) is not out and b.plan(X0, out=out) is out
    np.testing.assert_array_equal(out, plan)
    first = np.empty(1, np.float32)
    assert b.act(X0, out=first) is first and np.isfinite(first).all()
    assert a.act(X0) is a.act(X0)
    for bad in (np.empty((H, 2), np.float32), np.empty((H, 1)), [0.0] * H):
        with pytest.raises(ValueError, match=r"out: expected .*\(8, 1\)"):
            a.plan(X0, out=bad)


def test_obs_checks(packed):
    planner = make("rs", packed)
    with pytest.raises(ValueError, match=r"obs: expected shape \(2,?\), got \(3,\)"):
        planner.act(np.zeros(3))
    with pytest.raises(ValueError, match=r"obs: expected shape \(2,?\), got \(1, 2\)"):
        planner.act(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="obs: contains NaN"):
        planner.act(np.array([0.0, np.inf]))
    planner.reset(seed=1)
    from_list = planner.act([0.5, 0.0]).copy()
    planner.reset(seed=1)
    np.testing.assert_array_equal(from_list, planner.act(X0.astype(np.float64)))


def test_planner_ops_match_numpy():
    rng = np.random.default_rng(0)
    returns = rng.integers(-5, 5, 300).astype(np.float32)  # many ties
    returns[rng.choice(300, 40, replace=False)] = -np.inf
    idx = np.empty(25, np.intp)
    ops.top_k(returns, 25, idx)
    np.testing.assert_array_equal(idx, np.argsort(-returns, kind="stable")[:25])
    assert ops.score_stats(returns) == (int(np.argmax(returns)), 40)

    cand = rng.standard_normal((300, 6, 2)).astype(np.float32)
    mean, std = rng.standard_normal((6, 2)).astype(np.float32), np.full((6, 2), 0.7, np.float32)
    elites = cand[idx].astype(np.float64)
    for blend in (True, False):
        m, s = mean.copy(), std.copy()
        ops.elite_update(cand, idx, 25, m, s, 0.1, blend)
        np.testing.assert_allclose(m, 0.1 * mean + 0.9 * elites.mean(0), rtol=1e-5, atol=1e-6)
        want = (np.sqrt(0.1 * std ** 2 + 0.9 * elites.var(0)) if blend
                else 0.1 * std + 0.9 * elites.std(0))
        np.testing.assert_allclose(s, want, rtol=1e-5)

    weights = np.empty(300, np.float32)
    m = mean.copy()
    assert ops.mppi_update(cand, returns, 0.5, weights, m)
    w = np.exp((returns.astype(np.float64) - returns.max()) / 0.5)
    np.testing.assert_allclose(m, np.tensordot(w / w.sum(), cand, 1), rtol=1e-4, atol=1e-6)
    assert not ops.mppi_update(cand, np.full(300, -np.inf, np.float32), 0.5, weights, m)

    low, high = np.array([-1, -0.5], np.float32), np.array([1, 0.5], np.float32)
    z = rng.standard_normal((4, 6, 2)).astype(np.float32)
    got = z.copy()
    ops.affine_clip(got, mean, std, low, high, 0.3)
    want = mean + std * z
    for t in range(1, 6):
        want[:, t] = 0.3 * want[:, t] + 0.7 * want[:, t - 1]
    np.testing.assert_allclose(got, np.clip(want, low, high), rtol=1e-5, atol=1e-6)

    white = rng.standard_normal((3, 2, 5)).astype(np.float32)
    coloring = rng.standard_normal((5, 6)).astype(np.float32)
    got = np.zeros((4, 6, 2), np.float32)
    ops.color_clip(got, white, coloring, mean, std, low, high)
    want = np.clip(mean + std * np.einsum("kam,mt->kta", white, coloring), low, high)
    np.testing.assert_allclose(got[:3], want, rtol=1e-5, atol=1e-5)
    assert (got[3] == 0).all()

    z = rng.standard_normal(5000).astype(np.float32)
    spare = rng.standard_normal(500).astype(np.float32)
    bad = np.abs(z) > 2
    good_spare = spare[np.abs(spare) <= 2]
    got = z.copy()
    assert ops.truncate_normals(got, spare) == 0
    np.testing.assert_array_equal(got[~bad], z[~bad])
    np.testing.assert_array_equal(got[bad], good_spare[: bad.sum()])


def _member(scale):
    """The linear model with its control gain scaled: members that disagree about the action."""
    m = linear_model()
    m["weights"] = [m["weights"][0], m["weights"][1] * np.array([[1.0, 1.0], [1.0, 1.0],
                                                                  [1.0, scale]] * 2)]
    return m


MEMBERS = [_member(s) for s in (1.0, 0.5, 1.5)]


def ensemble_model():
    """A DynamicsModel of the three members (their statistics are the same)."""
    return dynamics_model(dict(MEMBERS[0], weights=[m["weights"] for m in MEMBERS],
                               biases=[m["biases"] for m in MEMBERS]))


def members_mean(actions, obs=X0):
    return np.mean([rollout_reference(activation="relu", obs=obs, actions=actions, **m,
                                      reward=quadratic_reward) for m in MEMBERS], axis=0)


def test_scorer_scores_an_ensemble_by_the_members_mean():
    scorer = Scorer(ensemble_model(), quadratic_reward, horizon=H, max_candidates=50)
    assert scorer.num_members == 3
    batch = scorer.batch(37)  # partial chunks under every member
    assert batch.actions.shape == (37, H, 1) and batch.returns.shape == (37,)
    assert scorer.batch(37) is batch and len(batch) == 37
    batch.actions[:] = np.random.default_rng(0).uniform(-BOUND, BOUND, batch.actions.shape)
    scorer.begin(X0)
    best = scorer.score(batch)
    want = members_mean(batch.actions.astype(np.float64))
    np.testing.assert_allclose(batch.returns, want, rtol=1e-4, atol=1e-4)
    assert best == np.argmax(want)
    assert (scorer.num_evaluated, scorer.num_diverged) == (37, 0)
    assert scorer.best_return == pytest.approx(want.max(), rel=1e-4)
    scorer.score(batch)  # statistics add up until the next begin
    assert scorer.num_evaluated == 74
    scorer.begin(X0.astype(np.float64))
    assert (scorer.best_return, scorer.num_evaluated) == (-np.inf, 0)
    for k in (0, 51):
        with pytest.raises(ValueError, match="k"):
            scorer.batch(k)


def test_scorer_branches_continue_from_each_members_own_states():
    # 3 steps from X0, then 5 more from where each member ended: the members' mean of the
    # whole 8-step rollout, and every member's end state as the reference's
    scorer = Scorer(ensemble_model(), quadratic_reward, horizon=H, max_candidates=20)
    rng = np.random.default_rng(2)
    k, b = 13, 3
    states, live = np.empty((b, k, 2), np.float32), np.ones((b, k), bool)
    first = scorer.branch(np.empty((k, 3, 1), np.float32), states, live)
    second = scorer.branch(np.empty((k, 5, 1), np.float32), states, live)
    first.actions[:] = rng.uniform(-1, 1, first.actions.shape)
    second.actions[:] = rng.uniform(-1, 1, second.actions.shape)
    states[:] = X0
    scorer.begin(X0)
    scorer.score(first)
    part = first.returns.copy()
    scorer.score(second)
    whole = np.concatenate([first.actions, second.actions], axis=1).astype(np.float64)
    np.testing.assert_allclose(part + second.returns, members_mean(whole), rtol=1e-4,
                               atol=1e-4)
    for m, member in enumerate(MEMBERS):
        _, end, alive = rollout_reference(activation="relu", obs=X0, actions=whole,
                                          reward=quadratic_reward, ends=True, **member)
        np.testing.assert_allclose(states[m], end, rtol=1e-4, atol=1e-4)
        assert alive.all() and live[m].all()
    live[1, 4] = False  # a branch that ended under one member earns nothing there
    states[:] = X0
    scorer.score(first)
    per_member = [rollout_reference(activation="relu", obs=X0, actions=first.actions,
                                    reward=quadratic_reward, **m) for m in MEMBERS]
    per_member[1][4] = 0.0
    np.testing.assert_allclose(first.returns, np.mean(per_member, axis=0), rtol=1e-4, atol=1e-4)
    assert not live[1, 4] and live[[0, 2], 4].all()


def test_scorer_branch_checks_its_buffers():
    scorer = Scorer(ensemble_model(), quadratic_reward, horizon=H, max_candidates=8)
    acts, states, live = (np.zeros((8, 2, 1), np.float32), np.zeros((3, 8, 2), np.float32),
                          np.ones((3, 8), bool))
    with pytest.raises(ValueError, match=r"states: expected .*\(3, 8, 2\)"):
        scorer.branch(acts, states[:1], live)
    with pytest.raises(ValueError, match=r"live: expected .*bool"):
        scorer.branch(acts, states, live.astype(np.float32))
    with pytest.raises(ValueError, match="at most 8 rows"):
        scorer.branch(np.zeros((9, 2, 1), np.float32), states, live)
    with pytest.raises(ValueError, match="actions: expected"):
        scorer.branch(np.zeros((8, 2, 3), np.float32), states, live)


def test_scorer_checks_obs_and_counts_diverged_candidates():
    model = linear_model()
    model["weights"][1] = np.where(model["weights"][1] != 0, np.inf, 0.0)
    scorer = Scorer(pack_model(activation="relu", **model), quadratic_reward, horizon=H,
                    max_candidates=8)
    with pytest.raises(ValueError, match=r"obs: expected shape \(2,?\), got \(3,\)"):
        scorer.begin(np.zeros(3))
    with pytest.raises(ValueError, match="obs: contains NaN"):
        scorer.begin([0.0, np.nan])
    batch = scorer.batch(8)
    batch.actions[:] = 0.5
    scorer.begin(X0)
    assert scorer.score(batch) == 0 and np.isneginf(batch.returns).all()
    assert (scorer.num_diverged, scorer.best_return) == (8, -np.inf)


def test_scorer_follows_the_model_version():
    model = dynamics_model(linear_model())
    scorer = Scorer(model, quadratic_reward, horizon=H, max_candidates=4)
    batch = scorer.batch(4)
    batch.actions[:] = np.random.default_rng(1).uniform(-1, 1, batch.actions.shape)
    scorer.begin(X0)
    scorer.score(batch)
    before = batch.returns.copy()
    state = model.state_dict()
    state["W1"][[2, 5]] *= -1
    model.load_state(state)
    scorer.begin(X0)
    scorer.score(batch)
    assert scorer.packed is model.packed() and not np.allclose(batch.returns, before)
    reversed_ = linear_model()
    reversed_["weights"][1][[2, 5]] *= -1
    want = rollout_reference(activation="relu", obs=X0, actions=batch.actions.astype(np.float64),
                             reward=quadratic_reward, **reversed_)
    np.testing.assert_allclose(batch.returns, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(MAKERS))
def test_planners_on_an_ensemble(name):
    planner = make(name, ensemble_model(), warm_start=False)
    assert planner.num_members == 3
    plan = planner.plan(X0)
    assert np.isfinite(plan).all() and np.abs(plan).max() <= BOUND
    if name == "rs":
        # the candidates are the planner's uniform draws; the best scores the members' mean
        u = np.random.default_rng(0).random((BUDGET, H, 1), dtype=np.float32)
        want = members_mean(-BOUND + 2 * BOUND * u.astype(np.float64))
        assert planner.last_best_return == pytest.approx(want.max(), rel=1e-4)
        assert members_mean(plan[None].astype(np.float64))[0] == pytest.approx(want.max(),
                                                                              rel=1e-4)
    # the allocation-free path holds for ensembles too
    got = allocations(lambda: planner.plan(X0), calls=3, numpy_calls=1)
    assert got["numpy_bytes_per_call"] == 0, got
