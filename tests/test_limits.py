"""Bounded allocations: every size a setting or a saved file implies is estimated and refused
above fastmbrl.limits' limit, with a one-line error naming the setting, the bytes and how to
raise the limit; sizes read from a file must agree with the arrays in it.

Hostile sizes run in a subprocess under an address-space limit (RLIMIT_AS), so a regression
shows as a MemoryError there, never as gigabytes allocated by the test run."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastmbrl import limits
from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import load_npz, save_npz
from fastmbrl.kernels.rollout import pack_model
from fastmbrl.limits import ResourceLimitError
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.models.mlp import MLP
from fastmbrl.planning.controller import Controller
from fastmbrl.planning.planners import CEM, ICEM, MPPI, RandomShooting, colored_noise_matrix
from fastmbrl.planning.scorer import Scorer
from tests.reference import quadratic_reward
from tests.test_planners import linear_model

ROOT = Path(__file__).resolve().parents[1]
KW = dict(action_low=[-1.0], action_high=[1.0])


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    """Every test starts from the default limit (no variable, no override)."""
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    previous = limits.set_max_bytes(None)
    yield
    limits.set_max_bytes(previous)


@pytest.fixture(scope="module")
def packed():
    return pack_model(activation="relu", **linear_model())


# ------------------------------------------------------------------------------ the limit
@pytest.mark.parametrize("text, nbytes", [
    ("1000", 1000), (1000, 1000), ("8G", 8 << 30), ("8g", 8 << 30), ("8GiB", 8 << 30),
    ("8 GB", 8 << 30), ("512M", 512 << 20), ("1.5K", 1536), ("2T", 2 << 40),
])
def test_parse_bytes(text, nbytes):
    assert limits.parse_bytes(text) == nbytes


@pytest.mark.parametrize("text", ["", "-5", "0", "lots", "8X", "1e9", True, "nan"])
def test_parse_bytes_refuses_nonsense(text):
    with pytest.raises(ValueError, match="byte count"):
        limits.parse_bytes(text)


def test_default_is_the_smaller_of_8_gib_and_half_the_memory():
    ram = limits.physical_memory()
    assert ram is None or ram > 0
    expected = min(8 << 30, (ram or 16 << 30) // 2)
    assert limits.default_max_bytes() == expected == limits.max_bytes()


def test_the_variable_and_the_setter_set_the_limit(monkeypatch):
    monkeypatch.setenv(limits.ENV_VAR, "3M")
    assert limits.max_bytes() == 3 << 20
    assert limits.set_max_bytes("1G") is None
    assert limits.max_bytes() == 1 << 30  # the setter wins over the variable
    assert limits.set_max_bytes(None) == 1 << 30
    assert limits.max_bytes() == 3 << 20
    monkeypatch.setenv(limits.ENV_VAR, "a lot")
    with pytest.raises(FastMBRLError, match=f"{limits.ENV_VAR}: expected a byte count"):
        limits.max_bytes()


def test_format_and_check_bytes():
    assert limits.format_bytes(512) == "512 B"
    assert limits.format_bytes(int(3.7 * (1 << 30))) == "3.7 GiB"
    assert limits.check_bytes("x", {"a": 10, "b": 20}) == 30
    limits.set_max_bytes(1000)
    with pytest.raises(ResourceLimitError) as info:
        limits.check_bytes("Thing(size=9)", {"big part (size x 8)": 2000, "tiny": 1}, "size")
    message = str(info.value)
    assert message.startswith("Thing(size=9) would allocate 1.95 KiB (big part (size x 8) "
                              "1.95 KiB), above the limit of 1000 B: lower size")
    assert "tiny" not in message and "FASTMBRL_MAX_BYTES" in message and "set_max_bytes" in message
    assert isinstance(info.value, MemoryError) and isinstance(info.value, FastMBRLError)


# ------------------------------------------------------------------- settings, in process
def _refuses(make, *names):
    """make() raises ResourceLimitError naming every one of `names`, in one line."""
    with pytest.raises(ResourceLimitError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message and "FASTMBRL_MAX_BYTES" in message
    for name in names:
        assert name in message, (name, message)
    return message


def test_a_small_limit_refuses_settings_that_need_more(packed):
    limits.set_max_bytes("256K")
    _refuses(lambda: CEM(packed, quadratic_reward, horizon=100, num_samples=1000, **KW),
             "CEM(", "num_samples=1000", "horizon=100", "candidate actions")
    _refuses(lambda: MPPI(packed, quadratic_reward, horizon=10, num_samples=20_000, **KW),
             "num_samples=20000")
    _refuses(lambda: RandomShooting(packed, quadratic_reward, horizon=10, num_samples=20_000,
                                    **KW), "RandomShooting(")
    _refuses(lambda: ICEM(packed, quadratic_reward, horizon=300, **KW),
             "horizon=300", "colored noise (horizon x horizon)")
    _refuses(lambda: colored_noise_matrix(300, 0.25), "horizon=300")
    _refuses(lambda: Scorer(packed, quadratic_reward, horizon=10, max_candidates=20_000),
             "max_candidates=20000", "workspace")
    _refuses(lambda: ReplayBuffer(10, 10, capacity=10_000), "capacity=10000")
    _refuses(lambda: DynamicsModel(3, 1, hidden=(300, 300)), "hidden=(300, 300)")
    _refuses(lambda: DynamicsModel(3, 1, hidden=(64,), ensemble_size=100), "ensemble_size=100")
    _refuses(lambda: MLP(4, 3, hidden=(300, 300)), "hidden=(300, 300)")
    # the same settings pass once the limit is raised
    limits.set_max_bytes("64M")
    CEM(packed, quadratic_reward, horizon=100, num_samples=1000, **KW)
    ReplayBuffer(10, 10, capacity=10_000)
    DynamicsModel(3, 1, hidden=(64,), ensemble_size=100)


def test_the_limit_comes_from_the_environment_variable(packed, monkeypatch):
    monkeypatch.setenv(limits.ENV_VAR, "100K")
    _refuses(lambda: ReplayBuffer(10, 10, capacity=10_000), "capacity")
    monkeypatch.setenv(limits.ENV_VAR, "100M")
    ReplayBuffer(10, 10, capacity=10_000)


def test_a_model_fit_checks_its_bootstrap_rows():
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(3, 1, 2000)
    obs = rng.normal(size=(2000, 3))
    buf.add_batch(obs, rng.normal(size=(2000, 1)), obs + 0.1, np.zeros(2000))
    model = DynamicsModel(3, 1, hidden=(8,), ensemble_size=5)
    limits.set_max_bytes("300K")
    _refuses(lambda: model.fit(buf, epochs=1, input_noise=0.01), "ensemble_size=5")
    assert model.version == 0


def test_prediction_error_checks_its_windows():
    model = DynamicsModel(3, 1, hidden=(8,))
    obs, act = np.zeros((1001, 3)), np.zeros((1000, 1))
    limits.set_max_bytes("1M")
    _refuses(lambda: model.prediction_error([(obs, act)], horizon=500), "horizon=500",
             "501 windows")
    assert model.prediction_error([(obs[:11], act[:10])], horizon=5)["windows"] == 6


# ------------------------------------------------------------------ hostile files, crafted
def _save_model(directory):
    model = DynamicsModel(3, 1, (8,), seed=0)
    Controller(model, "Pendulum-v1", horizon=5, num_samples=16).save(directory)
    return directory / "model.npz"


def _rewrite_npz(path, kind, versions, **header_changes):
    header, arrays = load_npz(path, kind, versions)
    version = header.pop("format_version")
    header.pop("kind")
    header.update(header_changes)
    save_npz(path, kind, version, header, arrays)
    assert path.stat().st_size < 20_000


def _rewrite_json(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


# mild mismatches here; the huge ones run in the memory-bounded process below
MODEL_FIELDS = [("hidden", [8, 8]), ("hidden", [16]), ("hidden", []), ("obs_dim", 4),
                ("act_dim", 2), ("ensemble_size", 2), ("angle_obs_dims", [0]),
                ("ensemble_size", "1"), ("hidden", "8"), ("dtype", None), ("dtype", "int32"),
                ("seed", "3"), ("seed", True), ("activation", None), ("ignore_obs_dims", "0")]


@pytest.mark.parametrize("field, value", MODEL_FIELDS)
def test_a_model_header_must_agree_with_its_arrays(tmp_path, field, value):
    path = _save_model(tmp_path)
    _rewrite_npz(path, "dynamics_model", (1, 2), **{field: value})
    with pytest.raises(FormatError, match=f"{path}.*'{field}'"):
        DynamicsModel.load(path)


@pytest.mark.parametrize("field, value", [("obs_dim", 4), ("act_dim", 7), ("size", 3),
                                          ("obs_dim", "3")])
def test_a_buffer_header_must_agree_with_its_arrays(tmp_path, field, value):
    buf = ReplayBuffer(3, 1, 10)
    buf.add_batch(np.zeros((2, 3)), np.zeros((2, 1)), np.ones((2, 3)), np.zeros(2))
    path = buf.save(tmp_path / "buffer.npz")
    _rewrite_npz(path, "replay_buffer", (1,), **{field: value})
    with pytest.raises(FormatError, match=f"{path}.*{field}"):
        ReplayBuffer.load(path)


@pytest.mark.parametrize("change, message", [
    (dict(obs=np.full((2, 3), np.nan, np.float32)), "'obs' holds NaN"),
    (dict(reward=np.array([0, np.inf], np.float32)), "'reward' holds NaN or infinite"),
    (dict(surprise=np.zeros(3)), r"unknown arrays \['surprise'\]"),
])
def test_a_buffer_file_holds_only_finite_rows_of_its_fields(tmp_path, change, message):
    buf = ReplayBuffer(3, 1, 10)
    buf.add_batch(np.zeros((2, 3)), np.zeros((2, 1)), np.ones((2, 3)), np.zeros(2))
    path = buf.save(tmp_path / "buffer.npz")
    header, arrays = load_npz(path, "replay_buffer", (1,))
    header = {k: v for k, v in header.items() if k not in ("kind", "format_version")}
    save_npz(path, "replay_buffer", 1, header, {**arrays, **change})
    with pytest.raises(FormatError, match=message):
        ReplayBuffer.load(path)


def test_a_buffer_capacity_from_a_file_goes_through_the_limit(tmp_path):
    buf = ReplayBuffer(3, 1, 10)
    path = buf.save(tmp_path / "buffer.npz")
    _rewrite_npz(path, "replay_buffer", (1,), capacity=10**6)
    limits.set_max_bytes("1M")
    _refuses(lambda: ReplayBuffer.load(path), str(path), "capacity=1000000")


def test_controller_settings_from_a_file_go_through_the_limit(tmp_path):
    _save_model(tmp_path)
    _rewrite_json(tmp_path / "controller.json", horizon=10_000)
    limits.set_max_bytes("1M")
    _refuses(lambda: Controller.load(tmp_path), "controller.json", "horizon=10000")
    _rewrite_json(tmp_path / "controller.json", horizon="5")
    with pytest.raises(FormatError, match="controller.json.*horizon must be a positive integer"):
        Controller.load(tmp_path)


# ----------------------------------------------------- hostile sizes, memory-bounded process
HOSTILE = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    import numpy as np
    from fastmbrl.data.buffer import ReplayBuffer
    from fastmbrl.kernels.rollout import pack_model
    from fastmbrl.models.dynamics import DynamicsModel
    from fastmbrl.models.mlp import MLP
    from fastmbrl.planning.controller import Controller
    from fastmbrl.planning.planners import CEM, ICEM
    from tests.reference import quadratic_reward
    from tests.test_planners import linear_model

    tmp = Path(sys.argv[1])
    packed = pack_model(activation="relu", **linear_model())
    kw = dict(action_low=[-1.0], action_high=[1.0])
    vm = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
    cases = {
        "icem_horizon": lambda: ICEM(packed, quadratic_reward, horizon=100_000, **kw),
        "cem_population": lambda: CEM(DynamicsModel(3, 1, (200, 200)), quadratic_reward,
                                      horizon=20, num_samples=10**7, **kw),
        "cem_population_alias": lambda: CEM(packed, quadratic_reward, horizon=20,
                                            population=10**9, **kw),
        "ensemble": lambda: DynamicsModel(3, 1, (200, 200), ensemble_size=10**9),
        "hidden": lambda: MLP(4, 3, hidden=(10**6, 10**6)),
        "capacity": lambda: ReplayBuffer(3, 1, capacity=10**12),
    }
    for d in sorted(p for p in tmp.iterdir() if p.is_dir()):
        if (d / "buffer.npz").exists():
            cases[d.name] = (lambda d: lambda: ReplayBuffer.load(d / "buffer.npz"))(d)
        else:
            cases[d.name] = (lambda d: lambda: Controller.load(d))(d)
    out = {}
    for name, make in cases.items():
        t0 = time.perf_counter()
        try:
            make()
            out[name] = ["ok", "", 0]
        except Exception as exc:
            out[name] = [type(exc).__name__, str(exc), time.perf_counter() - t0]
    print(json.dumps(out))
""")

