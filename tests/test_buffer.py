import numpy as np
import pytest

from fastmbrl.data.buffer import FIELDS, ReplayBuffer
from fastmbrl.errors import FormatError
from fastmbrl.io import save_npz


def _rows(n, obs_dim=3, act_dim=2, start=0):
    """Rows whose values encode their insertion number, so order is checkable."""
    k = np.arange(start, start + n, dtype=np.float32)
    return dict(
        obs=np.repeat(k[:, None], obs_dim, 1),
        action=np.repeat(-k[:, None], act_dim, 1),
        next_obs=np.repeat(k[:, None] + 0.5, obs_dim, 1),
        reward=k * 2,
        terminated=(k % 3 == 0),
        truncated=(k % 5 == 0),
    )


def _filled(n, capacity=100):
    buf = ReplayBuffer(3, 2, capacity)
    buf.add_batch(**_rows(n))
    return buf


def test_add_and_fields():
    buf = ReplayBuffer(3, 2, capacity=4)
    assert len(buf) == 0 and buf.obs.shape == (0, 3)
    buf.add([1, 2, 3], [0.5, -0.5], [1, 2, 4], 1.5, terminated=True)
    assert len(buf) == 1
    assert buf.obs.dtype == np.float32 and buf.terminated.dtype == np.bool_
    np.testing.assert_array_equal(buf.next_obs[0], [1, 2, 4])
    assert buf.reward[0] == 1.5 and buf.terminated[0] and not buf.truncated[0]


def test_fifo_overwrite_matches_single_adds():
    a = ReplayBuffer(3, 2, capacity=5)
    b = ReplayBuffer(3, 2, capacity=5)
    rows = _rows(13)
    for i in range(13):
        a.add(**{k: v[i] for k, v in rows.items()})
    b.add_batch(**{k: v[:4] for k, v in rows.items()})
    b.add_batch(**{k: v[4:] for k, v in rows.items()})  # 9 rows > capacity in one call
    assert len(a) == len(b) == 5 and a.total_added == b.total_added == 13
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    oldest_first = a.reward[a.indices()] / 2
    np.testing.assert_array_equal(oldest_first, np.arange(8, 13))


def test_add_batch_default_flags_and_empty():
    buf = ReplayBuffer(3, 2, 10)
    r = _rows(4)
    buf.add_batch(r["obs"], r["action"], r["next_obs"], r["reward"])
    assert not buf.terminated.any() and not buf.truncated.any()
    buf.add_batch(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0))
    assert len(buf) == 4


@pytest.mark.parametrize("field, value, message", [
    ("obs", np.zeros(4), r"obs: expected shape \(3\)"),
    ("action", np.zeros((1, 2)), r"action: expected shape \(2\)"),
    ("next_obs", [1.0, np.nan, 0.0], "next_obs: contains NaN"),
    ("reward", np.inf, "reward: contains NaN"),
    ("reward", "high", "reward: cannot be cast"),
    ("obs", [object(), 1, 2], "obs: cannot be cast"),
    ("terminated", [True, False], r"terminated: expected shape \(\)"),
])
def test_bad_single_add_leaves_buffer_intact(field, value, message):
    buf = _filled(3)
    before = {f: getattr(buf, f).copy() for f in FIELDS}
    row = {k: v[0] for k, v in _rows(1).items()}
    row[field] = value
    with pytest.raises(ValueError, match=message):
        buf.add(**row)
    assert len(buf) == 3 and buf.total_added == 3
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(buf, f), before[f])


def test_bad_batch_leaves_buffer_intact():
    buf = _filled(3)
    before = buf.obs.copy()
    rows = _rows(4, start=10)
    rows["reward"] = rows["reward"][:3]
    with pytest.raises(ValueError, match=r"reward: expected shape \(4\)"):
        buf.add_batch(**rows)
    rows = _rows(4, start=10)
    rows["action"][2, 1] = np.nan
    with pytest.raises(ValueError, match="action"):
        buf.add_batch(**rows)
    with pytest.raises(ValueError, match=r"obs: expected shape \(N, 3\)"):
        buf.add_batch(**_rows(2, obs_dim=4))
    assert len(buf) == 3
    np.testing.assert_array_equal(buf.obs, before)


def test_constructor_errors():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(3, 2, 0)
    with pytest.raises(ValueError, match="obs_dim"):
        ReplayBuffer(2.5, 2)


