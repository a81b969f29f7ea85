"""Frame stores, their collection and the pixel tasks (World Models' data)."""
import json
import math
import signal
import subprocess
import sys
import textwrap
import numpy as np
import pytest

from fastmbrl import limits
from fastmbrl.data.collect import RandomPolicy, collect, episode_seeds
from fastmbrl.data.frames import FrameStore, chunk_name, list_chunks, write_chunk
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.kernels.resize import area_weights, resize_area
from fastmbrl.limits import ResourceLimitError

SMALL = (6, 5, 3)


# -- resize ---------------------------------------------------------------------------------------
def direct_area_mean(img, out_h, out_w):
    """Each input pixel repeated onto the least common grid, then block means: the exact
    area average, in float64."""
    h, w = img.shape[-3:-1]
    gh, gw = math.lcm(h, out_h), math.lcm(w, out_w)
    up = np.repeat(np.repeat(img.astype(np.float64), gh // h, axis=-3), gw // w, axis=-2)
    lead = up.shape[:-3]
    blocks = up.reshape(*lead, out_h, gh // out_h, out_w, gw // out_w, up.shape[-1])
    return blocks.mean(axis=(-4, -2))


@pytest.mark.parametrize("shape,out", [((96, 96, 3), (64, 64)), ((7, 5, 3), (3, 2)),
                                       ((2, 10, 12, 1), (4, 5)), ((8, 8, 3), (8, 8)),
                                       ((3, 4, 3), (6, 9))])
def test_resize_matches_the_direct_area_mean(shape, out):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    exact = direct_area_mean(img, *out)
    got = resize_area(img, *out, dtype=np.float32)
    assert got.shape == exact.shape == (*shape[:-3], *out, shape[-1])
    np.testing.assert_allclose(got, exact, atol=2e-3)
    rounded = resize_area(img, *out)
    assert rounded.dtype == np.uint8
    clear = np.abs(exact - np.floor(exact) - 0.5) > 1e-2  # not at a rounding tie
    np.testing.assert_array_equal(rounded[clear], np.floor(exact[clear] + 0.5))
    assert np.abs(rounded.astype(int) - exact).max() <= 0.51


def test_resize_weights_and_bad_input():
    w = area_weights(96, 64)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w.sum(axis=0), 64 / 96, rtol=1e-6)  # every input pixel counts alike
    flat = np.full((9, 9, 3), 77, np.uint8)
    assert (resize_area(flat, 4, 4) == 77).all()
    with pytest.raises(ValueError, match="out_h"):
        resize_area(flat, 0, 4)
    with pytest.raises(ValueError, match="H, W, C"):
        resize_area(np.zeros(5), 2, 2)


# -- the store ------------------------------------------------------------------------------------
def make_episode(steps, act_dim=2, seed=0, shape=SMALL, terminated=False):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (steps + 1, *shape), dtype=np.uint8)
    actions = rng.standard_normal((steps, act_dim)).astype(np.float32)
    rewards = rng.standard_normal(steps).astype(np.float32)
    term = np.zeros(steps, bool)
    trunc = np.zeros(steps, bool)
    (term if terminated else trunc)[-1] = True
    return frames, actions, rewards, term, trunc


def filled_store(lengths, capacity=None, shape=SMALL):
    store = FrameStore(2, capacity or sum(t + 1 for t in lengths), shape)
    for k, t in enumerate(lengths):
        store.add_episode(*make_episode(t, seed=k, shape=shape, terminated=k % 2 == 0))
    return store


def assert_same(a, b):
    for name in ("frames", "actions", "rewards", "terminated", "truncated", "episode_ids",
                 "episode_steps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_episodes_are_stored_end_to_end():
    store = filled_store([3, 1, 4])
    assert (len(store), store.num_frames, store.num_steps) == (3, 11, 8)
    np.testing.assert_array_equal(store.frame_starts, [0, 4, 6])
    np.testing.assert_array_equal(store.step_starts, [0, 3, 4])
    for k, t in enumerate([3, 1, 4]):
        ep = store.episode(k)
        for got, want in zip(ep, make_episode(t, seed=k, terminated=k % 2 == 0)):
            np.testing.assert_array_equal(got, want)
    assert store.episode(-1).frames.shape == (5, *SMALL)


def test_save_load_and_append_round_trip(tmp_path):
    store = filled_store([3, 1, 4, 2, 5])
    written = store.save(tmp_path / "s", meta={"task": "toy"}, chunk_frames=6)
    assert [p.name for p in written] == [chunk_name(0, 1), chunk_name(2, 3), chunk_name(4, 4)]
    loaded = FrameStore.load(tmp_path / "s")
    assert_same(store, loaded)
    assert loaded.capacity == store.num_frames

    grown = FrameStore.load(tmp_path / "s", capacity=100)
    grown.add_episode(*make_episode(2, seed=9))
    grown.add_episode(*make_episode(1, seed=10))
    assert [p.name for p in grown.save(tmp_path / "s")] == [chunk_name(5, 6)]  # only the new
    assert grown.save(tmp_path / "s") == []
    assert_same(grown, FrameStore.load(tmp_path / "s"))


def test_saving_over_another_store_is_refused(tmp_path):
    filled_store([2, 2]).save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FastMBRLError, match="another store"):
        filled_store([1]).save(tmp_path)
    with pytest.raises(FastMBRLError, match="frames"):
        filled_store([1], shape=(4, 4, 3)).save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_episodes_are_refused_and_leave_the_store_as_it_was():
    store = filled_store([2], capacity=8)
    frames, actions, rewards, term, trunc = make_episode(3)
    with pytest.raises(ValueError, match="uint8"):
        store.add_episode(frames.astype(np.float32), actions, rewards)
    with pytest.raises(ValueError, match="actions"):
        store.add_episode(frames, actions[:-1], rewards)
    early = np.array([True, False, False])
    with pytest.raises(ValueError, match="last step"):
        store.add_episode(frames, actions, rewards, terminated=early)
    with pytest.raises(ValueError, match="already"):
        store.add_episode(frames, actions, rewards, episode_id=0)
    with pytest.raises(ValueError, match="full"):
        store.add_episode(*make_episode(5))
    assert (len(store), store.num_frames) == (1, 3)
    store.add_episode(frames, actions, rewards, term, trunc)  # fits exactly
    assert store.num_frames == 7


def test_damaged_chunks_are_refused(tmp_path):
    filled_store([3, 2]).save(tmp_path, chunk_frames=1)
    chunk = tmp_path / chunk_name(1, 1)
    chunk.write_bytes(chunk.read_bytes()[:-100])
    with pytest.raises(FormatError, match=chunk.name):
        FrameStore.load(tmp_path)
    chunk.unlink()
    (tmp_path / chunk_name(0, 0)).rename(tmp_path / chunk_name(0, 1))  # name and header disagree
    with pytest.raises(FormatError, match="header"):
        FrameStore.load(tmp_path)


def test_a_superseded_chunk_is_skipped_and_removed(tmp_path):
    store = filled_store([2, 3, 1])
    store.save(tmp_path, chunk_frames=100)
    # as a collection killed between writing chunk 0-2 and removing 0-1 leaves it
    write_chunk(tmp_path, 0, [store.episode(0), store.episode(1)])
    assert [c[:2] for c in list_chunks(tmp_path)] == [(0, 2)]
    assert_same(store, FrameStore.load(tmp_path))
    list_chunks(tmp_path, remove_superseded=True)
    assert not (tmp_path / chunk_name(0, 1)).exists()


def test_memory_limit_refusal(tmp_path, monkeypatch):
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    filled_store([40, 40]).save(tmp_path)
    previous = limits.set_max_bytes("4K")
    try:
        with pytest.raises(ResourceLimitError, match=r"capacity=100000.*frames 1\.\d+ GiB"):
            FrameStore(3, 100_000)
        with pytest.raises(ResourceLimitError, match=str(tmp_path)):
            FrameStore.load(tmp_path)
    finally:
        limits.set_max_bytes(previous)
    assert FrameStore.load(tmp_path).num_frames == 82  # nothing lost
    assert FrameStore(3, 10).nbytes == 10 * (64 * 64 * 3 + 12 + 6)


# -- iterating ------------------------------------------------------------------------------------
def test_minibatches_are_one_epoch_of_frames():
    store = filled_store([4, 6, 3])
    everything = np.concatenate(list(store.minibatches(5)))
    np.testing.assert_array_equal(everything, store.frames)  # in order without an rng
    shuffled = list(store.minibatches(5, np.random.default_rng(1)))
    assert [len(b) for b in shuffled] == [5, 5, 5, 1]
    flat = np.concatenate(shuffled).reshape(store.num_frames, -1)
    assert not np.array_equal(flat, store.frames.reshape(store.num_frames, -1))
    key = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert key(flat) == key(store.frames.reshape(store.num_frames, -1))
    assert [len(b) for b in store.minibatches(5, np.random.default_rng(1), drop_last=True)] == [5] * 3


def test_sequences_are_windows_of_the_episodes():
    lengths = [7, 2, 5]
    store = filled_store(lengths)
    pos, first = store.windows(3)
    assert list(zip(pos.tolist(), first.tolist())) == [(0, 0), (0, 3), (0, 4), (2, 0), (2, 2)]
    batches = list(store.sequences(3, 2, np.random.default_rng(0)))
    assert [b.actions.shape for b in batches] == [(2, 3, 2), (2, 3, 2), (1, 3, 2)]
    seen = []
    for b in batches:
        for k in range(len(b.episode)):
            i = int(np.flatnonzero(store.episode_ids == b.episode[k])[0])
            ep = store.episode(i)
            s = int(b.step_index[k, 0] - store.step_starts[i])
            seen.append((i, s))
            np.testing.assert_array_equal(b.frames[k], ep.frames[s:s + 4])
            np.testing.assert_array_equal(b.frames[k], store.frames[b.frame_index[k]])
            for name in ("actions", "rewards", "terminated", "truncated"):
                np.testing.assert_array_equal(getattr(b, name)[k], getattr(ep, name)[s:s + 3])
    assert sorted(seen) == sorted(zip(pos.tolist(), first.tolist()))
    assert next(store.sequences(3, 8, frames=False)).frames is None
    with pytest.raises(ValueError, match="longest has 7"):
        next(store.sequences(8, 2))


# -- collection -----------------------------------------------------------------------------------
# a tiny deterministic pixel environment; the kill test runs it in a child process too
TOY_ENV = textwrap.dedent("""
    import os, signal
    import numpy as np

    class Box:
        def __init__(self, low, high, shape, dtype=np.float32):
            self.low, self.high, self.shape = np.asarray(low), np.asarray(high), shape

    class ToyPixels:
        steps_taken = 0  # across instances: the kill test counts the process's steps
        kill_at = None

        def __init__(self, length=5):
            self.length = length
            self.action_space = Box([-1.0, 0.0], [1.0, 2.0], (2,))
            self.observation_space = Box(0, 255, (6, 5, 3), np.uint8)

        def _frame(self):
            return np.clip(self.state * 40 + 128, 0, 255).astype(np.uint8)

        def reset(self, *, seed=None):
            self.state = np.random.default_rng(seed).uniform(-1, 1, (6, 5, 3))
            self.t = 0
            return self._frame(), {}

        def step(self, action):
            ToyPixels.steps_taken += 1
            if ToyPixels.steps_taken == ToyPixels.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            self.state = self.state + action[0] - 0.5 * action[1]
            self.t += 1
            return self._frame(), float(action.sum()), bool(self.state.mean() > 30), self.t >= self.length, {}

        def close(self):
            pass
    """)
toy = {}
exec(TOY_ENV, toy)
ToyPixels = toy["ToyPixels"]


def test_collection_is_seeded_and_skips_what_is_stored(tmp_path):
    calls = []
    counts = collect(tmp_path / "a", ToyPixels, 6, seed=3, chunk_frames=10,
                     progress=lambda d, t: calls.append((d, t)))
    assert counts == {"collected": 6, "skipped": 0, "steps": 30, "frames": 36}
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    a = FrameStore.load(tmp_path / "a")
    assert a.truncated.sum() == 6 and a.episode_steps.tolist() == [5] * 6
    # the same episodes in another order of work: ids 4..5 first, then the rest
    collect(tmp_path / "b", ToyPixels, range(4, 6), seed=3, chunk_frames=10, progress=False)
    counts = collect(tmp_path / "b", ToyPixels, 6, seed=3, chunk_frames=10, progress=False)
    assert counts["collected"] == 4 and counts["skipped"] == 2
    assert_same(a, FrameStore.load(tmp_path / "b"))
    for _ in range(2):  # a tuple reads back as a list: still the same settings
        collect(tmp_path / "d", ToyPixels, 1, progress=False, meta={"shape": (1, 2)})
    other = collect(tmp_path / "c", ToyPixels, 2, seed=4, progress=False)
    assert other["collected"] == 2
    assert not np.array_equal(FrameStore.load(tmp_path / "c").frames, a.frames[:12])


def test_continuing_with_other_settings_is_refused(tmp_path):
    collect(tmp_path, ToyPixels, 2, seed=1, progress=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FastMBRLError, match="seed: stored 1, asked 2"):
        collect(tmp_path, ToyPixels, 3, seed=2, progress=False)
    with pytest.raises(FastMBRLError, match="policy"):
        collect(tmp_path, ToyPixels, 3, seed=1, policy="uniform", progress=False)
    with pytest.raises(ValueError, match="policy must be"):
        collect(tmp_path, ToyPixels, 3, seed=1, policy="gaussian", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


CHILD = TOY_ENV + textwrap.dedent("""
    import sys
    from fastmbrl.data.collect import collect
    ToyPixels.kill_at = int(sys.argv[2])
    collect(sys.argv[1], ToyPixels, 6, seed=7, chunk_frames=14, progress=False)
    """)


def test_a_killed_collection_resumes_losing_at_most_its_episode(tmp_path):
    out = tmp_path / "killed"
    kill_at = 18  # in the fourth episode (five steps each)
    child = subprocess.run([sys.executable, "-c", CHILD, str(out), str(kill_at)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    partial = FrameStore.load(out)
    assert partial.episode_ids.tolist() == [0, 1, 2]  # everything finished before the kill
    counts = collect(out, ToyPixels, 6, seed=7, chunk_frames=14, progress=False)
    assert counts["collected"] == 3 and counts["skipped"] == 3
    whole = tmp_path / "whole"
    collect(whole, ToyPixels, 6, seed=7, chunk_frames=14, progress=False)
    assert_same(FrameStore.load(out), FrameStore.load(whole))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_random_policy():
    low, high = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])
    walk = RandomPolicy(low, high, "brownian", sigma=0.1)
    rng = episode_seeds(0, 0)[1]
    walk.reset(rng)
    acts = np.array([walk(rng) for _ in range(2000)])
    assert (acts >= low).all() and (acts <= high).all()
    steps = np.diff(acts, axis=0) / ((high - low) / 2)  # in units of the half-range
    inside = (np.abs(acts[1:] - acts[:-1]) > 0) & (acts[1:] > low) & (acts[1:] < high)
    assert 0.08 < steps[inside].std() < 0.12
    uniform = RandomPolicy(low, high, "uniform")
    u = np.array([uniform(rng) for _ in range(2000)])
    assert np.abs(np.diff(u, axis=0)).mean() > 5 * np.abs(np.diff(acts, axis=0)).mean()
    np.testing.assert_allclose(u.mean(axis=0), (low + high) / 2, atol=0.05)
    a, b = episode_seeds(5, 2), episode_seeds(5, 2)
    assert a[0] == b[0] and a[1].random() == b[1].random()
    assert episode_seeds(5, 3)[0] != a[0]


# -- pixel tasks ----------------------------------------------------------------------------------
def test_pixel_pendulum_frames_follow_the_hidden_state():
    pytest.importorskip("pygame")
    from fastmbrl.tasks.pixels import get_pixel_task

    env = get_pixel_task("Pendulum-v1").make_env()
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert env.observation_space.shape == (64, 64, 3)

        def frame(theta):
            env.unwrapped.state = np.array([theta, 0.0])
            return env.frame(None)

        def rod_centre(img):  # mean position of the rod's red pixels
            red = (img[..., 0].astype(int) - img[..., 2]) > 60
            rows, cols = np.nonzero(red)
            return rows.mean(), cols.mean()

        up, down = rod_centre(frame(0.0)), rod_centre(frame(np.pi))
        assert up[0] < 28 < 36 < down[0]  # upright at theta = 0
        left, right = rod_centre(frame(np.pi / 2)), rod_centre(frame(-np.pi / 2))
        assert min(left[1], right[1]) < 28 < 36 < max(left[1], right[1])
        np.testing.assert_array_equal(frame(1.0), frame(1.0))
        moved, *_ = env.step(np.array([2.0], np.float32))
        assert not np.array_equal(moved, frame(1.0))
    finally:
        env.close()


def test_pixel_pendulum_collects_reproducibly(tmp_path):
    pytest.importorskip("pygame")
    from fastmbrl.tasks.pixels import get_pixel_task

    task = get_pixel_task("Pendulum-v1")
    for name in ("a", "b"):
        collect(tmp_path / name, task, 2, seed=0, max_steps=6, meta=task.describe(),
                progress=False)
    a, b = FrameStore.load(tmp_path / "a"), FrameStore.load(tmp_path / "b")
    assert_same(a, b)
    assert a.episode_steps.tolist() == [6, 6] and a.truncated.sum() == 2
    assert len({bytes(f) for f in a.frames}) > 10  # the pendulum moves


def test_car_racing_frames_are_the_resized_observations(tmp_path):
    pytest.importorskip("Box2D")
    import gymnasium

    from fastmbrl.tasks.pixels import get_pixel_task

    task = get_pixel_task("CarRacing-v3")
    env, raw = task.make_env(), gymnasium.make("CarRacing-v3", continuous=True)
    try:
        frames = [env.reset(seed=4)[0]]
        raws = [raw.reset(seed=4)[0]]
        for _ in range(3):
            a = np.array([0.3, 0.8, 0.0], np.float32)
            frames.append(env.step(a)[0])
            raws.append(raw.step(a)[0])
        assert raws[0].shape == (96, 96, 3)
        np.testing.assert_array_equal(np.stack(frames), resize_area(np.stack(raws), 64, 64))
    finally:
        env.close()
        raw.close()
    counts = collect(tmp_path, task, 1, max_steps=3, meta=task.describe(), progress=False)
    assert counts["frames"] == 4
    store = FrameStore.load(tmp_path)
    assert store.frames.shape == (4, 64, 64, 3) and store.act_dim == 3


def test_car_racing_culled_road_draws_the_stock_frames():
    pytest.importorskip("Box2D")
    import gymnasium

    from gymnasium.envs.box2d.car_racing import CarRacing

    from fastmbrl.tasks.pixels import _ROAD_SOURCES, _road_source_digest, get_pixel_task

    env = get_pixel_task("CarRacing-v3").make_env().env  # the culled env's own 96x96 frames
    stock = gymnasium.make("CarRacing-v3", continuous=True)
    known = _road_source_digest(CarRacing) in _ROAD_SOURCES
    assert ("_render_road" in vars(env.unwrapped)) == known
    if not known:  # another Gymnasium draws as it always did
        env.close()
        stock.close()
        pytest.skip("this Gymnasium's CarRacing drawing is not the one the culling was checked "
                    "against; fast_road(env, force=True) here would say if it still fits")
    rng = np.random.default_rng(0)
    try:
        for seed in (1, 2):  # the zoom-in, turns, the grass and the edge of the field
            a_obs, b_obs = env.reset(seed=seed)[0], stock.reset(seed=seed)[0]
            np.testing.assert_array_equal(a_obs, b_obs)
            for t in range(250):
                act = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1), 0.0], np.float32)
                a, b = env.step(act), stock.step(act)
                np.testing.assert_array_equal(a[0], b[0], err_msg=f"seed {seed}, step {t}")
                assert a[1:4] == b[1:4]
                if a[2] or a[3]:
                    break
    finally:
        env.close()
        stock.close()