EXPECTED = {  # case: (error type, words the message must hold)
    "icem_horizon": ("ResourceLimitError", ["ICEM(", "horizon=100000", "GiB"]),
    "cem_population": ("ResourceLimitError", ["CEM(", "num_samples=10000000", "GiB"]),
    "cem_population_alias": ("ResourceLimitError", ["num_samples=1000000000"]),
    "ensemble": ("ResourceLimitError", ["ensemble_size=1000000000"]),
    "hidden": ("ResourceLimitError", ["hidden=(1000000, 1000000)"]),
    "capacity": ("ResourceLimitError", ["capacity=1000000000000", "TiB"]),
    "file_ensemble": ("FormatError", ["model.npz", "'ensemble_size'", "1000000000"]),
    "file_hidden": ("FormatError", ["model.npz", "'hidden'", "[20000, 20000]"]),
    "file_horizon": ("ResourceLimitError", ["controller.json", "horizon=1000000000"]),
    "file_num_samples": ("ResourceLimitError", ["controller.json", "num_samples=1000000000000"]),
    "file_buffer_obs_dim": ("FormatError", ["buffer.npz", "obs_dim", "1000000000"]),
    "file_buffer_capacity": ("ResourceLimitError", ["buffer.npz", "capacity=1000000000000"]),
}


