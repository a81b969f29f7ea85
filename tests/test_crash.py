"""Crash consistency of run directories: a process that dies at any write or file replacement of
a save (or of a resume's recovery) leaves a directory that resumes to exactly the run an
uninterrupted process makes, and whose metrics.csv holds the committed rows once it is
recovered; committed rows are never deleted; one process trains a directory.

A crash is simulated by raising, at the k-th call of os.replace or os.fsync (every write is
followed by one), an exception that no code of the package catches, so that nothing after the
crash point runs, as in a kill; bench/kill_loop.py does the same with real kill -9s."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl.algorithms.mbmf import MBMFRun  # noqa: E402
from fastmbrl.algorithms.mbrl import MBRLRun  # noqa: E402
from fastmbrl.algorithms.rundir import RunLockedError, read_metrics  # noqa: E402
from fastmbrl.algorithms.trpo import TRPORun  # noqa: E402
from fastmbrl.cli import main  # noqa: E402
from fastmbrl.data.buffer import ReplayBuffer  # noqa: E402
from fastmbrl.errors import FormatError  # noqa: E402
from fastmbrl.models.dynamics import DynamicsModel  # noqa: E402
from tests.reference import metrics_table, read_csv_table  # noqa: E402

QUIET = dict(log=lambda m: None)
MBRL = dict(steps=200, random_steps=100, steps_per_iteration=100, episode_length=50, horizon=4,
            num_samples=16, hidden=(8,), epochs=1, batch_size=32, planner="rs")
# iterations that end inside Pendulum's 200-step episodes: a resume replays the one in progress
TRPO = dict(steps=450, steps_per_iteration=150, value_epochs=1, hidden=(8,), value_hidden=(8,))
TRPO_PHASE = {k: v for k, v in TRPO.items() if k != "steps"}
TIMINGS = {"fit_s", "plan_ms", "acting_s", "wall_s", "env_s", "act_s", "policy_s", "value_s",
           "label_ms", "rollout_s"}


class Crash(BaseException):
    """Not an Exception: no handler of the package may run after the crash point."""


class Injector:
    """Counts os.replace and os.fsync calls; raises Crash at call number `at` (None: never)."""

    def __init__(self, monkeypatch, at=None):
        self.at, self.calls = at, 0
        for name in ("replace", "fsync"):
            original = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(original))

    def _wrap(self, original):
        def call(*args):
            self.calls += 1
            if self.calls == self.at:
                raise Crash(self.calls)
            return original(*args)
        return call


def _rows(out):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(out)]


def _state(out):
    state = json.loads((out / "state.json").read_text())
    state.pop("commit")
    return state


def _files(out):
    """What a finished MBRL run keeps, comparable across runs."""
    model, buf = DynamicsModel.load(out / "model.npz"), ReplayBuffer.load(out / "buffer.npz")
    arrays = {k: np.asarray(v).tolist() for k, v in model.state_dict().items()}
    return (arrays, buf.get(buf.indices()).obs.tolist(),
            json.loads((out / "controller.json").read_text()))


def _listing(out):
    return sorted(p.name for p in out.iterdir() if p.name != ".lock")


def _csv_agrees(out):
    """metrics.csv is the committed rows (and exists from the first commit on)."""
    if not (out / "state.json").exists():
        return not (out / "metrics.csv").exists()
    return read_csv_table(out / "metrics.csv") == metrics_table(read_metrics(out))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted MBRL run, and how many replace/fsync calls it makes."""
    out = tmp_path_factory.mktemp("ref") / "run"
    mp = pytest.MonkeyPatch()
    counter = Injector(mp)
    try:
        MBRLRun.run("Pendulum-v1", out, seed=4, **QUIET, **MBRL)
    finally:
        mp.undo()
    return out, counter.calls


def _crash_then_resume(out, at, monkeypatch):
    inj = Injector(monkeypatch, at)
    crashed = False
    try:
        if not (out / "config.json").exists():
            MBRLRun.run("Pendulum-v1", out, seed=4, **QUIET, **MBRL)
        else:
            MBRLRun.resume(out, **QUIET).train()
    except Crash:
        crashed = True
    monkeypatch.undo()
    return crashed, inj.calls


def test_a_crash_at_any_write_or_replacement_resumes_to_the_uninterrupted_run(
        reference, tmp_path, monkeypatch):
    ref, total = reference
    assert total > 20  # config, the random phase and an iteration, each with several files
    for at in range(1, total + 1):
        out = tmp_path / f"crash{at}"
        crashed, _ = _crash_then_resume(out, at, monkeypatch)
        assert crashed, at
        if (out / "config.json").exists():
            run = MBRLRun.resume(out, **QUIET)
            assert _csv_agrees(out), at  # the recovery alone
            run.train()
        else:  # crashed before the run directory was started: start it again
            MBRLRun.run("Pendulum-v1", out, seed=4, **QUIET, **MBRL)
        assert _rows(out) == _rows(ref), at
        assert _state(out) == _state(ref), at
        assert _files(out) == _files(ref), at
        assert _listing(out) == _listing(ref), at  # no stage or temporary file left behind
        assert _csv_agrees(out), at


