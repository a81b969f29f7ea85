"""`--algo worldmodels`: the staged run (collect, vae, mdnrnn, controller) on the pixel Pendulum at
tiny sizes: its stages, exact resume after an interruption anywhere, the dream and real
fitness, evaluation, plots, and the errors of bad settings."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("pygame")

from fastmbrl.algorithms.evaluate import evaluate  # noqa: E402
from fastmbrl.algorithms.rundir import read_metrics  # noqa: E402
from fastmbrl.algorithms.worldmodels import (CMAES_FILE, CONTROLLER_FILE, LATENTS_FILE,  # noqa: E402
                                             MDNRNN_FILE, VAE_FILE, WorldModelsAgent,
                                             WorldModelsRun, read_latents, world_model_strip)
from fastmbrl.cli import main  # noqa: E402
from fastmbrl.errors import FastMBRLError  # noqa: E402
from fastmbrl.models.vae import ConvVAE  # noqa: E402

TINY = dict(episodes=4, episode_length=24, frame_size=16, z_size=4,
            vae={"enc_channels": [4, 8], "enc_kernels": [4, 4], "dense_size": 16,
                 "dec_channels": [8, 3], "dec_kernels": [6, 6]},
            vae_epochs=2, vae_batch_size=20, rnn_hidden=6, n_mix=2, rnn_epochs=2, seq_len=10,
            rnn_batch_size=2, generations=3, eval_every=2, eval_episodes=2, rollouts=2,
            workers=1)
STAGES = ["collect", "vae", "vae", "mdnrnn", "mdnrnn", "controller", "controller", "controller"]


def _rows(out):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(out)]


def _finals(out):
    return (np.load(out / CONTROLLER_FILE)["params"], np.load(out / CMAES_FILE)["mean"],
            _rows(out))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("wm") / "run"
    WorldModelsRun.run("Pendulum-v1", out, log=lambda m: None, **TINY)
    return out


def test_the_stages_run_in_order_and_leave_their_files(finished):
    rows = read_metrics(finished)
    assert [r["stage"] for r in rows] == STAGES
    assert [r["iteration"] for r in rows] == list(range(1, 9))
    collect = rows[0]
    assert collect["episodes"] == 4 and collect["frames"] == 4 * 25
    assert collect["env_steps"] == 4 * 24
    assert [r["epoch"] for r in rows[1:5]] == [1, 2, 1, 2]
    assert [r["generation"] for r in rows[5:]] == [1, 2, 3]
    # C's mean is run on real episodes every eval_every generations and at the last
    assert ["mean_return" in r for r in rows[5:]] == [False, True, True]
    # every real episode counts: 3 generations x popsize x 2 rollouts, 2 evaluations x 2
    popsize = 4 + int(3 * np.log(1 * (4 + 6) + 1))
    assert rows[-1]["env_steps"] == 4 * 24 + (3 * popsize * 2 + 2 * 2) * 24
    for f in (VAE_FILE, LATENTS_FILE, MDNRNN_FILE, CMAES_FILE, CONTROLLER_FILE):
        assert (finished / f).exists(), f
    mu, logvar = read_latents(finished / LATENTS_FILE)
    vae = ConvVAE.load(finished / VAE_FILE)
    from fastmbrl.data.frames import FrameStore

    store = FrameStore.load(finished / "frames")
    want_mu, want_lv = vae.encode(store.frames)
    np.testing.assert_array_equal(mu, want_mu)
    np.testing.assert_array_equal(logvar, want_lv)
    assert json.loads((finished / "state.json").read_text())["stage"] == "done"


def test_an_interrupted_run_resumes_to_the_same_end(finished, tmp_path):
    want = _finals(finished)
    for stop_at in (1, 3, 5, 7):  # after collect, inside V's and M's epochs, inside C
        out = tmp_path / f"stop{stop_at}"
        lines = []

        def log(msg, stop_at=stop_at):
            lines.append(msg)
            if len(lines) == stop_at:
                raise KeyboardInterrupt  # before the iteration's commit: it is lost

        with pytest.raises(KeyboardInterrupt):
            WorldModelsRun.run("Pendulum-v1", out, log=log, **TINY)
        assert len(read_metrics(out)) == stop_at - 1
        run = WorldModelsRun.resume(out, log=lambda m: None)
        run.train()
        got = _finals(out)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2] == want[2]


def test_a_finished_run_resumes_to_nothing_left(finished, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    run = WorldModelsRun.resume(out, log=lambda m: None)
    assert run.finished()
    assert run.train() == read_metrics(finished)


def test_evaluation_runs_the_saved_agent(finished):
    from fastmbrl.algorithms.base import run_episode

    result = evaluate(finished, episodes=2, seed=7)
    agent = WorldModelsAgent.load(finished)
    env = agent.task.make_env()
    want = []
    for i in range(2):
        agent.reset()
        want.append(run_episode(env, agent.act, 7 + i)[0])
    env.close()
    np.testing.assert_allclose(result["returns"], want)
    assert result["task"] == "Pendulum-v1" and result["planner"] == "controller"
    with pytest.raises(FastMBRLError, match="no planner settings"):
        evaluate(finished, episodes=1, planner="cem")


def test_the_strip_dreams_under_the_episodes_actions(finished):
    strip = world_model_strip(finished, frames=4, stride=3)
    assert strip["real"].shape == (4, 16, 16, 3) and strip["real"].dtype == np.uint8
    assert strip["recon"].shape == strip["dream"].shape == (4, 16, 16, 3)
    assert list(strip["steps"]) == [0, 3, 6, 9]
    vae = ConvVAE.load(finished / VAE_FILE)
    mu, _ = vae.encode(strip["real"][:1])
    np.testing.assert_allclose(strip["dream"][0], vae.decode(mu)[0], atol=1e-6)  # z_0 itself
    assert np.isfinite(strip["dream"]).all()
    assert not np.allclose(strip["dream"][1], strip["dream"][3])


def test_the_dream_scores_the_population(tmp_path):
    out = tmp_path / "dream"
    WorldModelsRun.run("Pendulum-v1", out, log=lambda m: None,
                       **{**TINY, "train_in": "dream", "generations": 2, "dream_horizon": 15})
    rows = read_metrics(out)
    ctl = [r for r in rows if r["stage"] == "controller"]
    assert len(ctl) == 2 and "mean_return" in ctl[-1]
    # the dream takes no environment step: only the collection and the last evaluation do
    assert ctl[-1]["env_steps"] == 4 * 24 + 2 * 24
    # M's reward head summed over 15 dreamed steps, not the real return of 24 steps
    assert ctl[0]["fitness_mean"] != pytest.approx(ctl[-1]["mean_return"])


def test_workers_split_the_collection_and_the_episodes_alike(finished, tmp_path):
    out = tmp_path / "two"
    WorldModelsRun.run("Pendulum-v1", out, log=lambda m: None, **{**TINY, "workers": 2})
    got, want = _finals(out), _finals(finished)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[2] == want[2]


def _cli_args(settings):
    args = []
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}",
                 json.dumps(value) if isinstance(value, dict) else str(value)]
    return args


def test_the_learning_script_trains_once_then_only_evaluates(tmp_path, capsys):
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "worldmodels_learning.py"
    spec = importlib.util.spec_from_file_location("worldmodels_learning", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "bench"
    argv = ["Pendulum-v1", "--out", str(out), "--episodes", "2", "--seed", "70", "--json", "--",
            "--quiet", *_cli_args({**TINY, "generations": 2})]
    assert script.main(argv) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    rows = read_metrics(out)
    assert got["stage_wall_s"] == pytest.approx(
        {s: sum(r["wall_s"] for r in rows if r["stage"] == s) for s in script.STAGES})
    assert got["curve"] == [[2, rows[-1]["mean_return"]]]
    want = evaluate(out, 2, 70)
    assert got["returns"] == want["returns"] and got["mean_return"] == want["mean_return"]
    assert got["target"] is None and got["reached"] is None
    assert script.main(argv) == 0  # finished: evaluated again, not trained
    assert read_metrics(out) == rows
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["returns"] == want["returns"]


def test_the_cli_trains_evaluates_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "cli"
    args = ["train", "Pendulum-v1", "--algo", "worldmodels", "--out", str(out), "--quiet",
            *_cli_args({**TINY, "generations": 1})]
    assert main(args) == 0
    assert "evaluate with: fastmbrl eval" in capsys.readouterr().out
    assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1
    assert main(["plot", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("learning_curve.png", "world_model.png"):
        assert (out / name).stat().st_size > 1000 and name in printed
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # finished: nothing to do


@pytest.mark.parametrize("settings, message", [
    ({"vae": {"enc_channel": [4]}}, "unknown key"),
    ({"vae": {**TINY["vae"], "dec_kernels": [5, 5]}}, "vae: dec_kernels: the decoder makes"),
    ({"train_in": "sky"}, "unknown train_in"),
    ({"popsize": 1}, "popsize must be an integer >= 2"),
    ({"rollouts": 0}, "rollouts must be a positive integer"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, settings, message):
    out = tmp_path / "bad"
    with pytest.raises(FastMBRLError, match=message):
        WorldModelsRun.start("Pendulum-v1", out, log=lambda m: None, **{**TINY, **settings})
    assert not out.exists()


def test_a_run_needs_a_pixel_task_and_a_directory(tmp_path):
    with pytest.raises(FastMBRLError, match="unknown pixel task 'Hopper-v5'"):
        WorldModelsRun.start("Hopper-v5", tmp_path / "h", **TINY)
    with pytest.raises(FastMBRLError, match="give it a run directory"):
        WorldModelsRun.start("Pendulum-v1", None, **TINY)


def test_car_racing_c_at_zero_drives_without_braking(tmp_path):
    pytest.importorskip("Box2D")
    from fastmbrl.models.wm_controller import num_params

    run = WorldModelsRun.start("CarRacing-v3", tmp_path / "car", **TINY)
    c = run.controller(np.zeros(num_params(4, 6, 3)))  # where CMA-ES starts
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(c.act(rng.standard_normal(4), rng.standard_normal(6)),
                                  [0.0, 0.5, 0.0])  # straight, half gas, no brake
    assert c.act(np.zeros(4), np.zeros(6))[2] == 0.0
    c.params[-1] = 0.5  # the brake's bias: tanh(0.5) itself
    np.testing.assert_allclose(c.act(np.zeros(4), np.zeros(6))[2], np.tanh(0.5), rtol=1e-6)


def _with_v_and_m(finished, out):
    """A new run directory `out` holding the finished run's frames, V and M."""
    import shutil

    out.mkdir()
    shutil.copytree(finished / "frames", out / "frames")
    for f in (VAE_FILE, MDNRNN_FILE):
        shutil.copy(finished / f, out / f)
    return out


