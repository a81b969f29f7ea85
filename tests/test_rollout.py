"""The fused rollout kernel against its NumPy twin (tests/reference.py)."""
import numba
import numpy as np
import pytest

from fastmbrl.kernels import num_threads
from fastmbrl.kernels.isa import SPECS
from fastmbrl.kernels.rollout import (Chunks, KernelArgs, PackedModel, Workspace,
                                      WorkspaceArrays, _rollout, kernel_args, make_chunks,
                                      pack_model, rollout)
from fastmbrl.tasks.learned import learned_reward, learned_terminated
from tests.reference import leaves_box, quadratic_reward, rollout_reference

THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]


@pytest.fixture(params=sorted(SPECS))
def isa(request):
    """Every spec runs on every machine (wider vectors are legal LLVM IR everywhere)."""
    return SPECS[request.param]


def random_model(rng, obs_dim, act_dim, hidden, scale=1.0):
    sizes = [obs_dim + act_dim, *hidden, obs_dim]
    weights = [scale * rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    in_mean = rng.standard_normal(obs_dim + act_dim)
    in_scale = rng.uniform(0.5, 2.0, obs_dim + act_dim)
    in_scale[0] = 0.0  # an ignored observation dimension
    return dict(weights=weights, biases=biases, input_mean=in_mean, input_scale=in_scale,
                delta_mean=0.01 * rng.standard_normal(obs_dim),
                delta_std=rng.uniform(0.05, 0.2, obs_dim))


def check(model, activation, obs, actions, terminated=None, threads=1, rows=None, members=None,
          isa=None):
    packed = pack_model(activation=activation, isa=isa, **model)
    with num_threads(threads):
        got = rollout(packed, obs, actions, quadratic_reward, terminated, rows=rows, members=members)
    want = rollout_reference(activation=activation, obs=obs, actions=actions,
                             reward=quadratic_reward, terminated=terminated, **model)
    assert got.dtype == np.float32 and got.shape == (actions.shape[0],)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return got


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("activation,hidden", [("relu", (40, 70)), ("tanh", (100,)),
                                               ("silu", (20, 10, 33)), ("relu", ())])
def test_matches_reference(activation, hidden, threads, isa):
    # hidden widths 70, 100, 33 and 10 are no multiple of 16 lanes and most of them none of 8
    # or 4; an output of 5 pads a partial vector; 77 rows leave a partial chunk and a partial
    # tile on every spec
    rng = np.random.default_rng(len(hidden) + threads)
    model = random_model(rng, 5, 2, hidden)
    obs = rng.standard_normal(5).astype(np.float32)
    actions = rng.uniform(-1, 1, (77, 6, 2)).astype(np.float32)
    check(model, activation, obs, actions, threads=threads, isa=isa)


@pytest.mark.parametrize("hidden", [(8,), (16, 24), (48, 64, 80)])
def test_panel_splits_match_reference(hidden, isa):
    """Layers of 1 to 5 and more panels exercise every tile width the spec's dense layer picks
    (1, 2 or 3 vectors), and a 1-wide output a single padded lane."""
    rng = np.random.default_rng(sum(hidden))
    model = random_model(rng, 1, 1, hidden)
    obs = rng.standard_normal(1).astype(np.float32)
    actions = rng.uniform(-1, 1, (isa.tile_rows * 3 + 1, 4, 1)).astype(np.float32)
    check(model, "relu", obs, actions, isa=isa, rows=isa.tile_rows * 2)


@pytest.mark.parametrize("threads", THREADS)
def test_termination_stops_reward(threads, isa):
    rng = np.random.default_rng(3)
    model = random_model(rng, 3, 1, (24,), scale=3.0)
    model["delta_std"] = np.full(3, 0.3)
    obs = np.array([0.8, 0.0, 0.0], np.float32)
    actions = rng.uniform(-1, 1, (50, 8, 1)).astype(np.float32)
    got = check(model, "tanh", obs, actions, terminated=leaves_box, threads=threads,
                rows=2 * isa.tile_rows, isa=isa)
    plain = rollout(pack_model(activation="tanh", isa=isa, **model), obs, actions,
                    quadratic_reward)
    early = got != plain
    assert early.any() and not early.all()  # some rollouts terminated early


def test_ensemble_members(isa):
    rng = np.random.default_rng(4)
    a, b = random_model(rng, 4, 2, (30,)), random_model(rng, 4, 2, (30,))
    stacked = {k: ([a[k], b[k]] if k in ("weights", "biases") else np.stack([a[k], b[k]]))
               for k in a}
    packed = pack_model(activation="relu", isa=isa, **stacked)
    obs = rng.standard_normal(4).astype(np.float32)
    actions = rng.uniform(-1, 1, (20, 5, 2)).astype(np.float32)
    members = np.repeat([0, 1], 10)
    got = rollout(packed, obs, actions, quadratic_reward, members=members, rows=isa.tile_rows)
    for m, model in enumerate((a, b)):
        want = rollout_reference(activation="relu", obs=obs, actions=actions[members == m],
                                 reward=quadratic_reward, **model)
        np.testing.assert_allclose(got[members == m], want, rtol=1e-4, atol=1e-4)
    starts, owners, sources = make_chunks(20, 8, members)
    assert list(starts) == [0, 8, 10, 18, 20] and list(owners) == [0, 0, 1, 1]
    assert list(sources) == [0, 8, 10, 18]


@pytest.mark.parametrize("threads", THREADS)
def test_every_member_scores_each_candidate_under_each_member(threads, isa):
    rng = np.random.default_rng(8)
    parts = [random_model(rng, 4, 2, (24, 17)) for _ in range(3)]
    stacked = {k: ([p[k] for p in parts] if k in ("weights", "biases")
                   else np.stack([p[k] for p in parts])) for k in parts[0]}
    packed = pack_model(activation="silu", isa=isa, **stacked)
    obs = rng.standard_normal(4).astype(np.float32)
    actions = rng.uniform(-1, 1, (21, 6, 2)).astype(np.float32)  # 21: partial chunks per member
    with num_threads(threads):
        got = rollout(packed, obs, actions, quadratic_reward, every_member=True,
                      rows=isa.tile_rows)
    assert got.shape == (3, 21)
    for m, model in enumerate(parts):
        want = rollout_reference(activation="silu", obs=obs, actions=actions,
                                 reward=quadratic_reward, **model)
        np.testing.assert_allclose(got[m], want, rtol=1e-4, atol=1e-4)
    starts, owners, sources = make_chunks(21, 8, every_member=3)  # chunking alone
    assert list(starts) == [0, 8, 16, 21, 29, 37, 42, 50, 58, 63]
    assert list(owners) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and list(sources) == [0, 8, 16] * 3


def test_divergence_scores_minus_inf(isa):
    rng = np.random.default_rng(5)
    model = random_model(rng, 3, 1, (16,), scale=1.0)
    model["weights"][-1] = model["weights"][-1] * 1e30  # overflows to inf on some candidates
    obs = np.ones(3, np.float32)
    actions = rng.uniform(-1, 1, (24, 4, 1)).astype(np.float32)
    got = rollout(pack_model(activation="relu", isa=isa, **model), obs, actions,
                  quadratic_reward)
    want = rollout_reference(activation="relu", obs=obs, actions=actions,
                             reward=quadratic_reward, **model)
    assert np.isneginf(got).all() and np.isneginf(want).all()
    model["weights"][-1][:] = np.nan
    got = rollout(pack_model(activation="relu", isa=isa, **model), obs, actions,
                  quadratic_reward)
    assert np.isneginf(got).all()


def test_kernel_arguments_are_named_as_its_parameters():
    import inspect

    params = list(inspect.signature(_rollout).parameters)
    assert list(KernelArgs._fields) == params
    assert set(WorkspaceArrays._fields) | set(Chunks._fields) <= set(params)
    rng = np.random.default_rng(6)
    packed = pack_model(activation="relu", **random_model(rng, 3, 1, (16,)))
    obs, actions, returns = np.zeros(3, np.float32), np.zeros((5, 2, 1), np.float32), np.zeros(5)
    chunks = make_chunks(5, 8)
    ws = Workspace(packed, 1)
    args = kernel_args(packed, obs, actions, chunks, ws, returns)
    assert args.obs0 is obs and args.actions is actions and args.returns is returns
    assert args.weights is packed.weights and args.act_code == packed.activation
    assert args.chunk_member is chunks.chunk_member and args.base_ws is ws.arrays.base_ws
    other = pack_model(activation="tanh", **random_model(rng, 3, 1, (16,)))
    moved = args.with_model(other)
    assert moved.weights is other.weights and moved.act_code == other.activation
    assert moved.x_ws is args.x_ws and moved.obs0 is obs


def test_bad_inputs():
    rng = np.random.default_rng(7)
    model = random_model(rng, 3, 1, (16,))
    with pytest.raises(ValueError, match="activation"):
        pack_model(activation="gelu", **model)
    bad = dict(model, weights=[model["weights"][0], model["weights"][1][:5]])
    with pytest.raises(ValueError, match="chain"):
        pack_model(activation="relu", **bad)
    with pytest.raises(ValueError, match="delta_std"):
        pack_model(activation="relu", **dict(model, delta_std=np.ones(4)))
    packed = pack_model(activation="relu", **model)
    actions = np.zeros((4, 2, 1), np.float32)
    with pytest.raises(ValueError, match="obs"):
        rollout(packed, np.zeros(4), actions, quadratic_reward)
    with pytest.raises(ValueError, match="actions"):
        rollout(packed, np.zeros(3), np.zeros((4, 2, 2)), quadratic_reward)
    with pytest.raises(ValueError, match="NaN"):
        rollout(packed, np.array([0, np.nan, 0]), actions, quadratic_reward)
    with pytest.raises(TypeError, match="numba"):
        rollout(packed, np.zeros(3), actions, lambda o, a, n, out: None)
    with pytest.raises(ValueError, match="sorted"):
        make_chunks(4, 8, np.array([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="not both"):
        make_chunks(4, 8, np.zeros(4, int), every_member=2)
    avx2 = pack_model(activation="relu", isa="avx2", **model)
    with pytest.raises(ValueError, match="multiple of 6"):
        Workspace(avx2, 1, rows=16)
    with pytest.raises(ValueError, match="unknown instruction-set spec 'sse9'"):
        pack_model(activation="relu", isa="sse9", **model)
    assert isinstance(packed, PackedModel) and packed.flops_per_step() == 2 * (4 * 16 + 16 * 3)
    assert avx2.width == 16 and avx2.out_width == 8 and avx2.weights.shape == (1, 4 * 16 + 16 * 8)


@pytest.mark.parametrize("threads", THREADS)
def test_angle_inputs_match_reference(threads, isa):
    """Angles enter the network as sine (in place) and cosine (after the observation)."""
    rng = np.random.default_rng(9)
    obs_dim, act_dim, angles = 5, 2, (1, 3)
    model = random_model(rng, obs_dim + len(angles), act_dim, (24, 20))
    model["weights"][-1] = model["weights"][-1][:, :obs_dim]
    model["biases"][-1] = model["biases"][-1][:obs_dim]
    model["delta_mean"], model["delta_std"] = model["delta_mean"][:obs_dim], model["delta_std"][:obs_dim]
    packed = pack_model(activation="silu", angle_dims=angles, isa=isa, **model)
    obs = rng.uniform(-4, 4, obs_dim).astype(np.float32)
    actions = rng.uniform(-1, 1, (37, 6, act_dim)).astype(np.float32)
    with num_threads(threads):
        got = rollout(packed, obs, actions, quadratic_reward, rows=2 * isa.tile_rows)
    want = rollout_reference(activation="silu", obs=obs, actions=actions, reward=quadratic_reward,
                             angle_dims=angles, **model)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # branched: 2 steps, then 4 from the end states, whose angles the kernel featurises again
    states = np.repeat(obs[None], 37, axis=0)
    with num_threads(threads):
        first = rollout(packed, obs, np.ascontiguousarray(actions[:, :2]), quadratic_reward,
                        states=states)
        rest = rollout(packed, obs, np.ascontiguousarray(actions[:, 2:]), quadratic_reward,
                       states=states)
    np.testing.assert_allclose(first + rest, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="angle_dims"):
        pack_model(activation="silu", angle_dims=(5,), **model)


@pytest.mark.parametrize("threads", THREADS)
def test_absolute_outputs_match_reference(threads, isa):
    """Absolute outputs (the learned reward and termination columns) are the network's values,
    not obs + delta; the learned reward and termination read them from next_obs."""
    rng = np.random.default_rng(10)
    obs_dim, act_dim = 4, 2
    model = random_model(rng, obs_dim, act_dim, (16,))
    packed = pack_model(activation="tanh", absolute_dims=(2, 3), isa=isa, **model)
    obs = rng.uniform(-2, 2, obs_dim).astype(np.float32)
    actions = rng.uniform(-1, 1, (29, 5, act_dim)).astype(np.float32)
    with num_threads(threads):
        got = rollout(packed, obs, actions, learned_reward, learned_terminated,
                      rows=isa.tile_rows)
    want = rollout_reference(activation="tanh", obs=obs, actions=actions, reward=learned_reward,
                             terminated=learned_terminated, absolute_dims=(2, 3), **model)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    delta = rollout_reference(activation="tanh", obs=obs, actions=actions,
                              reward=learned_reward, terminated=learned_terminated, **model)
    assert np.abs(want - delta).max() > 1e-2  # the carried column would have scored otherwise
    with pytest.raises(ValueError, match="absolute_dims"):
        pack_model(activation="tanh", absolute_dims=(4,), **model)



@pytest.mark.parametrize("threads", THREADS)
def test_branches_start_from_their_own_states(threads, isa):
    """Rows with their own start states (tree search): returns, end states and running flags
    as the twin's; rolling 3 steps and then 4 from the end states is the 7-step rollout, with
    terminations carried across the cut; rows that start terminated earn nothing."""
    rng = np.random.default_rng(11)
    model = random_model(rng, 3, 1, (24,), scale=3.0)
    model["delta_std"] = np.full(3, 0.3)
    packed = pack_model(activation="tanh", isa=isa, **model)
    obs = np.array([0.8, 0.0, 0.0], np.float32)
    actions = rng.uniform(-1, 1, (45, 7, 1)).astype(np.float32)
    starts = (obs + 0.1 * rng.standard_normal((45, 3))).astype(np.float32)
    live = rng.random(45) < 0.9
    states, flags = starts.copy(), live.copy()
    with num_threads(threads):
        got = rollout(packed, obs, actions, quadratic_reward, leaves_box, states=states,
                      live=flags, rows=isa.tile_rows)
    want, end, running = rollout_reference(activation="tanh", obs=starts, actions=actions,
                                           reward=quadratic_reward, terminated=leaves_box,
                                           live=live, ends=True, **model)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(flags, running)
    np.testing.assert_allclose(states[running], end[running], rtol=1e-4, atol=1e-4)
    assert (got[~live] == 0).all() and (~running & live).any()
    whole = rollout(packed, obs, actions, quadratic_reward, leaves_box)
    states = np.repeat(obs[None], 45, axis=0)
    first = rollout(packed, obs, np.ascontiguousarray(actions[:, :3]), quadratic_reward,
                    leaves_box, states=states)
    flags = np.ones(45, bool)
    rollout(packed, obs, actions[:, :3].copy(), quadratic_reward, leaves_box,
            states=np.repeat(obs[None], 45, axis=0), live=flags)
    rest = rollout(packed, obs, np.ascontiguousarray(actions[:, 3:]), quadratic_reward,
                   leaves_box, states=states, live=flags)
    np.testing.assert_allclose(first + rest, whole, rtol=1e-4, atol=1e-4)


def test_branches_under_every_member(isa):
    rng = np.random.default_rng(12)
    parts = [random_model(rng, 4, 2, (16,)) for _ in range(2)]
    stacked = {k: ([p[k] for p in parts] if k in ("weights", "biases")
                   else np.stack([p[k] for p in parts])) for k in parts[0]}
    packed = pack_model(activation="relu", isa=isa, **stacked)
    obs = np.zeros(4, np.float32)
    actions = rng.uniform(-1, 1, (13, 3, 2)).astype(np.float32)
    starts = rng.standard_normal((2, 13, 4)).astype(np.float32)
    states = starts.copy()
    got = rollout(packed, obs, actions, quadratic_reward, every_member=True, states=states)
    for m, model in enumerate(parts):
        want, end, _ = rollout_reference(activation="relu", obs=starts[m], actions=actions,
                                         reward=quadratic_reward, ends=True, **model)
        np.testing.assert_allclose(got[m], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(states[m], end, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"states: expected .*\(2, 13, 4\)"):
        rollout(packed, obs, actions, quadratic_reward, every_member=True, states=starts[0])
    with pytest.raises(ValueError, match="live: only with states"):
        rollout(packed, obs, actions, quadratic_reward, live=np.ones(13, bool))


@pytest.mark.parametrize("threads", THREADS)
def test_known_dynamics_match_reference(threads):
    """A FunctionModel's step replaces the network in the same kernel: MountainCar's exact
    dynamics, reward and termination (some candidates reach the goal and stop earning)."""
    from fastmbrl.kernels.rollout import pack_dynamics
    from fastmbrl.tasks import mountain_car_dynamics, mountain_car_reward, mountain_car_terminated
    from tests.reference import known_rollout_reference

    rng = np.random.default_rng(threads)
    obs = np.array([0.3, 0.02], np.float32)
    actions = rng.uniform(-1.5, 1.5, (77, 25, 1)).astype(np.float32)
    packed = pack_dynamics(mountain_car_dynamics, 2, 1)
    with num_threads(threads):
        got = rollout(packed, obs, actions, mountain_car_reward, mountain_car_terminated)
    want = known_rollout_reference(mountain_car_dynamics, obs, actions, mountain_car_reward,
                                   mountain_car_terminated)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    reached = want > 50
    assert reached.any() and not reached.all()
    with pytest.raises(TypeError, match=r"dynamics: expected a numba.njit function "
                                        r"fn\(obs, act, next_obs\)"):
        pack_dynamics(np.copyto, 2, 1)


def _scaled_reward(scale):
    s = np.float32(scale)

    @numba.njit(cache=True)
    def reward(obs, act, next_obs, out):
        for i in range(obs.shape[0]):
            out[i] = s * next_obs[i, 0]
    return reward


def test_rewards_of_one_factory_compile_their_own_kernels():
    """Closures of one factory share their bytecode; the kernel cached on disk for the first
    must not serve the second (it did: both planned with the first's constant)."""
    rng = np.random.default_rng(9)
    packed = pack_model(activation="tanh", **random_model(rng, 2, 1, (8,)))
    obs = np.array([0.5, -0.2], np.float32)
    actions = rng.uniform(-1, 1, (6, 3, 1)).astype(np.float32)
    one = rollout(packed, obs, actions, _scaled_reward(1.0))
    other = rollout(packed, obs, actions, _scaled_reward(2.5))
    np.testing.assert_allclose(other, 2.5 * one, rtol=1e-5)
