"""What a run shows besides its own files: metrics.csv (the committed rows as a table), the
TensorBoard event files of `train --tensorboard` (each committed iteration once, after a kill and
a resume too) and the videos of `eval --video`."""
import json
import math
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl import Controller, DynamicsModel, FastMBRLError, Task, register_task  # noqa: E402
from fastmbrl.algorithms.evaluate import evaluate  # noqa: E402
from fastmbrl.algorithms.mbrl import MBRLRun  # noqa: E402
from fastmbrl.algorithms.rundir import read_metrics  # noqa: E402
from fastmbrl.cli import main  # noqa: E402
from fastmbrl.errors import MissingExtraError  # noqa: E402
from tests.reference import metrics_table, read_csv_table, tensorboard_scalars  # noqa: E402

QUIET = dict(log=lambda m: None)
MBRL = dict(steps=500, random_steps=100, steps_per_iteration=100, episode_length=50, horizon=4,
            num_samples=16, hidden=(8,), epochs=1, batch_size=32, planner="rs")
TINY = ["--planner", "rs", "--steps", "300", "--random-steps", "100", "--steps-per-iteration",
        "100", "--horizon", "4", "--num-samples", "16", "--hidden", "8", "--epochs", "1",
        "--quiet"]


def _stop_at(iteration):
    """A log that interrupts the run as `iteration` finishes, before it commits."""
    def log(msg):
        if msg.startswith(f"iteration {iteration}:"):
            raise KeyboardInterrupt
    return log


# -- metrics.csv ----------------------------------------------------------------------------------
def test_metrics_csv_is_the_committed_rows_as_a_table(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "Pendulum-v1", *TINY, "--out", str(out)]) == 0
    rows = read_metrics(out)
    header, cells = read_csv_table(out / "metrics.csv")
    assert (header, cells) == metrics_table(rows)
    assert header[:2] == ["iteration", "env_steps"] and len(cells) == len(rows) == 2
    # list fields are left out; numbers read back exactly
    assert "episode_returns" in rows[0] and "episode_returns" not in header
    col = header.index("mean_return")
    assert [float(c[col]) for c in cells] == [r["mean_return"] for r in rows]
    assert {c[header.index("last_episode_cut")] for c in cells} <= {"true", "false"}


