"""`fastmbrl sweep` and `fastmbrl report`: a tiny Pendulum sweep (2 planners x 2 seeds) through
worker processes and Ray, killed and resumed, with a failing job; the report's numbers."""
import json
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl.cli import main  # noqa: E402
from fastmbrl.cli.report import aggregate  # noqa: E402
from fastmbrl.cli.sweep import expand, read_spec  # noqa: E402
from fastmbrl.errors import FastMBRLError  # noqa: E402

TINY = ["--set", "task=Pendulum-v1", "--set", "steps=300", "--set", "random_steps=200",
        "--set", "steps_per_iteration=50", "--set", "episode_length=50", "--set", "horizon=8",
        "--set", "num_samples=32", "--set", "hidden=[[16,16]]", "--set", "epochs=2"]
GRID = ["--set", "planner=rs,cem", "--set", "seed=0,1"]
NAMES = ["Pendulum-v1-rs-s0", "Pendulum-v1-rs-s1", "Pendulum-v1-cem-s0", "Pendulum-v1-cem-s1"]
#: what a seed's result is (timings aside)
RESULT_KEYS = ("iteration", "env_steps", "episode_returns", "mean_return", "train_loss",
               "val_loss")


def results(root, name):
    rows = [json.loads(line) for line in (Path(root) / name / "metrics.jsonl").read_text()
            .splitlines()]
    return [{k: r[k] for k in RESULT_KEYS} for r in rows]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "local"
    assert main(["sweep", "--out", str(root), *TINY, *GRID, "--jobs", "2",
                 "--threads-per-job", "1"]) == 0
    return root


def test_a_local_sweep_runs_every_job_into_its_run_directory(local_sweep, capsys):
    for name in NAMES:
        rows = results(local_sweep, name)
        assert rows[-1]["env_steps"] == 300 and rows[-1]["iteration"] == len(rows)
        cfg = json.loads((local_sweep / name / "config.json").read_text())["config"]
        assert (cfg["planner"], cfg["seed"]) == (name.split("-")[2], int(name[-1]))
    # each job is an ordinary run directory
    assert main(["eval", str(local_sweep / NAMES[2]), "--episodes", "1"]) == 0
    before = {n: (local_sweep / n / "metrics.jsonl").read_bytes() for n in NAMES}
    capsys.readouterr()
    assert main(["sweep", "--out", str(local_sweep), *TINY, *GRID]) == 0
    out = capsys.readouterr().out
    assert all(f"skip {n}: finished" in out for n in NAMES) and "0 ran, 4 skipped" in out
    assert before == {n: (local_sweep / n / "metrics.jsonl").read_bytes() for n in NAMES}


