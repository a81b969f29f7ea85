"""World Models' C and the dream kernel: the population's rollouts inside M against a NumPy twin
built on M's own step, determinism, termination, and C's file."""
import numba
import numpy as np
import pytest

from fastmbrl.errors import FormatError
from fastmbrl.kernels import num_threads
from fastmbrl.kernels.dense import pack_panels
from fastmbrl.kernels.dream import dream_kernel, dream_returns, dream_rows
from fastmbrl.kernels.isa import get_spec
from fastmbrl.models.mdnrnn import MDNRNN
from fastmbrl.models.wm_controller import WorldModelController, dream, num_params
from tests.reference import dream_reference

THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]
Z, A, H, K = 4, 2, 6, 3
LOW, HIGH = np.array([-1.0, 0.0]), np.array([1.0, 2.0])
CLIP = np.array([0, 1], np.uint8)  # the second action is u clipped to [0, 2], as CarRacing's brake


def _model(dtype=np.float64, seed=0):
    m = MDNRNN(Z, A, H, K, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for p in m.params.values():  # larger than the init, so that the draws matter
        p[...] = rng.normal(0, 0.5, p.shape)
    return m


def _draws(p, r, t, seed=2):
    rng = np.random.default_rng(seed)
    return rng.random((p, r, t, Z)), rng.standard_normal((p, r, t, Z))


@pytest.mark.parametrize("temperature", [1.15, 0.0])
def test_the_kernel_dreams_as_its_numpy_twin(temperature):
    m = _model()
    m.params["bo"][-1] = -3.0  # done rarely: long rollouts
    rng = np.random.default_rng(3)
    pop = rng.normal(0, 0.5, (5, num_params(Z, H, A)))
    z0 = rng.standard_normal((3, Z))
    pick, noise = _draws(5, 3, 12)
    want = dream_reference(m, pop, z0, LOW, HIGH, pick, noise, temperature, 0.5, CLIP)
    for n in THREADS:
        ret, steps = np.zeros((5, 3)), np.zeros((5, 3), np.int64)
        with num_threads(n):
            dream_returns(pop, z0, m.params["W"], m.params["b"], m.params["Wo"],
                          m.params["bo"], LOW, HIGH, CLIP, K, pick, noise, temperature, 0.5, ret,
                          steps)
        np.testing.assert_allclose(ret, want[0], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(steps, want[1])
    assert len(np.unique(ret)) == ret.size  # candidates and starts differ


@pytest.mark.parametrize("spec", ["avx2", None])  # a 6-row tile, and this machine's
def test_the_tiled_float32_kernel_dreams_as_the_twin(spec):
    """float32 on the register tile, against the float64 twin: every chunking (rows per chunk)
    and thread count gives the same bits; a done step ends a rollout there as well."""
    m = _model()
    m.params["bo"][-1] = -0.6  # some rollouts end within the horizon
    rng = np.random.default_rng(9)
    p, r, t = 7, 3, 9
    pop = rng.normal(0, 0.5, (p, num_params(Z, H, A)))
    z0 = rng.standard_normal((r, Z))
    pick, noise = _draws(p, r, t, seed=4)
    want = dream_reference(m, pop, z0, LOW, HIGH, pick, noise, 1.15, 0.5, CLIP)
    spec = get_spec(spec)
    f32 = {k: np.asarray(v, np.float32) for k, v in m.params.items()}
    wg, bg = pack_panels(f32["W"], f32["b"], spec.lanes)
    wh, bh = pack_panels(f32["Wo"], f32["bo"], spec.lanes)
    args = [np.asarray(a, np.float32) for a in (pop, z0)] + [wg, bg, wh, bh] + [
        np.asarray(a, np.float32) for a in (LOW, HIGH)] + [CLIP]
    got = []
    for n, rows in [(1, spec.tile_rows), (THREADS[-1], 3 * spec.tile_rows),
                    (THREADS[-1], dream_rows(spec, p * r, 2))]:
        ret, steps = np.zeros((p, r)), np.zeros((p, r), np.int64)
        with num_threads(n):
            dream_kernel(spec)(*args, H, K, pick.astype(np.float32), noise.astype(np.float32),
                               1.15, 0.5, rows, ret, steps)
        got.append((ret, steps))
    for ret, steps in got[1:]:
        np.testing.assert_array_equal(ret, got[0][0])
        np.testing.assert_array_equal(steps, got[0][1])
    np.testing.assert_array_equal(got[0][1], want[1])
    assert 1 < got[0][1].min() < t == got[0][1].max()
    np.testing.assert_allclose(got[0][0], want[0], rtol=1e-4, atol=1e-4)


def test_a_rollout_ends_with_its_first_done_step():
    m = _model(seed=4)
    rng = np.random.default_rng(5)
    pop = rng.normal(0, 0.5, (4, num_params(Z, H, A)))
    z0 = rng.standard_normal((2, Z))
    pick, noise = _draws(4, 2, 30)
    ret, steps = np.zeros((4, 2)), np.zeros((4, 2), np.int64)
    dream_returns(pop, z0, m.params["W"], m.params["b"], m.params["Wo"], m.params["bo"], LOW,
                  HIGH, CLIP * 0, K, pick, noise, 1.0, 0.5, ret, steps)
    want = dream_reference(m, pop, z0, LOW, HIGH, pick, noise, 1.0, 0.5)
    np.testing.assert_array_equal(steps, want[1])
    np.testing.assert_allclose(ret, want[0], rtol=1e-9, atol=1e-9)
    m.params["bo"][-1] = 20.0  # done at once: one reward each
    dream_returns(pop, z0, m.params["W"], m.params["b"], m.params["Wo"], m.params["bo"], LOW,
                  HIGH, CLIP * 0, K, pick, noise, 1.0, 0.5, ret, steps)
    assert (steps == 1).all()


def test_dream_is_seeded_and_float32_is_close_to_float64():
    m64 = _model()
    m32 = MDNRNN(Z, A, H, K, dtype=np.float32)
    for name, p in m64.params.items():
        m32.params[name][...] = p
    pop = np.random.default_rng(6).normal(0, 0.5, (6, num_params(Z, H, A)))
    z0 = np.zeros((2, Z))
    a = dream(m64, pop, z0, 10, LOW, HIGH, temperature=0.0, seed=1)
    b = dream(m32, pop, z0, 10, LOW, HIGH, temperature=0.0, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-4)
    first, again, other = (dream(m64, pop, z0, 10, LOW, HIGH, seed=s)[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    with pytest.raises(ValueError, match="population"):
        dream(m64, pop[:, :-1], z0, 10, LOW, HIGH)
    with pytest.raises(ValueError, match="temperature"):
        dream(m64, pop, z0, 10, LOW, HIGH, temperature=-1)


def test_the_controller_acts_within_its_bounds_and_round_trips(tmp_path):
    rng = np.random.default_rng(7)
    ctl = WorldModelController(Z, H, A, LOW, HIGH, rng.normal(0, 2, num_params(Z, H, A)))
    assert ctl.num_params == A * (Z + H) + A == 22
    z, h = rng.standard_normal((9, Z)), rng.standard_normal((9, H))
    act = ctl.act(z, h)
    assert act.shape == (9, A) and (act >= LOW).all() and (act <= HIGH).all()
    w = ctl.params[:A * (Z + H)].reshape(A, Z + H)
    want = LOW + (HIGH - LOW) * (np.tanh(np.hstack([z, h]) @ w.T + ctl.params[-A:]) + 1) / 2
    np.testing.assert_allclose(act, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ctl.act(z[0], h[0]), act[0], rtol=1e-6, atol=1e-6)
    back = WorldModelController.load(ctl.save(tmp_path / "c"))
    np.testing.assert_array_equal(back.params, ctl.params)
    np.testing.assert_array_equal(back.act(z, h), act)
    # clipped actions: u itself within the bounds (CarRacing's brake: none for u <= 0)
    clipped = WorldModelController(Z, H, A, LOW, HIGH, ctl.params, action_clip=CLIP)
    u = np.tanh(np.hstack([z, h]) @ w.T + ctl.params[-A:])
    got = clipped.act(z, h)
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], np.clip(u[:, 1], 0.0, 2.0), rtol=1e-5, atol=1e-6)
    assert (got[:, 1] == 0).any() and (got[:, 1] > 0).any()
    back = WorldModelController.load(clipped.save(tmp_path / "clipped"))
    np.testing.assert_array_equal(back.action_clip, [False, True])
    np.testing.assert_array_equal(back.act(z, h), got)
    from fastmbrl.io import save_npz  # a version 1 file (before action_clip): none clipped
    save_npz(tmp_path / "v1", "wm_controller", 1, {"z_dim": Z, "hidden": H, "act_dim": A},
             {"params": ctl.params, "action_low": ctl.action_low,
              "action_high": ctl.action_high})
    np.testing.assert_array_equal(WorldModelController.load(tmp_path / "v1.npz").act(z, h), act)
    with pytest.raises(ValueError, match="action_clip"):
        WorldModelController(Z, H, A, LOW, HIGH, action_clip=[True])
    # CarRacing's controller: 867 parameters (Z 32, H 256, A 3)
    assert num_params(32, 256, 3) == 867
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError):
        WorldModelController.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="action_low must be below"):
        WorldModelController(Z, H, A, HIGH, LOW)