def test_hostile_sizes_are_refused_quickly_in_little_memory(tmp_path):
    files = {"file_ensemble": ("model", {"ensemble_size": 10**9}),
             "file_hidden": ("model", {"hidden": [20000, 20000]}),
             "file_horizon": ("controller", {"horizon": 10**9}),
             "file_num_samples": ("controller", {"num_samples": 10**12})}
    for name, change in (("file_buffer_obs_dim", {"obs_dim": 10**9}),
                         ("file_buffer_capacity", {"capacity": 10**12})):
        buf = ReplayBuffer(3, 1, 10)
        buf.add_batch(np.zeros((2, 3)), np.zeros((2, 1)), np.ones((2, 3)), np.zeros(2))
        (tmp_path / name).mkdir()
        _rewrite_npz(buf.save(tmp_path / name / "buffer.npz"), "replay_buffer", (1,), **change)
    for name, (which, change) in files.items():
        directory = tmp_path / name
        directory.mkdir()
        path = _save_model(directory)
        if which == "model":
            _rewrite_npz(path, "dynamics_model", (1, 2), **change)
        else:
            _rewrite_json(directory / "controller.json", **change)
    env = {k: v for k, v in os.environ.items() if k != limits.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", HOSTILE, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == set(EXPECTED)
    wrong = []
    for name, (kind, words) in EXPECTED.items():
        got, message, seconds = results[name]
        if got != kind or any(w not in message for w in words) or "\n" in message:
            wrong.append(f"{name}: {got}: {message[:300]}")
        elif seconds > 2.0:
            wrong.append(f"{name}: took {seconds:.1f} s")
    assert not wrong, "\n".join(wrong)

