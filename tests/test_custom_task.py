"""A user's own environment: a task module imported by the library and the CLI (--import MODULE,
MODULE:ATTRIBUTE names, the fastmbrl.tasks entry-point group), remembered by the run directory so
that eval and --resume find it again; environment classes and factories in Task.from_env; the
message for an unknown task."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

gym = pytest.importorskip("gymnasium")

from fastmbrl import FastMBRLError, Task, get_task, import_tasks, train  # noqa: E402
from fastmbrl.tasks import task_source  # noqa: E402

MODULE = textwrap.dedent('''
    """A point mass on a line, pushed toward the origin."""
    import gymnasium as gym
    import numba
    import numpy as np

    from fastmbrl import Task, register_task

    DT = np.float32(0.1)


    class {cls}(gym.Env):
        def __init__(self):
            self.observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
            self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
            self.state, self.t = np.zeros(2, np.float32), 0

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.state = self.np_random.uniform(-1, 1, 2).astype(np.float32)
            self.t = 0
            return self.state.copy(), {{}}

        def step(self, action):
            a = np.float32(np.clip(action[0], -1, 1))
            x, v = self.state
            nxt = np.array([x + DT * v, v + DT * a], np.float32)
            reward = float(-nxt[0] * nxt[0] - np.float32(0.1) * a * a)
            self.state, self.t = nxt, self.t + 1
            return nxt.copy(), reward, False, self.t >= 50, {{}}


    @numba.njit(cache=False)
    def reward(obs, act, next_obs, out):
        for i in range(obs.shape[0]):
            a = min(max(act[i, 0], np.float32(-1)), np.float32(1))
            out[i] = -next_obs[i, 0] * next_obs[i, 0] - np.float32(0.1) * a * a


    def make_task():
        return Task.from_env({cls}, reward, name="{name}")
    {register}
''')


def _write(tmp_path, module, cls, name, register):
    (tmp_path / f"{module}.py").write_text(MODULE.format(
        cls=cls, name=name, register="register_task(make_task())" if register else ""))


def _cli(args, cwd, env=None):
    code = "import sys; from fastmbrl.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


TINY = ["--planner", "rs", "--steps", "150", "--random-steps", "100", "--steps-per-iteration",
        "50", "--horizon", "4", "--num-samples", "16", "--epochs", "1", "--hidden", "8"]


def test_unknown_task_says_how_to_add_one():
    with pytest.raises(FastMBRLError) as info:
        get_task("PointMass-v0")
    msg = str(info.value)
    for needle in ("reward(obs, act, next_obs, out)", "register_task", "--import MODULE",
                   "MODULE:ATTRIBUTE", "docs/tasks.md"):
        assert needle in msg


def test_import_tasks_by_module_and_by_attribute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # looked up in the current directory, as python -m does
    _write(tmp_path, "pm_registers", "PointMassA", "PointMassA-v0", register=True)
    added = import_tasks("pm_registers")
    assert [t.name for t in added] == ["PointMassA-v0"] and task_source("PointMassA-v0")
    _write(tmp_path, "pm_factory", "PointMassB", "PointMassB-v0", register=False)
    (task,) = import_tasks("pm_factory:make_task")  # a function returning a Task
    assert get_task("PointMassB-v0") is task and task.obs_dim == 2 and task.act_dim == 1
    assert import_tasks("pm_factory:make_task")[0] is task  # again: the same task
    with pytest.raises(FastMBRLError, match="no task module 'no_such_module'"):
        import_tasks("no_such_module")
    with pytest.raises(FastMBRLError, match="has no attribute 'missing'"):
        import_tasks("pm_factory:missing")
    with pytest.raises(FastMBRLError, match="not a Task"):
        import_tasks("pm_factory:DT")
    with pytest.raises(FastMBRLError, match="standard-library"):
        import_tasks("antigravity")
    with pytest.raises(FastMBRLError, match="not a module name"):
        import_tasks("os; print(1)")
    # the library trains it by name, and Task.from_env made the class a Gymnasium id
    run = train("PointMassB-v0", planner="rs", steps=150, random_steps=100,
                steps_per_iteration=50, horizon=4, num_samples=16, epochs=1, hidden=(8,),
                log=lambda m: None)
    assert run.env_steps == 150 and gym.spec("PointMassB-v0").entry_point.__name__ == "PointMassB"


def test_from_env_takes_a_class_or_a_factory_and_refuses_other_things():
    from fastmbrl.tasks import pendulum_reward

    class Line(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), "float32")
        action_space = gym.spaces.Box(-2, 2, (1,), "float32")

    task = Task.from_env(Line, pendulum_reward)
    assert task.env_id == "Line-v0" and task.obs_dim == 3
    assert Task.from_env(lambda: Line(), pendulum_reward, name="LineFactory-v0").act_dim == 1
    with pytest.raises(FastMBRLError, match="taken"):
        Task.from_env(lambda: Line(), pendulum_reward, name="Line-v0")
    with pytest.raises(FastMBRLError, match="environment class or a function"):
        Task.from_env(42, pendulum_reward)


def test_cli_trains_evaluates_and_resumes_a_task_from_an_imported_module(tmp_path):
    _write(tmp_path, "point_mass", "PointMass", "PointMass-v0", register=True)
    res = _cli(["train", "PointMass-v0", *TINY, "--out", "run"], tmp_path)
    assert res.returncode == 2 and "--import MODULE" in res.stderr  # unknown without it
    res = _cli(["train", "--import", "point_mass", "PointMass-v0", *TINY, "--out", "run",
                "--quiet"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["imports"] == ["point_mass"]
    # the run directory remembers the module: eval and --resume need no --import
    res = _cli(["eval", "run", "--episodes", "1", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["task"] == "PointMass-v0"
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    res = _cli(["train", "--resume", "run", "--quiet"], tmp_path)
    assert res.returncode == 0, res.stderr  # finished: nothing more to do, but it loaded
    assert json.loads((tmp_path / "run" / "state.json").read_text())["iteration"] == \
        state["iteration"]
    # MODULE:ATTRIBUTE names a task without a module that registers it
    _write(tmp_path, "pm_attr", "PointMassC", "PointMassC-v0", register=False)
    res = _cli(["train", "pm_attr:make_task", *TINY, "--out", "run2", "--quiet"], tmp_path)
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert meta["config"]["task"] == "PointMassC-v0" and meta["imports"] == ["pm_attr:make_task"]
    res = _cli(["eval", "run2", "--episodes", "1", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr


def test_an_installed_package_names_its_tasks_by_entry_point(tmp_path):
    pkg = tmp_path / "site"
    pkg.mkdir()
    _write(pkg, "pm_installed", "PointMassD", "PointMassD-v0", register=False)
    dist = pkg / "pm_installed-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pm-installed\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[fastmbrl.tasks]\nPointMassD-v0 = pm_installed:make_task\n")
    env = {"PYTHONPATH": str(pkg)}
    res = _cli(["train", "PointMassD-v0", *TINY, "--out", "run", "--quiet"], tmp_path, env)
    assert res.returncode == 0, res.stderr
    assert "imports" not in json.loads((tmp_path / "run" / "config.json").read_text())
    res = _cli(["eval", "run", "--episodes", "1"], tmp_path, env)
    assert res.returncode == 0, res.stderr


def test_a_learned_reward_run_end_to_end(tmp_path, capsys):
    from fastmbrl.cli import main
    from fastmbrl.models.dynamics import DynamicsModel

    out = tmp_path / "lr"
    assert main(["train", "Pendulum-v1", "--learned-reward", *TINY, "--out", str(out),
                 "--quiet"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["task"] == "learned-reward/Pendulum-v1"
    model = DynamicsModel.load(out / "model.npz")
    assert model.obs_dim == 5 and model.absolute_obs_dims == (3, 4)
    assert model.ignore_obs_dims == (3, 4)
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "learned-reward/Pendulum-v1" and result["mean_return"] < 0
    assert main(["train", "Pendulum-v1", "--algo", "trpo", "--learned-reward"]) == 2
    assert "--learned-reward applies to --algo mbrl or mbmf" in capsys.readouterr().err