def _tiny_pixel_pendulum(tmp_path):
    """The pixel Pendulum at 16x16 with a tiny V and M, saved: (task, V, M, V's and M's paths)."""
    import dataclasses

    from fastmbrl.models.vae import ConvVAE, VAEConfig
    from fastmbrl.tasks.pixels import get_pixel_task

    task = dataclasses.replace(get_pixel_task("Pendulum-v1"), frame_size=16)
    vae = ConvVAE(VAEConfig(image_size=16, z_size=4, enc_channels=(4, 8), enc_kernels=(4, 4),
                            dense_size=16, dec_channels=(8, 3), dec_kernels=(6, 6)), seed=1)
    m = MDNRNN(4, 1, 6, 2, seed=2)
    return task, vae, m, vae.save(tmp_path / "vae"), m.save(tmp_path / "mdnrnn")


def test_a_population_is_evaluated_in_the_real_environment_through_the_executor(tmp_path):
    from fastmbrl.algorithms.base import run_episode
    from fastmbrl.algorithms.worldmodels import evaluate_population
    from fastmbrl.models.wm_controller import WorldModelAgent

    task, vae, m, vae_path, m_path = _tiny_pixel_pendulum(tmp_path)
    pop = np.random.default_rng(8).normal(0, 1.0, (3, num_params(4, 6, 1)))
    got = evaluate_population(vae_path, m_path, task, pop, seeds=[5, 6], max_steps=12,
                              workers=2, threads=1)
    want = []
    for params in pop:  # the same episodes in this process
        env = task.make_env()
        agent = WorldModelAgent(vae, m, WorldModelController(4, 6, 1, [-2.0], [2.0], params))
        rets = []
        for seed in (5, 6):
            agent.reset()
            rets.append(run_episode(env, agent.act, seed, 12)[0])
        env.close()
        want.append(np.mean(rets))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert len(set(np.round(got, 6))) == 3
    with pytest.raises(ValueError, match="sizes disagree"):
        WorldModelAgent(vae, m, WorldModelController(4, 7, 1, [-2.0], [2.0]))
    # the agent encodes frames one by one on its own kernel: the same actions as V.encode's
    c = WorldModelController(4, 6, 1, [-2.0], [2.0], pop[0])
    frames = np.random.default_rng(9).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    want, (h, cc) = [], m.initial_state(1)
    for frame in frames:
        z, _ = vae.encode(frame[None])
        want.append(c.act(z[0], h[0]).astype(np.float32))
        _, _, _, h, cc = m.step(z, want[-1][None], h, cc)
    agent = WorldModelAgent(vae, m, c)

    def no_batches(*args, **kwargs):
        raise AssertionError("the agent encoded through ConvVAE.encode")

    vae.encode = no_batches
    got = [agent.act(frame) for frame in frames]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # into `out`, from a reset: the same actions, and no NumPy array allocated per call
    from fastmbrl.cli.bench.controller import allocations
    agent.reset()
    out = np.empty(1, np.float32)
    for frame, a in zip(frames, want):
        assert agent.act(frame, out) is out
        np.testing.assert_allclose(out, a, rtol=1e-5, atol=1e-6)
    assert allocations(lambda: agent.act(frames[0], out), calls=5,
                       numpy_calls=1)["numpy_bytes_per_call"] == 0
    for bad in (np.empty(1), np.empty(2, np.float32), np.empty((1, 1), np.float32)):
        with pytest.raises(ValueError, match="out: expected"):
            agent.act(frames[0], bad)


