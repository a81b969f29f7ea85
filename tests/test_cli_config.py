"""`fastmbrl train --config FILE` and the planner options: an option beats the file, the file
beats the task's preset, the preset beats the default; a run's config.json is a config file."""
from __future__ import annotations

import inspect
import json
import sys

import pytest

pytest.importorskip("gymnasium")

from fastmbrl import Controller  # noqa: E402
from fastmbrl.algorithms import MBRLConfig, preset  # noqa: E402
from fastmbrl.cli import main  # noqa: E402
from fastmbrl.errors import FastMBRLError  # noqa: E402
from fastmbrl.io import read_toml  # noqa: E402
from fastmbrl.planning.planners import PLANNERS  # noqa: E402
from tests.test_cli_errors import refused  # noqa: E402
from tests.test_compat import DATA  # noqa: E402
from tests.test_custom_task import _write as write_task_module  # noqa: E402

# tiny budgets (as in test_hostile_files), with CEM to have planner options to set
TINY = ["--planner", "cem", "--steps", "300", "--random-steps", "200", "--steps-per-iteration",
        "100", "--horizon", "4", "--num-samples", "16", "--hidden", "8", "--epochs", "1",
        "--batch-size", "64"]


def printed(capsys, argv) -> dict:
    """The config entry `fastmbrl train ... --print-config` prints."""
    capsys.readouterr()
    assert main(["train", *argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)["config"]


def write(path, text):
    path.write_text(text)
    return str(path)


# -- precedence -----------------------------------------------------------------------------------
def test_an_option_beats_the_file_which_beats_the_preset(tmp_path, capsys):
    f = write(tmp_path / "run.toml", 'task = "Pendulum-v1"\nseed = 4\nhorizon = 7\nlr = 0.002\n'
                                     'hidden = [32, 16]\n')
    library = MBRLConfig(task="Pendulum-v1").resolved()  # the preset, else the default
    pendulum = preset("mbrl", "Pendulum-v1")
    cfg = printed(capsys, ["--config", f])
    assert (cfg["task"], cfg["seed"], cfg["horizon"], cfg["lr"], cfg["hidden"]) == (
        "Pendulum-v1", 4, 7, 0.002, [32, 16])  # the file's
    assert cfg["horizon"] != pendulum["horizon"] and cfg["hidden"] != list(pendulum["hidden"])
    for name in ("num_samples", "steps", "planner", "activation"):  # in Pendulum's preset
        assert cfg[name] == pendulum[name] == getattr(library, name)
    for name in ("batch_size", "patience", "ensemble_size"):  # in neither: the default
        assert name not in pendulum and cfg[name] == getattr(library, name)

    cfg = printed(capsys, ["--config", f, "--seed", "3", "--lr", "0.005", "--num-samples", "9"])
    assert (cfg["seed"], cfg["lr"], cfg["num_samples"]) == (3, 0.005, 9)  # the options'
    assert (cfg["horizon"], cfg["hidden"]) == (7, [32, 16])  # the rest still the file's


def test_a_task_or_algo_on_the_command_line_beats_the_files(tmp_path, capsys):
    f = write(tmp_path / "run.json", json.dumps({"task": "Pendulum-v1", "algo": "trpo",
                                                 "gamma": 0.8}))
    cfg = printed(capsys, ["--config", f])
    assert (cfg["algo"], cfg["task"], cfg["gamma"]) == ("trpo", "Pendulum-v1", 0.8)
    cfg = printed(capsys, ["InvertedPendulum-v5", "--config", f])
    assert (cfg["task"], cfg["gamma"]) == ("InvertedPendulum-v5", 0.8)
    assert cfg["steps"] == preset("trpo", "InvertedPendulum-v5")["steps"]  # the new task's
    refused(capsys, ["train", "--config", f, "--algo", "mbrl", "--out", str(tmp_path / "o")],
            str(f), "'gamma'", "mbrl")
    assert not (tmp_path / "o").exists()


def test_mbmf_phases_are_tables_merged_key_by_key(tmp_path, capsys):
    f = write(tmp_path / "mbmf.toml", 'algo = "mbmf"\ntask = "Pendulum-v1"\n[mbrl]\n'
                                      'steps = 300\nrandom_steps = 200\nhidden = [8]\n'
                                      'planner = "cem"\n[trpo]\nhidden = [4]\n')
    cfg = printed(capsys, ["--config", f, "--mbrl-steps", "400", "--epochs", "2",
                           "--iterations", "2"])
    assert cfg["algo"] == "mbmf"
    mb = cfg["mbrl"]
    assert (mb["steps"], mb["hidden"], mb["epochs"], mb["planner"]) == (400, [8], 2, "cem")
    assert mb["planner_options"] == {"iterations": 2}
    assert cfg["trpo"]["hidden"] == [4]


# -- planner options ------------------------------------------------------------------------------
def test_planner_options_are_options_of_their_own(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, cls in PLANNERS.items():  # every planner's defaults, read from its constructor
        params = inspect.signature(cls).parameters
        for keyword in ("iterations", "temperature", "noise_beta", "elites", "decay"):
            if keyword in params:
                assert f"{name} {params[keyword].default}" in text, (name, keyword)
    assert "--temperature FLOAT" in text and "--no-warm-start" in text
    assert "--population" not in text  # num_samples' deprecated name: --num-samples
    assert "--planner-num-samples" not in text


def test_a_planner_option_beats_the_same_key_from_anywhere(tmp_path, capsys):
    car = "MountainCarContinuous-v0"  # its preset plans with icem and sets planner_options
    preset_options = preset("mbrl", car)["planner_options"]
    cfg = printed(capsys, [car, "--iterations", "5", "--no-return-mean", "--decay", "1.5"])
    assert cfg["planner_options"] == {**preset_options, "iterations": 5, "return_mean": False,
                                      "decay": 1.5}
    # --planner-options is a setting: it replaces the preset's; the option beats its key
    cfg = printed(capsys, [car, "--planner-options", '{"iterations": 2, "alpha": 0.3}',
                           "--iterations", "4"])
    assert cfg["planner_options"] == {"iterations": 4, "alpha": 0.3}
    f = write(tmp_path / "run.toml", f'task = "{car}"\n[planner_options]\niterations = 2\n'
                                     'alpha = 0.3\n')
    cfg = printed(capsys, ["--config", f, "--iterations", "4"])
    assert cfg["planner_options"] == {"iterations": 4, "alpha": 0.3}


def test_a_planner_option_the_planner_does_not_take_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    line = refused(capsys, ["train", "Pendulum-v1", "--planner", "mppi", "--elites", "3",
                            "--out", str(out)], "--elites", "planner mppi", "--temperature",
                   "--noise-std")
    assert "--decay" not in line  # iCEM's
    refused(capsys, ["train", "Pendulum-v1", "--planner", "rs", "--iterations", "2"],
            "planner rs", "--warm-start")
    # the preset's planner counts: InvertedPendulum plans with mppi
    refused(capsys, ["train", "InvertedPendulum-v5", "--elites", "3"], "planner mppi")
    refused(capsys, ["train", "Pendulum-v1", "--algo", "trpo", "--temperature", "2"],
            "--temperature", "mbrl or mbmf")
    assert not out.exists()


def test_another_planner_drops_the_files_planner_options(capsys):
    saved = DATA / "mbrl" / "config.json"  # cem with {"iterations": 2}
    assert json.loads(saved.read_text())["config"]["planner_options"] == {"iterations": 2}
    cfg = printed(capsys, ["--config", str(saved), "--planner", "mppi"])
    assert (cfg["planner"], cfg["planner_options"]) == ("mppi", {})
    cfg = printed(capsys, ["--config", str(saved), "--planner", "mppi", "--temperature", "0.5"])
    assert cfg["planner_options"] == {"temperature": 0.5}
    cfg = printed(capsys, ["--config", str(saved), "--elites", "4"])  # the same planner keeps them
    assert cfg["planner_options"] == {"iterations": 2, "elites": 4}


# -- a run's config.json --------------------------------------------------------------------------
def test_a_runs_config_json_repeats_the_run(tmp_path, capsys):
    x, y = tmp_path / "x", tmp_path / "y"
    assert main(["train", "Pendulum-v1", *TINY, "--iterations", "3", "--elites", "4",
                 "--out", str(x), "--quiet"]) == 0
    saved = json.loads((x / "config.json").read_text())
    assert saved["config"]["planner_options"] == {"iterations": 3, "elites": 4}
    assert json.loads((x / "controller.json").read_text())["planner_options"] == {
        "iterations": 3, "elites": 4}
    planner = Controller.load(x).planner
    default = Controller.load(x, planner_options={}).planner  # CEM's own: 5 iterations, 10 %
    assert (planner.iterations, planner.num_elites) == (3, 4)
    assert (default.iterations, default.num_elites) == (5, 2)

    assert printed(capsys, ["--config", str(x / "config.json")]) == saved["config"]
    again = printed(capsys, ["--config", str(x / "config.json"), "--seed", "3"])
    assert again == {**saved["config"], "seed": 3}

    assert main(["train", "--config", str(x / "config.json"), "--out", str(y), "--quiet"]) == 0
    assert json.loads((y / "config.json").read_text()) == saved
    rows = [[json.loads(line)["episode_returns"] for line in (d / "metrics.jsonl").open()]
            for d in (x, y)]
    assert rows[0] == rows[1]  # one seed, one run


@pytest.mark.parametrize("algo", ["mbrl", "trpo", "mbmf"])
def test_config_json_of_an_earlier_version_resolves_to_what_it_holds(algo, capsys):
    saved = json.loads((DATA / algo / "config.json").read_text())["config"]
    cfg = printed(capsys, ["--config", str(DATA / algo / "config.json")])
    def held(value, saved_value):  # a setting added since (a phase's too) takes its default
        if isinstance(saved_value, dict):
            return {k: held(value[k], v) for k, v in saved_value.items()}
        return value

    assert {k: held(cfg[k], v) for k, v in saved.items()} == saved
    if algo == "mbmf":  # its phases as config.json keeps them
        cfg = printed(capsys, ["--config", str(DATA / algo / "config.json"), "--trpo-hidden", "5"])
        assert cfg["trpo"] == {**saved["trpo"], "hidden": [5]}


def test_a_config_files_imports_are_imported(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # task modules are found in the current directory
    write_task_module(tmp_path, "cfg_task", "PointMassC", "PointMassC-v0", register=True)
    f = write(tmp_path / "run.json", json.dumps({"fastmbrl_version": "0.0.1", "run_format": 1,
                                                 "imports": ["cfg_task"],
                                                 "config": {"algo": "mbrl",
                                                            "task": "PointMassC-v0"}}))
    capsys.readouterr()
    assert main(["train", "--config", f, "--horizon", "3", "--print-config"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert (meta["config"]["task"], meta["config"]["horizon"]) == ("PointMassC-v0", 3)
    assert meta["imports"] == ["cfg_task"]  # the new run remembers the module too
    g = write(tmp_path / "run.toml", 'task = "PointMassC-v0"\nimports = ["no_such_module"]\n')
    refused(capsys, ["train", "--config", g], g, "no_such_module")


# -- mistakes in a file ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, named", [
    ('task = "Pendulum-v1"\nhorizn = 5\n', ["'horizn'", "mbrl"]),
    ('task = "Pendulum-v1"\nhorizon = "5"\n', ["horizon", "positive integer"]),
    ('task = "Pendulum-v1"\n\nhorizon = \n', ["TOML", "line 3"]),
    ('task = "Pendulum-v1"\nlr = nan\n', ["TOML", "nan"]),
    ('task = "Pendulum-v1"\nseed = -1\n', ["seed"]),
    ('task = "Pendulum-v1"\nalgo = "ppo"\n', ["algo", "'ppo'"]),
    ('task = "Pendulum-v1"\nimports = "x"\n', ["imports"]),
    ('algo = "mbmf"\ntask = "Pendulum-v1"\n[mbrl]\nhiden = [8]\n', ["mbrl", "hiden"]),
    ('algo = "mbmf"\ntask = "Pendulum-v1"\n[trpo]\nhidden = [0]\n', ["trpo.hidden"]),
])
def test_a_mistake_in_the_file_is_refused_naming_it(tmp_path, capsys, text, named):
    f = write(tmp_path / "bad.toml", text)
    out = tmp_path / "run"
    refused(capsys, ["train", "--config", f, "--out", str(out)], f, *named)
    assert not out.exists()


def test_a_runs_config_json_is_checked(tmp_path, capsys):
    saved = json.loads((DATA / "mbrl" / "config.json").read_text())
    for change, named in (({"run_format": 9}, "run format 9"), ({"notes": "x"}, "'notes'"),
                          ({"config": {**saved["config"], "horizon": 0}}, "horizon")):
        f = write(tmp_path / "config.json", json.dumps({**saved, **change}))
        refused(capsys, ["train", "--config", f, "--print-config"], f, named)
    refused(capsys, ["train", "--config", str(tmp_path / "none.toml")], "none.toml",
            "no such file")


def test_config_is_refused_with_resume(capsys):
    refused(capsys, ["train", "--resume", str(DATA / "mbrl"), "--config",
                     str(DATA / "mbrl" / "config.json")], "--config")
    refused(capsys, ["train", "--resume", str(DATA / "mbrl"), "--iterations", "2"],
            "--iterations")


def test_toml_before_python_3_11_needs_tomli(tmp_path, monkeypatch):
    f = write(tmp_path / "run.toml", 'task = "Pendulum-v1"\n')
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    monkeypatch.setitem(sys.modules, "tomli", None)  # not installed
    with pytest.raises(FastMBRLError) as info:
        read_toml(f, "missing")
    for needle in ("tomli", "pip install", "JSON", f):
        assert needle in str(info.value)