def test_car_racing_culling_keeps_every_polygon_the_stock_test_draws():
    pytest.importorskip("Box2D")
    import pygame
    from gymnasium.envs.box2d import car_racing as module

    from fastmbrl.tasks.pixels import _ROAD_SOURCES, _reachable, _road_arrays, _road_source_digest

    if _road_source_digest(module.CarRacing) not in _ROAD_SOURCES:
        pytest.skip("this Gymnasium's CarRacing drawing is not the one the culling knows")
    env = module.CarRacing(continuous=True)
    env.reset(seed=3)
    grass, road = _road_arrays(env, module)
    polys = np.concatenate([grass, road])
    lo, hi_w, hi_h = -module.MAX_SHAPE_DIM, module.WINDOW_W + module.MAX_SHAPE_DIM, \
        module.WINDOW_H + module.MAX_SHAPE_DIM

    def stock(zoom, trans, angle, margin=0.0):  # _draw_colored_polygon's test, pygame's maths
        out = []
        for poly in polys:
            pts = [pygame.math.Vector2(float(a), float(b)).rotate_rad(angle) for a, b in poly]
            pts = [(p[0] * zoom + trans[0], p[1] * zoom + trans[1]) for p in pts]
            out.append(any(lo - margin <= x <= hi_w + margin and lo - margin <= y <= hi_h + margin
                           for x, y in pts))
        return np.array(out)

    rng = np.random.default_rng(1)
    for _ in range(40):  # cameras over the track, zoomed in and out, turned any way
        zoom = rng.uniform(0.6, 16.2)
        x, y = road[rng.integers(len(road)), 0] + rng.normal(0, 20, 2)
        angle = rng.uniform(-10, 10)
        trans = pygame.math.Vector2(-x * zoom, -y * zoom).rotate_rad(angle)
        trans = (module.WINDOW_W / 2 + trans[0], module.WINDOW_H / 4 + trans[1])
        got = _reachable(polys, zoom, trans, angle, module)
        want = stock(zoom, trans, angle)
        assert not (want & ~got).any()  # every polygon the stock test draws is kept
        assert not (got & ~stock(zoom, trans, angle, margin=2.0)).any()  # and little more
    env.close()


