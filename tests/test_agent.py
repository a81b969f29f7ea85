"""The MBRL loop, run directories and the CLI, end to end with a tiny budget on Pendulum-v1."""
import json

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl.algorithms import preset  # noqa: E402
from fastmbrl.algorithms.mbrl import MBRLConfig, MBRLRun, train  # noqa: E402
from fastmbrl.algorithms.rundir import read_metrics  # noqa: E402
from fastmbrl.cli import main  # noqa: E402
from fastmbrl.planning.controller import Controller  # noqa: E402
from fastmbrl.errors import FastMBRLError  # noqa: E402

TINY = dict(steps=500, random_steps=200, steps_per_iteration=150, episode_length=150,
            horizon=8, num_samples=64, hidden=(32, 32), epochs=3, batch_size=64)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pendulum"
    run = train("Pendulum-v1", out=out, log=lambda m: None, planner="rs", seed=3, **TINY)
    return out, run


def test_loop_collects_budget_and_logs_iterations(finished_run):
    out, run = finished_run
    assert run.env_steps == TINY["steps"]
    rows = read_metrics(out)
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[-1]["env_steps"] == TINY["steps"]
    for r in rows:
        assert np.isfinite(r["val_loss"]) and r["plan_ms"] > 0 and r["episode_returns"]
    for name in ("config.json", "metrics.jsonl", "model.npz", "controller.json", "buffer.npz",
                 "state.json"):
        assert (out / name).exists(), name


def test_mean_return_leaves_out_an_episode_the_step_budget_cut(tmp_path):
    # Pendulum's own time limit is 200 steps: 250 MPC steps are one whole episode and 50 steps
    run = train("Pendulum-v1", log=lambda m: None, planner="rs", steps=450, random_steps=200,
                steps_per_iteration=250, episode_length=None, horizon=4, num_samples=16,
                hidden=(8,), epochs=1)
    (row,) = run.metrics
    assert row["episode_steps"] == [200, 50] and row["last_episode_cut"] is True
    assert row["mean_return"] == pytest.approx(row["episode_returns"][0], abs=1e-3)
    # a cut episode alone still gives the iteration a mean; an episode_length cap is no cut
    for length, cut in ((None, True), (50, False)):
        run = train("Pendulum-v1", log=lambda m: None, planner="rs", steps=300, random_steps=200,
                    steps_per_iteration=100, episode_length=length, horizon=4, num_samples=16,
                    hidden=(8,), epochs=1)
        (row,) = run.metrics
        assert row["last_episode_cut"] is cut and sum(row["episode_steps"]) == 100
        whole = row["episode_returns"][:-1] if cut and len(row["episode_returns"]) > 1 \
            else row["episode_returns"]
        assert row["mean_return"] == pytest.approx(np.mean(whole), abs=1e-3)


