"""Run directories and controllers written before the package was reorganised (fastmbrl 0.1.0,
commit 0881e17) load, resume and act exactly as that version did.

The files were written with FASTMBRL_ISA=generic, the spec every x86 CPU runs, and are replayed
with it in a subprocess (the spec is chosen once per process), so the comparison is exact on any
machine the suite runs on."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")

from tests.reference import metrics_table, read_csv_table  # noqa: E402

DATA = Path(__file__).parent / "data" / "runs-0881e17"
EXPECTED = json.loads((DATA / "expected.json").read_text())
TIMINGS = ("fit_s", "plan_ms", "acting_s", "wall_s", "env_s", "act_s", "policy_s", "value_s")

REPLAY = """
import json, sys
import numpy as np
from fastmbrl import Controller
from fastmbrl.algorithms.evaluate import load_controller
from fastmbrl.cli import main

root, obs, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
for name in ("mbrl", "trpo", "mbmf"):
    assert main(["train", "--resume", f"{root}/{name}", "--quiet"]) == 0
ctrl = Controller.load(f"{root}/controller")
ctrl.reset(seed)
actions = [ctrl.act(np.array(obs, np.float32)).tolist() for _ in range(3)]
policy = load_controller(f"{root}/mbmf")
print(json.dumps({"actions": actions, "policy_action": policy.act(np.array(obs)).tolist()}))
"""


#: reported, not used to act: value_loss is computed by another (equally exact) summation since;
#: the TRPO diagnostics go through NumPy's float64 exp/log, which NumPy dispatches per CPU
#: (AVX-512 and AVX2 differ in the last bit), so they agree to rounding, not bit for bit
REPORTED = ("value_loss", "kl", "surrogate_improvement", "entropy")


def _without_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMINGS + REPORTED} for r in rows]


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    root = tmp_path_factory.mktemp("old") / "runs"
    shutil.copytree(DATA, root)
    env = {**os.environ, "FASTMBRL_ISA": "generic"}
    proc = subprocess.run([sys.executable, "-c", REPLAY, str(root), json.dumps(EXPECTED["obs"]),
                           str(EXPECTED["reset_seed"])], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout.strip().splitlines()[-1])


def test_interrupted_old_runs_resume_as_the_old_version_ran_them(replayed):
    root, _ = replayed
    for name in ("mbrl", "trpo"):
        rows = _metrics(root / name / "metrics.jsonl")
        assert len(rows) == len(EXPECTED[f"{name}_metrics"]) >= 2
        assert _without_timings(rows) == _without_timings(EXPECTED[f"{name}_metrics"]), name
        # a run of that version had no metrics.csv: its next commit writes one of every row
        assert read_csv_table(root / name / "metrics.csv") == metrics_table(rows), name
        for new, old in zip(rows, EXPECTED[f"{name}_metrics"]):
            for key in REPORTED:
                assert (key in new) == (key in old)
                if key in old:
                    assert new[key] == pytest.approx(old[key], rel=1e-12)


def test_old_controller_acts_as_before(replayed):
    _, result = replayed
    assert result["actions"] == EXPECTED["actions"]


def test_old_mbmf_run_is_finished_and_its_policy_acts(replayed):
    root, result = replayed
    state = json.loads((root / "mbmf" / "state.json").read_text())
    assert state["phase"] == "done"
    # finished, but trained again: it commits once more, for metrics.csv
    rows = _metrics(root / "mbmf" / "metrics.jsonl")
    assert read_csv_table(root / "mbmf" / "metrics.csv") == metrics_table(rows)
    assert result["policy_action"] == EXPECTED["policy_action"]