def test_outputs_placed_before_a_stage_skip_it(finished, tmp_path):
    import shutil

    out = _with_v_and_m(finished, tmp_path / "dream-only")
    lines = []
    WorldModelsRun.run("Pendulum-v1", out, log=lines.append,
                       **{**TINY, "train_in": "dream", "generations": 1})
    rows = read_metrics(out)
    assert [r["stage"] for r in rows] == ["collect", "vae", "mdnrnn", "controller"]
    assert rows[1]["given"] and "vae_loss" not in rows[1] and rows[1]["epoch"] == 2
    assert rows[2]["given"] and "rnn_loss" not in rows[2]
    assert "was there already, trained 2 epochs; kept as it is" in lines[1]
    np.testing.assert_array_equal(np.load(out / MDNRNN_FILE)["W"],
                                  np.load(finished / MDNRNN_FILE)["W"])
    if importlib.util.find_spec("matplotlib"):  # the kept V and M are said so, not left blank
        import warnings

        from fastmbrl.cli.plot import worldmodels_figure
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig = worldmodels_figure(out)
        notes = {ax.get_gid(): [t.get_text() for t in ax.texts] for ax in fig.axes}
        assert notes == {"vae": ["given, not trained in this run"],
                         "mdnrnn": ["given, not trained in this run"], "controller": []}
    # a controller placed there is where CMA-ES starts (a dream's C refined on real episodes)
    from fastmbrl.models.wm_controller import WorldModelController
    given = WorldModelController.load(finished / CONTROLLER_FILE)
    real = tmp_path / "from-a-controller"
    shutil.copytree(out, real, ignore=shutil.ignore_patterns("*.json", "*.jsonl", "*.csv",
                                                              CMAES_FILE, LATENTS_FILE, ".lock"))
    shutil.copy(finished / CONTROLLER_FILE, real / CONTROLLER_FILE)
    lines = []

    def stop_in_c(msg):
        lines.append(msg)
        if msg.startswith("C generation"):
            raise KeyboardInterrupt  # before the first generation's commit

    with pytest.raises(KeyboardInterrupt):
        WorldModelsRun.run("Pendulum-v1", real, log=stop_in_c, **{**TINY, "generations": 1})
    assert read_metrics(real)[-1]["controller_given"]
    assert f"CMA-ES starts from {real / CONTROLLER_FILE}" in lines[-2]
    np.testing.assert_allclose(np.load(real / CMAES_FILE)["mean"], given.params, rtol=1e-6)
    with_other_bounds = tmp_path / "other-bounds"
    shutil.copytree(real, with_other_bounds)
    (with_other_bounds / CMAES_FILE).unlink()
    for f in ("config.json", "state.json", "metrics.jsonl", "metrics.csv"):
        (with_other_bounds / f).unlink(missing_ok=True)
    WorldModelController(given.z_dim, given.hidden, given.act_dim, [-1.0], [1.0],
                         given.params).save(with_other_bounds / CONTROLLER_FILE)
    with pytest.raises(FastMBRLError, match="wm_controller.npz was not trained with this run's "
                                            "settings .C's sizes .*, action bounds or clipped"):
        WorldModelsRun.run("Pendulum-v1", with_other_bounds, log=lambda m: None,
                           **{**TINY, "generations": 1})
    assert not read_metrics(with_other_bounds)  # refused before any stage ran
    # a V of other sizes is refused, naming the file
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(finished / "frames", other / "frames")
    shutil.copy(finished / VAE_FILE, other / VAE_FILE)
    with pytest.raises(FastMBRLError, match="vae.npz was not trained with this run's settings"):
        WorldModelsRun.run("Pendulum-v1", other, log=lambda m: None, **{**TINY, "z_size": 5})


def test_stalled_search_episodes_end_early_and_evaluations_run_whole(finished, tmp_path):
    out = _with_v_and_m(finished, tmp_path / "stalls")
    # the pixel Pendulum earns no positive reward: each search episode ends after 5 steps
    WorldModelsRun.run("Pendulum-v1", out, log=lambda m: None,
                       **{**TINY, "generations": 1, "stall_steps": 5})
    rows = read_metrics(out)
    popsize = 4 + int(3 * np.log(1 * (4 + 6) + 1))
    assert rows[-1]["stage"] == "controller" and "mean_return" in rows[-1]
    assert rows[-1]["env_steps"] - rows[-2]["env_steps"] == popsize * 2 * 5 + 2 * 24
    with pytest.raises(FastMBRLError, match="stall_steps cuts real search episodes"):
        WorldModelsRun.run("Pendulum-v1", tmp_path / "dream", log=lambda m: None,
                           **{**TINY, "train_in": "dream", "stall_steps": 5})