def test_metrics_csv_follows_a_resume_and_leaves_out_an_uncommitted_iteration(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        MBRLRun.run("Pendulum-v1", out, seed=2, log=_stop_at(3), **MBRL)
    assert read_csv_table(out / "metrics.csv") == metrics_table(read_metrics(out))
    assert len(read_metrics(out)) == 2
    MBRLRun.resume(out, **QUIET).train()
    rows = read_metrics(out)
    assert len(rows) == 4 and read_csv_table(out / "metrics.csv") == metrics_table(rows)


def test_a_string_column_and_a_missing_value_in_the_table(tmp_path):
    """MB-MF's rows carry their phase; a row without a value leaves its cell empty."""
    out = tmp_path / "run"
    args = ["train", "Pendulum-v1", "--algo", "mbmf", "--steps", "700", "--mbrl-steps", "200",
            "--random-steps", "100", "--steps-per-iteration", "100", "--planner", "rs",
            "--horizon", "4", "--num-samples", "16", "--hidden", "8", "--epochs", "1",
            "--bc-epochs", "1", "--dagger-rounds", "1", "--dagger-steps", "50",
            "--trpo-steps-per-iteration", "150", "--trpo-hidden", "8", "--value-hidden", "8",
            "--value-epochs", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    rows = read_metrics(out)
    header, cells = read_csv_table(out / "metrics.csv")
    assert (header, cells) == metrics_table(rows)
    phases = [c[header.index("phase")] for c in cells]
    assert phases[0] == "mbrl" and "bc" in phases and phases[-1] == "trpo"
    bc = phases.index("bc")
    assert rows[bc]["mean_return"] is None and cells[bc][header.index("mean_return")] == ""


# -- TensorBoard ----------------------------------------------------------------------------------
def _expected_scalars(rows):
    """{tag: [(env_steps, value as float32)]} of every numeric field of the committed rows."""
    want = {}
    for r in rows:
        for k, v in r.items():
            if k in ("iteration", "env_steps") or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and math.isfinite(v):
                want.setdefault(k, []).append((r["env_steps"], float(np.float32(v))))
    return want


def _readers():
    """The reader of tests/reference.py, and TensorBoard's own where it is installed."""
    yield "reference", tensorboard_scalars
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return

    def accumulated(logdir):
        acc = EventAccumulator(str(logdir))
        acc.Reload()
        return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    yield "tensorboard", accumulated


def _shows_each_committed_iteration_once(out):
    want = _expected_scalars(read_metrics(out))
    assert "mean_return" in want and len(want["mean_return"]) == len(read_metrics(out))
    for name, read in _readers():
        assert read(out / "tensorboard") == want, name


def _cut_points_after(logdir, step):
    """Truncate the event files in the middle of the first record of `step`'s points, as a kill
    does before the writer's thread wrote them."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (size,) = struct.unpack_from("<Q", data, pos)
            event = Event.FromString(data[pos + 12:pos + 12 + size])
            if event.summary.value and event.step >= step:
                path.write_bytes(data[:pos + 7])
                return
            pos += 16 + size
    raise AssertionError(f"no point at step {step}")


def test_tensorboard_log_holds_each_committed_iteration_once_after_kills(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    # killed as iteration 3 finishes (before it commits), and the last committed iteration's
    # points never reached the file
    with pytest.raises(KeyboardInterrupt):
        MBRLRun.run("Pendulum-v1", out, seed=2, log=_stop_at(3), tensorboard=True, **MBRL)
    rows = read_metrics(out)
    assert len(rows) == 2
    _cut_points_after(out / "tensorboard", rows[-1]["env_steps"])
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # remembers --tensorboard
    assert len(read_metrics(out)) == 4 and len(list((out / "tensorboard").iterdir())) == 2
    _shows_each_committed_iteration_once(out)


def test_tensorboard_hides_points_past_the_commit(tmp_path):
    """A run directory restored from a copy taken at iteration 2 beside the event files of the
    run that went on to iteration 4: TensorBoard shows the retrained iterations 3 and 4 once."""
    pytest.importorskip("tensorboardX")
    out, copy = tmp_path / "run", tmp_path / "copy"
    with pytest.raises(KeyboardInterrupt):
        MBRLRun.run("Pendulum-v1", out, seed=2, log=_stop_at(3), tensorboard=True, **MBRL)
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("tensorboard"))
    MBRLRun.resume(out, **QUIET).train()
    assert len(tensorboard_scalars(out / "tensorboard")["mean_return"]) == 4
    shutil.move(out / "tensorboard", copy / "tensorboard")
    MBRLRun.resume(copy, **QUIET).train()
    _shows_each_committed_iteration_once(copy)


def test_tensorboard_needs_its_extra_and_is_not_changed_by_a_resume(tmp_path, monkeypatch,
                                                                     capsys):
    out = tmp_path / "run"
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # not installed
    assert main(["train", "Pendulum-v1", *TINY, "--out", str(out), "--tensorboard"]) == 2
    assert "pip install 'fastmbrl[tensorboard]'" in capsys.readouterr().err
    assert not out.exists()  # refused before the run directory was started
    with pytest.raises(MissingExtraError, match="tensorboard"):
        MBRLRun.start("Pendulum-v1", out, tensorboard=True, **QUIET, **MBRL)
    monkeypatch.undo()
    assert main(["train", "Pendulum-v1", *TINY, "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out), "--tensorboard"]) == 2
    assert "drop --tensorboard" in capsys.readouterr().err
    assert not (out / "tensorboard").exists()
    with pytest.raises(FastMBRLError, match="needs a run directory"):
        MBRLRun.start("Pendulum-v1", None, tensorboard=True, **QUIET, **MBRL)


# -- eval --video ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pendulum_controller(tmp_path_factory):
    """An untrained controller: enough to act, and fast to make."""
    d = tmp_path_factory.mktemp("ctrl") / "controller"
    model = DynamicsModel(3, 1, hidden=(8,), seed=0)
    Controller(model, "Pendulum-v1", planner="rs", horizon=4, num_samples=16).save(d)
    return d


def test_eval_records_each_episode_as_a_video(pendulum_controller, tmp_path, capsys):
    pytest.importorskip("moviepy")
    videos = tmp_path / "videos"
    assert main(["eval", str(pendulum_controller), "--episodes", "1", "--json", "--video",
                 str(videos)]) == 0
    result = json.loads(capsys.readouterr().out)
    path = videos / "eval-episode-0.mp4"
    assert result["videos"] == [str(path)] and sorted(p.name for p in videos.iterdir()) == \
        [path.name]
    data = path.read_bytes()
    assert len(data) > 1000 and data[4:8] == b"ftyp"  # an MP4 file
    import imageio.v2 as imageio  # moviepy's own reader of videos

    with imageio.get_reader(str(path)) as reader:  # (its length hint is not a count)
        shapes = [frame.shape for frame in reader]
    assert len(shapes) >= 190 and len(shapes[0]) == 3  # a 200-step episode, frame by frame
    # recording does not change the episode
    assert evaluate(pendulum_controller, episodes=1)["returns"] == result["returns"]


def test_eval_video_refusals(pendulum_controller, tmp_path, monkeypatch):
    pytest.importorskip("moviepy")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "eval-episode-0.mp4").write_bytes(b"mine")
    with pytest.raises(FastMBRLError, match="already holds eval-episode-0.mp4"):
        evaluate(pendulum_controller, episodes=1, video=videos)
    assert (videos / "eval-episode-0.mp4").read_bytes() == b"mine"
    with pytest.raises(FastMBRLError, match="is a file"):
        evaluate(pendulum_controller, episodes=1, video=videos / "eval-episode-0.mp4")
    # an environment without image rendering
    import gymnasium as gym

    from fastmbrl.tasks import pendulum_reward

    class Blind(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        action_space = gym.spaces.Box(-2, 2, (1,), np.float32)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(3, np.float32), {}

        def step(self, action):
            return np.zeros(3, np.float32), 0.0, False, True, {}

    task = register_task(Task.from_env(Blind, pendulum_reward, name="BlindPendulum-v0"))
    blind = tmp_path / "blind"
    Controller(DynamicsModel(3, 1, hidden=(8,)), task, planner="rs", horizon=4,
               num_samples=16).save(blind)
    with pytest.raises(FastMBRLError, match="cannot render images"):
        evaluate(blind, episodes=1, video=tmp_path / "blind-videos")
    assert not (tmp_path / "blind-videos").exists()
    monkeypatch.setitem(sys.modules, "moviepy", None)  # not installed
    with pytest.raises(MissingExtraError, match=r"fastmbrl\[video\]"):
        evaluate(pendulum_controller, episodes=1, video=tmp_path / "new")
    assert not (tmp_path / "new").exists()
