"""A user's mistakes on the command line: each is one line `fastmbrl: error: ...` naming the
option or file, exit status 2, and nothing written."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl.cli import main  # noqa: E402
from fastmbrl.errors import FileError, FormatError, MissingFileError  # noqa: E402
from fastmbrl.io import json_dumps, json_loads, load_npz, read_json, save_npz, write_json  # noqa: E402
from tests.test_hostile_files import MBRL_ARGS, TRPO_ARGS, snapshot  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for algo, args in (("mbrl", MBRL_ARGS), ("trpo", TRPO_ARGS)):
        out[algo] = root / algo
        assert main(["train", "Pendulum-v1", *args, "--out", str(out[algo]), "--quiet"]) == 0
    return out


@pytest.fixture
def run(runs, tmp_path):
    """A fresh copy of the MBRL run."""
    d = tmp_path / "run"
    shutil.copytree(runs["mbrl"], d)
    return d


def refused(capsys, argv, *named) -> str:
    """Run `argv`; require exit 2 and one stderr line naming each of `named`."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fastmbrl: error: "), err
    for n in named:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def edit_json(path, **changes):
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


# -- exit status ----------------------------------------------------------------------------------
def test_a_users_mistake_exits_with_status_2(capsys):
    refused(capsys, ["train", "No-Such-Task"], "No-Such-Task")


# -- JSON ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_json_numbers_are_refused(run, capsys, raw):
    path = run / "controller.json"
    path.write_text(path.read_text().replace('"horizon": 4', f'"horizon": {raw}'))
    before = snapshot(run)
    refused(capsys, ["eval", str(run), "--episodes", "1"], "controller.json")
    assert snapshot(run) == before
    with pytest.raises(FormatError, match="controller.json"):
        read_json(path, "missing")


def test_deeply_nested_json_is_refused(run, capsys):
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, ["eval", str(run)], "config.json", "nested too deeply")
    refused(capsys, ["train", "--resume", str(run)], "config.json", "nested too deeply")


def test_state_without_iteration_or_rng_is_refused(run, capsys):
    state = json.loads((run / "state.json").read_text())
    for key in ("iteration", "rng"):
        broken = {k: v for k, v in state.items() if k != key}
        (run / "state.json").write_text(json.dumps(broken))
        refused(capsys, ["train", "--resume", str(run), "--quiet"], "state.json", key)


def test_config_of_another_algorithm_is_refused(run, capsys):
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["algo"] = "trpo"
    (run / "config.json").write_text(json.dumps(meta))
    before = snapshot(run)
    refused(capsys, ["eval", str(run)], "config.json", "trpo")
    refused(capsys, ["train", "--resume", str(run), "--quiet"], "config.json")
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["buffer.npz", "model.npz"])
def test_missing_saved_file_is_refused(run, capsys, name):
    (run / name).unlink()
    before = snapshot(run)
    refused(capsys, ["train", "--resume", str(run), "--quiet"], name)
    if name == "model.npz":
        refused(capsys, ["eval", str(run)], name)
    assert snapshot(run) == before


def test_unknown_planner_option_in_controller_json(run, capsys):
    edit_json(run / "controller.json", planner_options={"bogus": 1})
    refused(capsys, ["eval", str(run)], "bogus")


def test_unknown_planner_option_in_config_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--planner-options", '{"bogus": 1}',
                     "--out", str(out)], "bogus")
    assert not out.exists()


@pytest.mark.parametrize("args, named", [
    (["--planner", "beam", "--beams", "500", "--num-samples", "40"], "beams (500)"),
    (["--planner", "beam", "--tail", "2.5"], "tail"),
    (["--planner", "cem", "--elites", "1000", "--num-samples", "40"], "elites (1000)"),
    (["--planner", "mppi", "--temperature", "-1"], "temperature"),
    (["--planner", "icem", "--keep-fraction", "2"], "keep_fraction")])
def test_a_bad_planner_option_value_is_refused_before_the_run_starts(tmp_path, capsys, args,
                                                                    named):
    # refused when the settings resolve, not after the random phase and the first fit
    out = tmp_path / "r"
    refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, *args, "--out", str(out)], named)
    assert not out.exists()


@pytest.mark.parametrize("seed", ["abc", 1.5])
def test_seed_that_is_not_an_integer_names_the_field(run, capsys, seed):
    edit_json(run / "controller.json", seed=seed)
    refused(capsys, ["eval", str(run)], "seed")
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["seed"] = seed
    (run / "config.json").write_text(json.dumps(meta))
    refused(capsys, ["train", "--resume", str(run), "--quiet"], "seed")


def test_negative_seed_names_the_option(tmp_path, capsys):
    out = tmp_path / "r"
    refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--seed", "-5", "--out", str(out)],
            "seed")
    assert not out.exists()


def test_demo_negative_seed_names_the_option(capsys):
    refused(capsys, ["demo", "--seed", "-5", "--steps", "10"], "--seed")


# -- --out ----------------------------------------------------------------------------------------
def test_out_that_is_a_file_or_under_one(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("mine")
    refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--out", str(f)], "--out", f)
    refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--out", str(f / "sub")], "--out", f)
    refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--out", ""], "--out")
    assert f.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_out_that_cannot_be_created(tmp_path, capsys):
    if Path("/proc/version").is_file():  # a directory nobody may create entries in
        refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--out", "/proc/fastmbrl-x"],
                "--out", "/proc/fastmbrl-x")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        refused(capsys, ["train", "Pendulum-v1", *MBRL_ARGS, "--out", str(ro / "x")], "--out")
        assert list(ro.iterdir()) == []