def test_a_stalled_episode_ends_early_and_is_credited_its_last_reward_to_the_cap(tmp_path):
    from fastmbrl.algorithms.base import run_episode
    from fastmbrl.algorithms.worldmodels import population_returns
    from fastmbrl.models.wm_controller import WorldModelAgent

    # the pixel Pendulum never earns a positive reward: every episode stalls
    task, vae, m, vae_path, m_path = _tiny_pixel_pendulum(tmp_path)
    pop = np.random.default_rng(8).normal(0, 1.0, (2, num_params(4, 6, 1)))
    got, steps = population_returns(vae_path, m_path, task, pop, [5, 6], max_steps=12,
                                    stall_steps=5, workers=1)
    assert steps == 2 * 2 * 5
    whole, whole_steps = population_returns(vae_path, m_path, task, pop, [5, 6], max_steps=12,
                                            workers=1)
    assert whole_steps == 2 * 2 * 12
    env = task.make_env()
    for p, params in enumerate(pop):
        agent = WorldModelAgent(vae, m, WorldModelController(4, 6, 1, [-2.0], [2.0], params))
        for i, seed in enumerate((5, 6)):
            rewards = []
            obs, _ = env.reset(seed=seed)
            agent.reset()
            for _ in range(5):
                obs, r, *_ = env.step(agent.act(obs))
                rewards.append(r)
            np.testing.assert_allclose(got[p, i], sum(rewards) + 7 * rewards[-1], rtol=1e-5)
            agent.reset()
            np.testing.assert_allclose(whole[p, i], run_episode(env, agent.act, seed, 12)[0],
                                       rtol=1e-5)
    env.close()
    assert not np.allclose(got, whole)