def test_a_crash_during_a_resume_resumes_again(reference, tmp_path, monkeypatch):
    """Crash a run in its last commit where that leaves work for the recovery (moves to finish,
    a row or a stage to remove), then crash its resume at each of the recovery's own writes."""
    ref, total = reference
    points = []
    for at in range(total - 12, total, 3):
        probe = tmp_path / f"probe{at}"
        _crash_then_resume(probe, at, monkeypatch)
        inj = Injector(monkeypatch)
        MBRLRun.resume(probe, **QUIET)  # the recovery alone
        monkeypatch.undo()
        if inj.calls:
            points.append((at, inj.calls))
    assert len(points) >= 2
    for at, recovery_calls in points:
        for k in range(1, recovery_calls + 1):
            out = tmp_path / f"c{at}-{k}"
            _crash_then_resume(out, at, monkeypatch)
            crashed, _ = _crash_then_resume(out, k, monkeypatch)  # the resume dies too
            assert crashed, (at, k)
            MBRLRun.resume(out, **QUIET).train()
            assert _rows(out) == _rows(ref), (at, k)
            assert _files(out) == _files(ref), (at, k)
            assert _listing(out) == _listing(ref), (at, k)


@pytest.mark.parametrize("algo", ["trpo", "mbmf"])
def test_other_algorithms_resume_exactly_after_crashes(algo, tmp_path, monkeypatch):
    cls, settings = {"trpo": (TRPORun, TRPO),
                     "mbmf": (MBMFRun, dict(steps=700, mbrl=dict(MBRL), bc_epochs=1,
                                            trpo=TRPO_PHASE,
                                            dagger_rounds=1, dagger_steps=50))}[algo]
    ref = tmp_path / "ref"
    counter = Injector(monkeypatch)
    cls.run("Pendulum-v1", ref, seed=5, **QUIET, **settings)
    monkeypatch.undo()
    # a sample of the points keeps this test short; the MBRL test above takes every one
    for at in range(2, counter.calls, 4 if algo == "trpo" else 14):
        out = tmp_path / f"crash{at}"
        Injector(monkeypatch, at)
        try:
            if (out / "config.json").exists():
                cls.resume(out, **QUIET).train()
            else:
                cls.run("Pendulum-v1", out, seed=5, **QUIET, **settings)
        except Crash:
            pass
        monkeypatch.undo()
        if (out / "config.json").exists():
            cls.resume(out, **QUIET).train()
        else:
            cls.run("Pendulum-v1", out, seed=5, **QUIET, **settings)
        assert _rows(out) == _rows(ref), at
        assert _state(out) == _state(ref), at
        assert _csv_agrees(out), at


def test_resume_truncates_an_uncommitted_row_and_a_torn_line(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    committed = (out / "metrics.jsonl").read_bytes()
    with open(out / "metrics.jsonl", "ab") as fh:  # a kill mid-append of the next row
        fh.write(b'{"iteration": 3, "env_st')
    (out / ".model.npz.123.tmp").write_bytes(b"partial")
    (out / ".stage-abc123").mkdir()
    MBRLRun.resume(out, **QUIET)
    assert (out / "metrics.jsonl").read_bytes() == committed
    assert _listing(out) == _listing(ref)


def test_resume_refuses_to_delete_committed_rows(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"

    def refused(match):
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        with pytest.raises(FormatError, match=match):
            MBRLRun.resume(out, **QUIET)
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        before.pop(".lock", None), after.pop(".lock", None)
        assert after == before  # nothing changed

    # a state edited back to iteration 0 would delete every row
    shutil.copytree(ref, out)
    state = json.loads((out / "state.json").read_text())
    (out / "state.json").write_text(json.dumps({**state, "iteration": 0}))
    refused("disagree")
    # a metrics file emptied (e.g. by a rewrite a kill interrupted) lost committed rows
    shutil.rmtree(out)
    shutil.copytree(ref, out)
    (out / "metrics.jsonl").write_bytes(b"")
    refused("committed rows are missing")
    # an older state.json copied over a newer run: its rows would go
    shutil.rmtree(out)
    shutil.copytree(ref, out)
    row = json.loads((out / "metrics.jsonl").read_text())
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({**row, "iteration": 2}) + "\n")
    commit = {**state["commit"], "metrics_bytes": 0}
    (out / "state.json").write_text(json.dumps({**state, "iteration": 0, "commit": commit}))
    refused("rows past the iteration")
    # a commit entry pointing outside the directory is not followed
    shutil.rmtree(out)
    shutil.copytree(ref, out)
    commit = {**state["commit"], "stage": "../../etc"}
    (out / "state.json").write_text(json.dumps({**state, "commit": commit}))
    refused("malformed commit")


HOLD = """
import sys, time
from fastmbrl.algorithms.rundir import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_cannot_train_a_locked_directory(reference, tmp_path, capsys):
    ref, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    before = (out / "metrics.jsonl").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--resume", str(out)]) != 0
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "one process at a time" in err
        assert (out / "metrics.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock went with it
    time.sleep(0.05)
    run = MBRLRun.resume(out, **QUIET)
    assert run.iteration == 1


def test_one_process_holds_a_directory_only_while_it_works(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    first = MBRLRun.resume(out, **QUIET)
    second = MBRLRun.resume(out, **QUIET)  # the first holds nothing between its commits
    with first.locked():
        with pytest.raises(RunLockedError, match="another Run object in this process"):
            second.save()
    assert np.array_equal(first.buffer.get(first.buffer.indices()).obs,
                          second.buffer.get(second.buffer.indices()).obs)


def test_a_run_loaded_before_another_trained_the_directory_refuses_to_commit(reference,
                                                                            tmp_path):
    out = tmp_path / "run"

    def stop_in_second_iteration(msg):
        if msg.startswith("iteration 2:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        MBRLRun.run("Pendulum-v1", out, seed=4, log=stop_in_second_iteration,
                    **{**MBRL, "steps": 300})
    stale = MBRLRun.resume(out, **QUIET)
    fresh = MBRLRun.resume(out, **QUIET)
    fresh.train()
    rows = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(RunLockedError, match="trained by another run since this one was loaded"):
        stale.train()
    assert (out / "metrics.jsonl").read_bytes() == rows  # nothing committed over it
    assert MBRLRun.resume(out, **QUIET).iteration == 2