def test_sample_is_seeded_and_uniform():
    buf = _filled(50)
    a = buf.sample(32, np.random.default_rng(1))
    b = buf.sample(32, np.random.default_rng(1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a.obs.shape == (32, 3) and a.reward.shape == (32,)
    # rows stay consistent across fields
    np.testing.assert_array_equal(a.obs[:, 0] * 2, a.reward)
    counts = np.bincount((buf.sample(50_000, np.random.default_rng(2)).reward / 2).astype(int),
                         minlength=50)
    assert counts.min() > 800 and counts.max() < 1200  # expected 1000 each
    with pytest.raises(ValueError, match="rng"):
        buf.sample(4, 0)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2).sample(4, np.random.default_rng())
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample(0, np.random.default_rng())


def test_split_fixed_by_seed_and_stable_as_buffer_grows():
    buf = _filled(200, capacity=1000)
    train, val = buf.split(0.2, seed=3)
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == 200
    assert 20 < val.size < 60
    t2, v2 = buf.split(0.2, seed=3)
    np.testing.assert_array_equal(val, v2)
    assert not np.array_equal(val, buf.split(0.2, seed=4)[1])
    buf.add_batch(**_rows(300, start=200))
    _, grown_val = buf.split(0.2, seed=3)
    np.testing.assert_array_equal(grown_val[grown_val < 200], val)
    tiny = _filled(2)
    tr, va = tiny.split(0.01)
    assert tr.size == 1 and va.size == 1
    assert buf.split(0.0)[1].size == 0
    with pytest.raises(ValueError, match="validation_ratio"):
        buf.split(1.0)


def test_minibatches_cover_epoch_once():
    buf = _filled(23)
    rng = np.random.default_rng(0)
    batches = list(buf.minibatches(5, rng))
    assert [b.obs.shape[0] for b in batches] == [5, 5, 5, 5, 3]
    seen = np.sort(np.concatenate([b.reward for b in batches]) / 2)
    np.testing.assert_array_equal(seen, np.arange(23))
    assert len(list(buf.minibatches(5, rng, drop_last=True))) == 4
    sub = list(buf.minibatches(4, rng, indices=np.array([1, 2, 3])))
    assert sorted(sub[0].reward / 2) == [1, 2, 3]
    orders = [np.concatenate([b.reward for b in buf.minibatches(5, np.random.default_rng(s))])
              for s in (7, 7, 8)]
    np.testing.assert_array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], orders[2])


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(3, 2, capacity=7)
    buf.add_batch(**_rows(10))  # wrapped
    path = buf.save(tmp_path / "buf")
    assert path.suffix == ".npz"
    back = ReplayBuffer.load(path)
    assert (back.capacity, len(back), back.total_added) == (7, 7, 10)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(back, f), getattr(buf, f))
    np.testing.assert_array_equal(back.indices(), buf.indices())
    np.testing.assert_array_equal(back.split(0.3)[1], buf.split(0.3)[1])
    back.add(**{k: v[0] for k, v in _rows(1, start=99).items()})
    buf.add(**{k: v[0] for k, v in _rows(1, start=99).items()})
    np.testing.assert_array_equal(back.obs, buf.obs)


def test_load_refuses_other_files(tmp_path):
    buf = _filled(4)
    path = buf.save(tmp_path / "b.npz")
    save_npz(tmp_path / "other.npz", "dynamics_model", 1, {}, {})
    with pytest.raises(FormatError, match="expected a 'replay_buffer'"):
        ReplayBuffer.load(tmp_path / "other.npz")
    save_npz(tmp_path / "v9.npz", "replay_buffer", 9, {}, {})
    with pytest.raises(FormatError, match="version 9"):
        ReplayBuffer.load(tmp_path / "v9.npz")
    arrays = {f: getattr(buf, f) for f in FIELDS}
    header = {"obs_dim": 3, "act_dim": 2, "capacity": 100, "size": 4, "pos": 4, "total_added": 4}
    save_npz(tmp_path / "short.npz", "replay_buffer", 1, header, {**arrays, "reward": np.zeros(3, np.float32)})
    with pytest.raises(FormatError, match="'reward'"):
        ReplayBuffer.load(tmp_path / "short.npz")
    save_npz(tmp_path / "nohdr.npz", "replay_buffer", 1, {"obs_dim": 3}, arrays)
    with pytest.raises(FormatError, match="header"):
        ReplayBuffer.load(tmp_path / "nohdr.npz")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(FormatError, match="corrupt"):
        ReplayBuffer.load(path)


def test_trajectories_cut_at_episode_ends_and_gaps():
    buf = ReplayBuffer(1, 1, capacity=8)
    # episode A: 0->1->2 (truncated), episode B: 10->11, then a gap: 20->21 (no flags)
    obs = np.array([[0], [1], [10], [20]], np.float32)
    nxt = np.array([[1], [2], [11], [21]], np.float32)
    buf.add_batch(obs, obs * 0, nxt, np.zeros(4), truncated=[False, True, False, False])
    traj = buf.trajectories()
    assert [t[0][:, 0].tolist() for t in traj] == [[0, 1, 2], [10, 11], [20, 21]]
    assert [t[1].shape for t in traj] == [(2, 1), (1, 1), (1, 1)]
    buf.add_batch(obs + 100, obs * 0, nxt + 100, np.zeros(4), terminated=[False, True, False, False])
    buf.add(np.array([121.0]), [0.0], [122.0], 0.0)  # wraps: row 0->1 is gone, 121 continues 120
    firsts = [t[0][0, 0] for t in buf.trajectories()]
    assert firsts == [1, 10, 20, 100, 110, 120]
    assert buf.trajectories()[-1][0][:, 0].tolist() == [120, 121, 122]
    assert ReplayBuffer(1, 1).trajectories() == []
