import subprocess
import sys

import pytest

import fastmbrl
from fastmbrl.cli import main
from fastmbrl.errors import FormatError
from fastmbrl.io import load_npz, save_npz


def test_version_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert fastmbrl.__version__ in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fastmbrl", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and fastmbrl.__version__ in out.stdout


def test_unknown_public_name():
    with pytest.raises(AttributeError, match="no attribute"):
        fastmbrl.DoesNotExist  # noqa: B018


def test_npz_round_trip_and_refusals(tmp_path):
    import numpy as np

    p = save_npz(tmp_path / "x.npz", "thing", 1, {"a": 3}, {"w": np.arange(4.0)})
    header, arrays = load_npz(p, "thing", (1,))
    assert header["a"] == 3 and np.array_equal(arrays["w"], np.arange(4.0))
    with pytest.raises(FormatError, match="expected a 'other'"):
        load_npz(p, "other", (1,))
    with pytest.raises(FormatError, match="version 1"):
        load_npz(p, "thing", (2,))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="corrupt"):
        load_npz(bad, "thing", (1,))
    np.savez(tmp_path / "plain.npz", w=np.zeros(2))
    with pytest.raises(FormatError, match="no header"):
        load_npz(tmp_path / "plain.npz", "thing", (1,))
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz", "thing", (1,))


_COMPILE_ONE = """
import numpy as np
from fastmbrl.kernels.planner_ops import load_obs
load_obs(np.zeros(3), np.zeros(3, np.float32))
"""


def test_compiled_kernels_are_cached_per_user_not_in_the_package(tmp_path):
    """numba's cache goes to the user's cache folder (XDG_CACHE_HOME here), or NUMBA_CACHE_DIR,
    never into the installed package, which pip would leave behind."""
    import os
    from pathlib import Path

    package = Path(fastmbrl.__file__).parent
    before = {p for p in package.rglob("*") if p.suffix in (".nbi", ".nbc")}
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_ONE], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "xdg" / "fastmbrl" / "numba").rglob("*load_obs*.nbi"))
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_ONE], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "mine").rglob("*load_obs*.nbi"))
    after = {p for p in package.rglob("*") if p.suffix in (".nbi", ".nbc")}
    assert after == before