class _ScriptedEnv:
    """16x16 blank frames and scripted rewards; truncated at its time limit, terminated at
    `end` if given."""

    def __init__(self, rewards, limit, end=None):
        from types import SimpleNamespace

        from gymnasium import spaces
        self.rewards, self.end, self.t = rewards, end, 0
        self.spec = SimpleNamespace(max_episode_steps=limit)
        self.action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros((16, 16, 3), np.uint8), {}

    def step(self, action):
        r = self.rewards[self.t]
        self.t += 1
        return (np.zeros((16, 16, 3), np.uint8), r, self.t == self.end,
                self.t >= self.spec.max_episode_steps, {})

    def close(self):
        pass


@pytest.mark.parametrize("rewards, limit, end, max_steps, want_steps, want", [
    # a positive reward starts the count again: cut 5 steps after it, credited to the limit
    ([-.1, -.1, -.1, 1.0] + [-.1] * 30, 20, None, None, 9, 1.0 - .8 - .1 * 11),
    # a cap above the environment's limit credits only the steps the limit leaves
    ([-.1] * 30, 20, None, 300, 5, -.1 * 20),
    # a cap below it credits up to the cap
    ([-.1] * 30, 20, None, 8, 5, -.1 * 8),
    # the environment's own end on the stall's step: nothing credited
    ([-.1] * 30, 5, None, None, 5, -.1 * 5),
    ([-.1] * 30, 20, 5, None, 5, -.1 * 5),
    # never stalled: the whole episode
    ([1.0, -.1, -.1, -.1] * 5, 20, None, None, 20, 5 * (1.0 - .3)),
])
def test_the_stall_cut_counts_steps_in_a_row_and_credits_up_to_the_episodes_end(
        tmp_path, rewards, limit, end, max_steps, want_steps, want):
    from types import SimpleNamespace

    from fastmbrl.algorithms.worldmodels import population_returns

    _, _, _, vae_path, m_path = _tiny_pixel_pendulum(tmp_path)
    task = SimpleNamespace(make_env=lambda: _ScriptedEnv(rewards, limit, end),
                           action_clip=None)
    pop = np.zeros((1, num_params(4, 6, 1)))
    got, steps = population_returns(vae_path, m_path, task, pop, [1], max_steps=max_steps,
                                    stall_steps=5, workers=1)
    assert steps == want_steps
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-6)