# -- eval -------------------------------------------------------------------------------------
def test_eval_of_a_path_that_does_not_exist(run, capsys):
    # not the parent's controller, which a typo used to evaluate
    refused(capsys, ["eval", str(run / "typo")], run / "typo", "does not exist")
    refused(capsys, ["eval", str(run.parent / "nodir")], run.parent / "nodir", "does not exist")
    refused(capsys, ["eval", str(run.parent / "nodir" / "sub")], "nodir", "does not exist")


def test_eval_of_a_directory_that_is_no_run(tmp_path, capsys):
    refused(capsys, ["eval", str(tmp_path)], tmp_path, "not a fastmbrl run directory")


def test_eval_negative_seed_and_episodes(run, capsys):
    refused(capsys, ["eval", str(run), "--seed", "-5"], "seed")
    refused(capsys, ["eval", str(run), "--episodes", "0"], "episodes")


def test_eval_of_a_trpo_run_without_its_policy(runs, tmp_path, capsys):
    d = tmp_path / "t"
    shutil.copytree(runs["trpo"], d)
    (d / "policy.npz").unlink()
    refused(capsys, ["eval", str(d)], "config.json", "policy.npz")


# -- plot -------------------------------------------------------------------------------------
def test_plot_output_in_a_missing_directory(run, capsys):
    pytest.importorskip("matplotlib")
    refused(capsys, ["plot", str(run), "-o", "/no/such/dir/x.png"], "/no/such/dir")


def test_plot_output_writes_exactly_the_path_given(run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    (tmp_path / "adir").mkdir()
    refused(capsys, ["plot", str(run), "-o", str(tmp_path / "adir")], "is a directory")
    refused(capsys, ["plot", str(run), "-o", str(tmp_path / "curve")], ".png")
    refused(capsys, ["plot", str(run), "-o", str(tmp_path / "curve.jpg")], ".png")
    assert sorted(os.listdir(tmp_path)) == ["adir", "run"]
    target = tmp_path / "curve.png"
    assert main(["plot", str(run), "-o", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["adir", "curve.png", "run"]  # no temp file left


def test_plot_of_a_run_with_a_bad_metrics_row(run, capsys):
    pytest.importorskip("matplotlib")
    path = run / "metrics.jsonl"
    text = path.read_text()
    path.write_text(text.replace('"env_steps": 300', '"env_steps": "x"'))  # same length
    assert path.read_text() != text
    refused(capsys, ["plot", str(run), "-o", str(run.parent / "x.png")], "metrics.jsonl")
    assert not (run.parent / "x.png").exists()


# -- bench ----------------------------------------------------------------------------------------
def test_bench_threads_zero_is_refused(capsys):
    refused(capsys, ["bench", "controller", "--threads", "0", "--calls", "1"], "--threads")


# -- the readers and writers ----------------------------------------------------------------------
def test_json_is_read_and_written_as_rfc_8259(tmp_path):
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}',
                 '{"a": ' + "1" * 5000 + "}", "[" * 100_000):
        with pytest.raises(FormatError, match="where"):
            json_loads(text, "where")
    assert json_loads('{"a": 1.5, "b": [1e300]}', "x") == {"a": 1.5, "b": [1e300]}
    # metrics rows: a non-finite float is null; anything else written holds none
    line = json_dumps({"val_loss": math.nan, "r": [1.0, -math.inf], "n": 3})
    assert json.loads(line) == {"val_loss": None, "r": [1.0, None], "n": 3}
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_json(tmp_path / "x.json", {"a": math.inf})
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_npz(tmp_path / "x.npz", "thing", 1, {"a": math.nan}, {})
    assert os.listdir(tmp_path) == []


def test_random_steps_1_writes_no_nan(tmp_path):
    out = tmp_path / "r"
    args = [a for a in MBRL_ARGS]
    args[args.index("--random-steps") + 1] = "1"
    main(["train", "Pendulum-v1", *args, "--out", str(out), "--quiet"])  # may refuse the fit
    if (out / "metrics.jsonl").exists():
        for line in (out / "metrics.jsonl").read_text().splitlines():
            json_loads(line, "metrics.jsonl")  # strict: NaN would raise


def test_read_and_write_errors_name_the_path(tmp_path):
    with pytest.raises(MissingFileError, match="no such file"):
        load_npz(tmp_path / "missing.npz", "thing", (1,))
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(FileError, match="d.npz"):
        load_npz(tmp_path / "d.npz", "thing", (1,))
    (tmp_path / "f").write_text("")
    with pytest.raises(FileError, match="cannot write"):
        write_json(tmp_path / "f" / "x.json", {})
    with pytest.raises(FileError, match="cannot write"):
        save_npz(tmp_path / "f" / "x.npz", "thing", 1, {}, {"w": np.zeros(2)})
    assert isinstance(FileError("x"), OSError) and isinstance(MissingFileError("x"),
                                                              FileNotFoundError)


def test_bench_planners_bad_input(runs, capsys):
    refused(capsys, ["bench", "planners", str(runs["mbrl"]), "--planners", "rs,mcts"], "mcts")
    refused(capsys, ["bench", "planners", str(runs["mbrl"]), "--budgets", "10,x"], "--budgets")
    refused(capsys, ["bench", "planners", str(runs["mbrl"]), "--budgets", "0"], "--budgets")
    refused(capsys, ["bench", "planners", str(runs["mbrl"]), "--episodes", "0"], "--episodes")
    refused(capsys, ["bench", "planners", str(runs["trpo"])], "policy")


def test_known_dynamics_of_a_task_without_them(capsys):
    refused(capsys, ["eval", "HalfCheetah-v5", "--known-dynamics"], "HalfCheetah-v5",
            "no known dynamics")
    refused(capsys, ["bench", "planners", "Reacher-v5", "--known-dynamics"], "Reacher-v5",
            "no known dynamics")
