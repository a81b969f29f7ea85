"""`fastmbrl bench planners`: every planner at model-step budgets, closed-loop on a run's model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastmbrl import Controller, DynamicsModel
from fastmbrl.algorithms.evaluate import evaluate
from fastmbrl.cli import main
from fastmbrl.cli.bench.planners import model_steps_per_action
from fastmbrl.planning.planners import PLANNERS, num_samples_for

KEYS = {"planner", "model_steps_per_action", "ms_per_action", "mean_return", "std_return"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("bp") / "ctrl"
    Controller(DynamicsModel(3, 1, hidden=(8,), seed=3), "Pendulum-v1", planner="rs", horizon=4,
               num_samples=16).save(d)
    return d


def test_rows_keep_within_their_budget_and_replay_as_evaluate(saved, tmp_path, capsys):
    png = tmp_path / "bp.png"
    assert main(["bench", "planners", str(saved), "--planners", "rs,icem", "--budgets", "200,2000",
                 "--episodes", "1", "--json", "--png", str(png)]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [(r["planner"], r["budget"]) for r in rows] == [
        ("rs", 200), ("rs", 2000), ("icem", 200), ("icem", 2000)]
    assert png.stat().st_size > 0 and str(png.resolve()) in out.err
    for r in rows:
        assert KEYS <= set(r)
        assert r["horizon"] == 4
        if r["model_steps_per_action"] > r["budget"]:  # the planner's least sample count costs more
            assert r["num_samples"] == num_samples_for(r["planner"], 1)
        else:  # the largest sample count that fits: one more would exceed the budget
            assert model_steps_per_action(r["planner"], r["num_samples"] + 1, 4, 1) > r["budget"]
        again = evaluate(saved, 1, r["seed"], log=lambda _: None, planner=r["planner"],
                         num_samples=r["num_samples"], horizon=4, planner_options={})
        assert again["returns"] == r["returns"]
        assert r["mean_return"] == pytest.approx(np.mean(r["returns"]))
        assert np.isfinite(r["ms_per_action"]) and r["ms_per_action"] > 0


def test_default_budgets_are_fractions_of_the_runs_own(saved, capsys):
    assert main(["bench", "planners", str(saved), "--planners", "rs", "--episodes", "1",
                 "--json", "--no-png"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    own = model_steps_per_action("rs", 16, 4, 1)
    assert [r["budget"] for r in rows] == sorted({max(1, own // 16), own // 4, own})
    assert rows[-1]["num_samples"] == 16


def test_the_table_names_every_planner(saved, capsys):
    assert main(["bench", "planners", str(saved), "--budgets", "64", "--episodes", "1",
                 "--no-png"]) == 0
    out = capsys.readouterr().out
    for name in PLANNERS:
        assert f"\n{name} " in out


def test_known_dynamics_from_the_command_line(capsys):
    assert main(["bench", "planners", "Pendulum-v1", "--known-dynamics", "--planners", "mppi",
                 "--budgets", "3000", "--episodes", "1", "--json", "--no-png"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["model"] == "known dynamics" and row["horizon"] == 20
    assert row["mean_return"] > -200  # the true model swings the pendulum up
    assert main(["eval", "Pendulum-v1", "--known-dynamics", "--planner", "icem", "--horizon",
                 "30", "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["planner"] == "icem" and result["mean_return"] > -200