def test_the_agent_on_a_float64_world_model_steps_as_m_does():
    from fastmbrl.models.vae import ConvVAE, VAEConfig
    from fastmbrl.models.wm_controller import WorldModelAgent

    vae = ConvVAE(VAEConfig(image_size=16, z_size=4, enc_channels=(4, 8), enc_kernels=(4, 4),
                            dense_size=16, dec_channels=(8, 3), dec_kernels=(6, 6)), seed=1,
                  dtype=np.float64)
    m = MDNRNN(4, 2, 6, 2, seed=3, dtype=np.float64)
    params = np.random.default_rng(4).normal(0, 1.0, num_params(4, 6, 2))
    c = WorldModelController(4, 6, 2, [-1.0, 0.0], [1.0, 1.0], params, action_clip=[0, 1])
    frames = np.random.default_rng(5).random((6, 16, 16, 3))
    agent = WorldModelAgent(vae, m, c)
    h, cc = m.initial_state(1)
    for frame in frames:
        z, _ = vae.encode(frame[None])
        want = c.act(z[0], h[0])
        _, _, _, h, cc = m.step(z, want[None], h, cc)
        np.testing.assert_allclose(agent.act(frame), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(agent.h, h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(agent.c, cc, rtol=1e-5, atol=1e-6)
    # a state set from outside is the one the next step starts from
    agent.h, agent.c = np.zeros((1, 6)), np.zeros((1, 6))
    z, _ = vae.encode(frames[:1])
    np.testing.assert_allclose(agent.act(frames[0]), c.act(z[0], np.zeros(6)), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="h"):
        agent.h = np.zeros((1, 7))


def test_the_dream_bench_reference_does_the_kernels_work(capsys):
    import json

    from fastmbrl.cli import main
    from fastmbrl.cli.bench.dream import make_case, numpy_dream
    model, pop, z0, low, high = make_case(4, 2, 6, 3, population=5, rollouts=2)
    clip = np.array([0, 1], np.uint8)
    ret, steps = dream(model, pop, z0, 6, low, high, temperature=1.0, seed=3, action_clip=clip)
    rng = np.random.default_rng([3, 11])  # dream's own draws for seed 3
    shape = (5, 2, 6, 4)
    pick = rng.random(shape, dtype=np.float32)
    noise = rng.standard_normal(shape, dtype=np.float32)
    assert (steps == 6).all()  # the bench's M never says done
    np.testing.assert_allclose(numpy_dream(model, pop, z0, low, high, pick, noise, 1.0, clip),
                               ret, rtol=1e-4, atol=1e-4)
    assert main(["bench", "dream", "--z-dim", "3", "--act-dim", "2", "--hidden", "4",
                 "--mixtures", "2", "--population", "3", "--rollouts", "2", "--horizon", "5",
                 "--repeats", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["steps_per_s"] > 0 and row["numpy_steps_per_s"] > 0
    assert row["controller_params"] == num_params(3, 4, 2)
    assert main(["bench", "dream", "--horizon", "0"]) == 2
    assert "--horizon" in capsys.readouterr().err