def test_car_racing_culling_only_replaces_the_drawing_it_knows():
    pytest.importorskip("Box2D")
    import gymnasium
    from gymnasium.envs.box2d.car_racing import CarRacing

    from fastmbrl.tasks.pixels import fast_road

    class Edited(CarRacing):
        def _render_road(self, zoom, translation, angle):  # another version's drawing
            return super()._render_road(zoom, translation, angle)

    env = Edited(continuous=True)
    assert not fast_road(env) and "_render_road" not in vars(env)
    env.close()
    stock = gymnasium.make("CarRacing-v3", continuous=True).unwrapped
    assert "_render_road" not in vars(stock)  # made outside fastmbrl: untouched
    stock.close()


def test_unknown_pixel_task():
    from fastmbrl.tasks.pixels import get_pixel_task

    with pytest.raises(FastMBRLError, match="CarRacing-v3"):
        get_pixel_task("CarRacing-v2")


def test_a_chunk_reads_as_docs_formats_says_with_numpy_alone(tmp_path):
    store = filled_store([3, 1, 4])
    store.save(tmp_path, chunk_frames=100)
    (chunk,) = tmp_path.glob("chunk-*.npz")
    assert chunk.name == "chunk-0000000-0000002.npz"
    with np.load(chunk, allow_pickle=False) as z:
        header = json.loads(bytes(z["__header__"]))
        assert (header["kind"], header["format_version"]) == ("frame_chunk", 1)
        assert (header["first_episode"], header["episodes"]) == (0, 3)
        steps = z["steps"]
        s = np.concatenate([[0], np.cumsum(steps)[:-1]])
        for k, t in enumerate(steps):
            ep = store.episode(k)
            np.testing.assert_array_equal(z["frames"][s[k] + k:s[k] + k + t + 1], ep.frames)
            for name in ("actions", "rewards", "terminated", "truncated"):
                np.testing.assert_array_equal(z[name][s[k]:s[k] + t], getattr(ep, name))
    meta = json.loads((tmp_path / "store.json").read_text())
    assert (meta["kind"], meta["frame_shape"], meta["act_dim"]) == ("frame_store", [6, 5, 3], 2)
