"""`fastmbrl warmup DIR` fills numba's on-disk cache with what the saved controller runs."""
import os
import subprocess
import sys

import pytest

from fastmbrl import Controller, DynamicsModel
from fastmbrl.cli import main


def _warmup(args, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-m", "fastmbrl", "warmup", *args], env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_warmup_compiles_the_controller_kernels_into_an_empty_cache(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    model = DynamicsModel(3, 1, (8,), "relu", seed=0)
    Controller(model, "Pendulum-v1", planner="rs", horizon=3, num_samples=16).save(run_dir)
    proc = _warmup([str(run_dir)], cache)
    assert proc.returncode == 0, proc.stderr
    assert "rs (horizon 3, 16 samples) for Pendulum-v1" in proc.stdout
    assert "a fresh process now reaches its first action in" in proc.stdout
    files = [f for _, _, names in os.walk(cache) for f in names]
    # the rollout kernel specialised to Pendulum's reward, and no training kernel
    assert any(f.startswith("rollout.") and "pendulum_reward" in f and f.endswith(".nbi")
               for f in files), files
    assert not any(f.startswith("train.") for f in files), files


def test_warmup_refuses_a_directory_without_a_controller(tmp_path, capsys):
    assert main(["warmup", str(tmp_path), "--no-check"]) == 2
    assert "no saved model" in capsys.readouterr().err
    assert main(["warmup", str(tmp_path / "missing")]) == 2