def test_resume_refuses_settings_it_would_ignore(finished_run, capsys):
    out, _ = finished_run
    before = (out / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(out), "--horizon", "3", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "drop --horizon, --seed" in err and "Traceback" not in err
    assert main(["train", "--resume", str(out), "--algo", "trpo", "--gamma", "0.9"]) == 2
    assert "drop --algo, --gamma" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before


def test_saved_controller_acts_as_the_run_planned(finished_run):
    out, run = finished_run
    ctrl = Controller.load(out)
    assert ctrl.settings == run.controller.settings
    obs = np.array([1.0, 0.0, 0.0], np.float32)
    ctrl.reset(11)
    run.controller.reset(11)
    a = ctrl.act(obs)
    assert a.shape == (1,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, run.controller.act(obs))  # the same model and planner
    same = Controller.load(out / "model.npz")
    assert np.array_equal(same.act(obs), Controller.load(out).act(obs))
    with pytest.raises(ValueError, match="obs"):
        ctrl.act(np.zeros(4))


def test_resume_keeps_finished_iterations(tmp_path):
    out = tmp_path / "run"
    calls = {"n": 0}

    def interrupt_in_second_iteration(msg):
        if msg.startswith("  episode") and "iteration 1" in calls:
            raise KeyboardInterrupt
        if msg.startswith("iteration 1:") and "return" in msg:  # the summary line
            calls["iteration 1"] = True

    with pytest.raises(KeyboardInterrupt):
        train("Pendulum-v1", out=out, log=interrupt_in_second_iteration, planner="rs", **TINY)
    first = read_metrics(out)
    assert [r["iteration"] for r in first] == [1]
    run = MBRLRun.resume(out, log=lambda m: None)
    assert run.iteration == 1 and run.env_steps == first[0]["env_steps"]
    run.train()
    rows = read_metrics(out)
    assert rows[0] == first[0]
    assert [r["iteration"] for r in rows] == [1, 2] and run.env_steps == TINY["steps"]
    # a seed fixes the run: an uninterrupted run logs the same episodes and losses
    whole = train("Pendulum-v1", out=tmp_path / "whole", log=lambda m: None, planner="rs", **TINY)
    assert [_outcome(r) for r in whole.metrics] == [_outcome(r) for r in rows]


def _outcome(row):
    """A metrics row without its timings."""
    return {k: v for k, v in row.items() if k not in ("fit_s", "plan_ms", "acting_s", "wall_s")}


def test_config_defaults_and_errors():
    cfg = MBRLConfig(task="Pendulum-v1").resolved()
    assert cfg.planner in ("rs", "cem", "mppi", "icem") and cfg.steps > cfg.random_steps
    with pytest.raises(FastMBRLError, match="unknown planner"):
        MBRLConfig(task="Pendulum-v1", planner="bogus").resolved()
    with pytest.raises(FastMBRLError, match="random_steps"):
        MBRLConfig(task="Pendulum-v1", steps=100, random_steps=100).resolved()
    with pytest.raises(FastMBRLError, match="unknown setting"):
        train("Pendulum-v1", horizn=3)
    with pytest.raises(FastMBRLError, match="No-Such-Task"):
        MBRLConfig(task="No-Such-Task").resolved()
    with pytest.raises(FastMBRLError, match="ensemble_size must be a positive integer"):
        MBRLConfig(task="Pendulum-v1", ensemble_size=0).resolved()
    assert MBRLConfig(task="Pendulum-v1").resolved().shaping is True
    with pytest.raises(FastMBRLError, match="shaping must be True or False"):
        MBRLConfig(task="Pendulum-v1", shaping=1).resolved()
    # model fitting settings come from the task's preset unless given, else from the defaults
    d = preset("mbrl", "InvertedPendulum-v5")
    cfg = MBRLConfig(task="InvertedPendulum-v5").resolved()
    assert (cfg.batch_size, cfg.patience, cfg.epochs) == (
        d["batch_size"], d["patience"], d["epochs"]) != (256, 5, 50)
    assert "ensemble_size" not in d and cfg.ensemble_size == 1
    assert MBRLConfig(task="InvertedPendulum-v5", batch_size=7).resolved().batch_size == 7
    # the preset's planner options apply to the preset's planner only
    assert cfg.planner_options == d["planner_options"] != {}
    other = next(p for p in ("rs", "cem") if p != d["planner"])
    assert MBRLConfig(task="InvertedPendulum-v5", planner=other).resolved().planner_options == {}


def test_cli_ensemble_run_saves_and_reloads_members(tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["train", "Pendulum-v1", "--planner", "rs", "--steps", "400", "--random-steps",
                 "200", "--steps-per-iteration", "200", "--horizon", "6", "--num-samples", "32",
                 "--epochs", "2", "--ensemble-size", "2", "--out", str(out), "--quiet"]) == 0
    ctrl = Controller.load(out)
    assert ctrl.model.ensemble_size == 2 and ctrl.planner.num_members == 2
    assert json.loads((out / "config.json").read_text())["config"]["ensemble_size"] == 2
    assert main(["train", "Pendulum-v1", "--algo", "trpo", "--ensemble-size", "2"]) == 2
    assert "--ensemble-size only apply" in capsys.readouterr().err
    assert main(["train", "Pendulum-v1", "--algo", "trpo", "--no-shaping"]) == 2
    assert "--no-shaping only apply" in capsys.readouterr().err


def test_cli_no_shaping_is_saved_with_the_run(tmp_path, capsys):
    from fastmbrl.tasks import get_task

    task = get_task("InvertedPendulum-v5")
    argv = ["train", "InvertedPendulum-v5", "--planner", "rs", "--steps", "300", "--random-steps",
            "200", "--horizon", "4", "--num-samples", "16", "--epochs", "1"]
    for flags, shaping in (([], True), (["--no-shaping"], False)):
        out = tmp_path / str(shaping)
        assert main(argv + flags + ["--out", str(out)]) == 0
        assert ("shaped objective" in capsys.readouterr().out) is shaping
        assert json.loads((out / "config.json").read_text())["config"]["shaping"] is shaping
        ctrl = Controller.load(out)
        assert ctrl.planner.reward_fn is (task.planning_reward if shaping else task.reward)
        assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["shaped_objective"] is shaping
        # a resumed run keeps the choice
        assert MBRLRun.resume(out, log=lambda m: None).controller.settings["shaping"] is shaping


def test_cli_train_eval_plot(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["train", "Pendulum-v1", "--planner", "cem", "--steps", "400", "--random-steps", "200",
            "--steps-per-iteration", "200", "--horizon", "6", "--num-samples", "32",
            "--epochs", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "fastmbrl eval" in capsys.readouterr().out
    # a second train into the same directory is refused, not overwritten
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["eval", str(out), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["returns"]) == 2
    assert result["shaped_objective"] is False  # Pendulum has no planning reward
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))
    assert result["std_return"] == pytest.approx(np.std(result["returns"]))
    pytest.importorskip("matplotlib")
    assert main(["plot", str(out)]) == 0
    assert (out / "learning_curve.png").stat().st_size > 1000


def test_cli_errors_are_messages(tmp_path, capsys):
    assert main(["train", "No-Such-Task"]) == 2
    err = capsys.readouterr().err
    assert "No-Such-Task" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a fastmbrl run directory" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"run_format": 99, "fastmbrl_version": "9.0"}))
    assert main(["train", "--resume", str(old)]) == 2
    assert "run format 99" in capsys.readouterr().err


def test_cli_trpo_train_eval_and_resume_dispatch(tmp_path, capsys):
    out = tmp_path / "trpo"
    assert main(["train", "Pendulum-v1", "--algo", "trpo", "--steps", "400",
                 "--steps-per-iteration", "200", "--out", str(out), "--quiet"]) == 0
    assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["planner"] == "policy" and len(result["returns"]) == 1
    # resuming a finished TRPO run dispatches to TRPO and has nothing left to do
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert main(["train", "Pendulum-v1", "--algo", "trpo", "--horizon", "5"]) == 2
    assert "only apply to --algo mbrl" in capsys.readouterr().err


@pytest.mark.parametrize("planner", ["mppi", "icem"])
def test_loop_runs_with_every_planner(tmp_path, planner):
    run = train("InvertedPendulum-v5", out=tmp_path / planner, log=lambda m: None, planner=planner,
                steps=300, random_steps=200, steps_per_iteration=100, horizon=5, num_samples=40,
                hidden=(16, 16), epochs=1)
    assert run.env_steps == 300 and run.metrics[-1]["plan_ms"] > 0
    assert Controller.load(tmp_path / planner).settings["planner"] == planner


@pytest.mark.slow
@pytest.mark.parametrize("task", ["MountainCarContinuous-v0", "Reacher-v5", "HalfCheetah-v5",
                                  "Hopper-v5", "Swimmer-v5", "InvertedDoublePendulum-v5",
                                  "Pusher-v5"])
def test_every_task_runs_the_loop_with_its_own_planner_settings(tmp_path, task):
    """Each built-in task's defaults (planner, its options, ensemble, angle inputs) work end to
    end; only the budget and sizes are shrunk."""
    pytest.importorskip("mujoco")
    run = train(task, out=tmp_path / "run", log=lambda m: None, steps=160, random_steps=100,
                steps_per_iteration=60, episode_length=30, horizon=3, num_samples=24,
                hidden=(8,), epochs=1)
    assert run.env_steps == 160 and len(run.metrics) == 1
    ctrl = Controller.load(tmp_path / "run")
    assert ctrl.settings["planner"] == run.config.planner
    assert ctrl.settings["planner_options"] == run.config.planner_options
    assert ctrl.model.angle_obs_dims == ctrl.task.angle_obs_dims
    assert ctrl.act(np.zeros(ctrl.task.obs_dim)).shape == (ctrl.task.act_dim,)


def test_a_step_budget_too_large_for_memory_is_refused_before_anything_is_written(tmp_path):
    from fastmbrl.limits import ResourceLimitError

    with pytest.raises(ResourceLimitError, match="steps=10000000000: the replay buffer"):
        MBRLRun.start("Pendulum-v1", tmp_path / "run", steps=10_000_000_000)
    assert not (tmp_path / "run").exists()


def test_a_random_phase_too_short_to_validate_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FastMBRLError, match="random_steps=1 leaves no transition"):
        MBRLRun.start("Pendulum-v1", tmp_path / "run", steps=400, random_steps=1)
    assert not (tmp_path / "run").exists()
    run = MBRLRun.start("Pendulum-v1", None, steps=3, random_steps=1, validation_ratio=0,
                        steps_per_iteration=2, epochs=1, horizon=2, num_samples=4,
                        planner="rs", log=lambda m: None)
    run.train()
    assert all(r["val_loss"] is None or np.isfinite(r["val_loss"]) for r in run.metrics)


def test_a_config_whose_sizes_disagree_with_the_model_is_refused_before_allocating(
        finished_run, tmp_path):
    import resource
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["hidden"] = [20000, 20000]  # 1.5 GiB of weights, from a 2 KB file
    (out / "config.json").write_text(json.dumps(meta))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FastMBRLError, match="hidden .* disagrees with model.npz"):
        MBRLRun.resume(out, log=lambda m: None)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_a_step_budget_edited_in_config_json_is_refused(finished_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["steps"] += 100  # the buffer holds the old budget: the run could not end
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(FastMBRLError, match="steps .* disagrees with buffer.npz's capacity"):
        MBRLRun.resume(out, log=lambda m: None)