def test_a_sweep_killed_mid_run_resumes_to_the_same_results(local_sweep, tmp_path):
    root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fastmbrl", "sweep", "--out", str(root), *TINY, *GRID,
           "--jobs", "1", "--threads-per-job", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for name in NAMES:
            state = root / name / "state.json"
            try:
                steps = json.loads(state.read_text())["env_steps"]
            except (OSError, ValueError, KeyError):
                continue
            if steps < 300:
                victim = name
                break
        time.sleep(0.02)
    assert victim is not None, "the sweep ended before it could be killed mid-job"
    os.kill(proc.pid, signal.SIGKILL)  # the sweep process only: its worker must follow it
    proc.wait()
    holder = int((root / victim / ".lock").read_text().split()[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(holder, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker went on training after its sweep was killed")
    committed = results(root, victim) if (root / victim / "metrics.jsonl").exists() else []
    assert main(["sweep", "--out", str(root), *TINY, *GRID, "--jobs", "1"]) == 0
    after = results(root, victim)
    assert after[:len(committed)] == committed  # nothing committed was lost or redone
    for name in NAMES:  # one job at a time, interrupted or not: the same results as two at once
        assert results(root, name) == results(local_sweep, name), name


def test_a_failing_job_is_reported_while_the_others_finish(tmp_path, capsys):
    root = tmp_path / "failing"
    root.mkdir()
    (root / "Pendulum-v1-num_samples48-s0").write_text("in the way")  # fails in its worker
    code = main(["sweep", "--out", str(root), *TINY, "--set", "planner=rs",
                 "--set", "num_samples=32,48,0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED Pendulum-v1-num_samples0-s0: num_samples must be a positive integer" in out
    assert "FAILED Pendulum-v1-num_samples48-s0: " in out
    assert "done Pendulum-v1-num_samples32-s0" in out and "1 ran, 0 skipped, 2 failed" in out
    assert results(root, "Pendulum-v1-num_samples32-s0")[-1]["env_steps"] == 300


def test_ray_gives_the_same_results_per_seed(local_sweep, tmp_path, capsys):
    pytest.importorskip("ray")
    root = tmp_path / "ray"
    assert main(["sweep", "--out", str(root), *TINY, *GRID, "--backend", "ray"]) == 0
    assert "on a local Ray instance" in capsys.readouterr().out
    for name in NAMES:
        assert results(root, name) == results(local_sweep, name), name


def test_report_statistics_are_numpy_s_over_the_seeds(local_sweep, capsys):
    assert main(["report", str(local_sweep), "--json", "--csv"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((local_sweep / "report.json").read_text())
    rows = {g["setting"]: g for g in report["settings"]}
    assert set(rows) == {"rs", "cem"}
    for planner, g in rows.items():
        assert g["task"] == "Pendulum-v1" and g["seeds"] == [0, 1] and g["finished"] == 2
        per_seed = [results(local_sweep, f"Pendulum-v1-{planner}-s{s}") for s in (0, 1)]
        finals = np.array([rows_[-1]["mean_return"] for rows_ in per_seed])
        assert g["final"]["mean"] == pytest.approx(finals.mean())
        assert g["final"]["std"] == pytest.approx(finals.std(ddof=1))
        assert g["final"]["iqm"] == pytest.approx(finals.mean())  # 2 seeds: nothing trimmed
        lo, hi = g["final"]["ci95"]
        assert finals.min() <= lo <= hi <= finals.max()
        for i, point in enumerate(g["curve"]):
            returns = [rows_[i]["mean_return"] for rows_ in per_seed]
            assert point["env_steps"] == per_seed[0][i]["env_steps"]
            assert point["mean"] == pytest.approx(np.mean(returns))
        assert g["plan_ms"] > 0 and g["wall_s"] > 0
    csv_rows = (local_sweep / "report.csv").read_text().splitlines()
    assert csv_rows[0].startswith("task,setting,seeds,finished,final_mean") and len(csv_rows) == 3
    assert main(["report", str(local_sweep), "--png"]) == 0
    table = capsys.readouterr().out
    assert "IQM" in table and "95% CI" in table
    for png in ("report-Pendulum-v1.png", "report-compute.png"):
        assert (local_sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- specs ----------------------------------------------------------------------------------------
def test_a_spec_file_is_a_grid_times_a_list(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('task = "Pendulum-v1"\nsteps = 3000\n[grid]\nseed = [0, 1]\n'
                    '[[list]]\nplanner = "cem"\nnum_samples = 100\n'
                    '[[list]]\nplanner = "mppi"\nnum_samples = 200\n')
    assert main(["sweep", str(spec), "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    names = [line.split(":")[0] for line in out.splitlines()[:-1]]
    assert names == ["Pendulum-v1-cem-num_samples100-s0", "Pendulum-v1-mppi-num_samples200-s0",
                     "Pendulum-v1-cem-num_samples100-s1", "Pendulum-v1-mppi-num_samples200-s1"]
    assert all(line.endswith(": new") for line in out.splitlines()[:-1])
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    # the JSON spelling, and --set over the spec's grid
    js = tmp_path / "spec.json"
    js.write_text(json.dumps({"task": "Pendulum-v1", "grid": {"seed": [0, 1, 2]}}))
    jobs = expand(read_spec(str(js), ["seed=5", "planner=rs,icem"]))
    assert [n for n, _ in jobs] == ["Pendulum-v1-rs-s5", "Pendulum-v1-icem-s5"]
    assert jobs[1][1] == {"task": "Pendulum-v1", "seed": 5, "planner": "icem"}


@pytest.mark.parametrize("text, sets, message", [
    ('task = "Pendulum-v1"\nplaner = "cem"\n', [], "unknown key 'planer'"),
    ('task = "Pendulum-v1"\n[grid]\nseed = 3\n', [], "grid.seed must be a non-empty list"),
    ('task = "Pendulum-v1"\n[grid]\nplanner = ["cem"]\n[[list]]\nplanner = "rs"\n', [],
     "'planner' is given twice"),
    ('steps = 3000\n', [], "no task"),
    ('task = "Pendulum-v1"\n', ["seed=a"], "--set seed: expected an integer, got 'a'"),
    ('task = "Pendulum-v1"\n', ["planner=cem,rsx"], "--set planner: 'rsx' is not one of"),
    ('task = "Pendulum-v1"\n', ["horizon"], "expected KEY=VALUE"),
    ('task = "Pendulum-v1"\n', ["out=x"], "unknown key 'out'"),
    ('task = "Pendulum-v1"\n', ["hidden=32,32"], "two jobs would be named"),
])
def test_bad_specs_are_refused_naming_the_key(tmp_path, capsys, text, sets, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    argv = ["sweep", str(spec), "--out", str(tmp_path / "s"), "--dry-run"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_a_directory_holding_other_settings_is_not_touched(local_sweep, tmp_path, capsys):
    root = tmp_path / "other"
    (root / NAMES[0]).mkdir(parents=True)
    cfg = (local_sweep / NAMES[0] / "config.json").read_bytes()
    (root / NAMES[0] / "config.json").write_bytes(cfg.replace(b'"horizon": 8', b'"horizon": 9'))
    assert main(["sweep", "--out", str(root), *TINY, *GRID, "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"{NAMES[0]}: FAILS: " in out and "holds a run of other settings (horizon differ)" in out
    assert (root / NAMES[0] / "config.json").read_bytes() == cfg.replace(b'"horizon": 8',
                                                                          b'"horizon": 9')


def test_sweep_options_are_checked(tmp_path):
    with pytest.raises(FastMBRLError, match="--address applies to --backend ray"):
        from fastmbrl.cli import build_parser
        args = build_parser().parse_args(["sweep", "--out", str(tmp_path), "--set",
                                          "task=Pendulum-v1", "--address", "auto"])
        args._run(args)
    assert main(["sweep", "--out", str(tmp_path / "s")]) == 2


def test_runs_made_before_a_setting_existed_are_resumed_not_refused(local_sweep, tmp_path,
                                                                      capsys):
    """A setting added to fastmbrl since the runs were made takes its default on resume, so the
    rerun skips them; one the sweep itself gives must still agree."""
    root = tmp_path / "old"
    shutil.copytree(local_sweep, root)
    for name in NAMES:
        path = root / name / "config.json"
        meta = json.loads(path.read_text())
        del meta["config"]["particles"]  # as a run of a version without PETS
        path.write_text(json.dumps(meta))
    assert main(["sweep", "--out", str(root), *TINY, *GRID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"{n}: finished" in out for n in NAMES), out
    # and the report groups the older runs with the newer ones of the same setting
    shutil.copytree(local_sweep / NAMES[0], root / "new-rs-s0")
    shutil.rmtree(root / NAMES[0])
    settings = aggregate(root)["settings"]
    assert sorted((g["setting"], len(g["seeds"])) for g in settings) == [("cem", 2), ("rs", 2)]
    assert main(["sweep", "--out", str(root), *TINY, *GRID, "--set", "particles=5",
                 "--dry-run"]) == 1
    assert "particles differ" in capsys.readouterr().out
