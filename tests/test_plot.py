"""`fastmbrl plot`: a panel per recorded metric, the random phase as the return curve's first
point, the title, the absolute output path; runs saved before state.json kept the random phase."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from fastmbrl.algorithms.mbrl import MBRLRun, read_random_phase  # noqa: E402
from fastmbrl.cli import main  # noqa: E402
from fastmbrl.cli.plot import learning_figure  # noqa: E402
from fastmbrl.data.buffer import ReplayBuffer  # noqa: E402

OLD_RUN = Path(__file__).parent / "data" / "runs-0881e17" / "mbrl"
# 300 random steps in episodes of at most 120: two whole episodes and one the budget cuts at 60
ARGS = ["--planner", "rs", "--steps", "400", "--random-steps", "300", "--episode-length", "120",
        "--steps-per-iteration", "100", "--horizon", "3", "--num-samples", "8",
        "--hidden", "8", "--epochs", "1", "--batch-size", "64"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "run"
    assert main(["train", "Pendulum-v1", *ARGS, "--out", str(out), "--quiet"]) == 0
    return out


def _axes(fig):
    return {ax.get_gid(): ax for ax in fig.axes}


def _random_episodes(out):
    """Returns and lengths of the first 300 transitions, split where episodes end."""
    buf = ReplayBuffer.load(out / "buffer.npz")
    ends = np.flatnonzero((buf.terminated | buf.truncated)[:300])
    starts = np.r_[0, ends[:-1] + 1]
    return ([float(buf.reward[a:b + 1].sum()) for a, b in zip(starts, ends)],
            [int(b - a + 1) for a, b in zip(starts, ends)])


def test_panels_for_the_recorded_metrics_and_the_random_phase_first(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fig = learning_figure([run_dir], title="my run")
    axes = _axes(fig)
    assert set(axes) == {"return", "model_loss", "plan_ms", "fit_s"}
    assert fig.get_suptitle() == "my run"
    returns, lengths = _random_episodes(run_dir)
    assert lengths == [120, 120, 60]
    curve = axes["return"].lines[0].get_xydata()
    # iteration 0 is the random phase: the mean of its whole episodes (not the cut one)
    assert curve[0] == pytest.approx([300, np.mean(returns[:2])], rel=1e-5)
    assert curve[1:].tolist() == [[r["env_steps"], r["mean_return"]] for r in rows]
    losses = {line.get_label(): line.get_ydata().tolist() for line in axes["model_loss"].lines}
    assert losses == {"train": [r["train_loss"] for r in rows],
                      "validation": [r["val_loss"] for r in rows]}
    assert axes["plan_ms"].lines[0].get_ydata().tolist() == [r["plan_ms"] for r in rows]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["random_phase"]["episode_steps"] == [120, 120, 60]
    assert state["random_phase"]["last_episode_cut"] is True


def test_a_resumed_run_keeps_its_random_phase(run_dir, tmp_path):
    d = tmp_path / "resumed"
    shutil.copytree(run_dir, d)
    before = json.loads((d / "state.json").read_text())["random_phase"]
    config = json.loads((d / "config.json").read_text())
    config["config"]["steps"] = 500  # one more iteration
    (d / "config.json").write_text(json.dumps(config))
    # the buffer's capacity is the budget: give it room as a longer run would have
    buf = ReplayBuffer.load(d / "buffer.npz")
    bigger = ReplayBuffer(buf.obs_dim, buf.act_dim, 500)
    bigger.add_batch(buf.obs, buf.action, buf.next_obs, buf.reward, buf.terminated, buf.truncated)
    bigger.save(d / "buffer.npz")
    run = MBRLRun.resume(d, log=lambda m: None)
    run.train()
    assert json.loads((d / "state.json").read_text())["random_phase"] == before


def test_an_old_run_without_random_phase_takes_it_from_its_buffer(run_dir, tmp_path):
    d = tmp_path / "old"
    shutil.copytree(run_dir, d)
    recorded = read_random_phase(d)
    state = json.loads((d / "state.json").read_text())
    del state["random_phase"]
    (d / "state.json").write_text(json.dumps(state))
    derived = read_random_phase(d)
    assert derived["episode_steps"] == recorded["episode_steps"]
    assert derived["last_episode_cut"] is True
    assert derived["mean_return"] == pytest.approx(recorded["mean_return"], rel=1e-5)
    # a run of fastmbrl 0.1.0: one random episode of 200 steps, then one iteration
    rows = [json.loads(line) for line in (OLD_RUN / "metrics.jsonl").read_text().splitlines()]
    old = tmp_path / "0.1.0"
    shutil.copytree(OLD_RUN, old)
    buf = ReplayBuffer.load(old / "buffer.npz")
    curve = _axes(learning_figure([old]))["return"].lines[0].get_xydata()
    expected = [[200, buf.reward[:200].sum()], [rows[0]["env_steps"], rows[0]["mean_return"]]]
    assert np.allclose(curve, expected, rtol=1e-6)


def test_cli_title_and_absolute_output_path(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(run_dir), "-o", "curve.png", "--title", "T"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'curve.png'}"
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
