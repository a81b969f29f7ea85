"""docs/formats.md's reference reader, examples/read_model.py, agrees with DynamicsModel.predict
on every kind of model file: single models and ensembles, angle, ignored and absolute entries,
every activation, float32 and float64; and it needs only NumPy and the standard library."""
import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from fastmbrl.data.buffer import ReplayBuffer
from fastmbrl.io import save_npz
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.models.mlp import ACTIVATION_NAMES

ROOT = Path(__file__).resolve().parents[1]
READER = ROOT / "examples" / "read_model.py"
SAVED_RUN = ROOT / "tests" / "data" / "runs-0881e17" / "mbrl" / "model.npz"
#: |reader - predict| allowed: float64 is tight; float32 leaves room for the fused
#: multiply-adds fastmbrl's kernels may use (an ulp or two per layer)
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


@pytest.fixture(scope="module")
def reader():
    """examples/read_model.py as a module, loaded by path (nothing added to sys.path)."""
    spec = importlib.util.spec_from_file_location("fastmbrl_reference_reader", READER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(model, rng):
    """Random weights and statistics (keeping the zero scale of ignored entries)."""
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("logvar_bounds") or key == "elites":
            continue  # prediction does not use the bounds; the elites stay valid
        if key == "input_scale":
            value = rng.uniform(0.3, 2.0, value.shape)
            value[list(model.ignore_obs_dims)] = 0
        elif key == "delta_std":
            value = rng.uniform(0.1, 3.0, value.shape)
        else:
            value = rng.normal(0, 0.7, value.shape)
        state[key] = value
    model.load_state(state)
    return model


def _inputs(model, rng, n=64):
    obs = rng.normal(0, 2, (n, model.obs_dim))
    obs[:, list(model.angle_obs_dims)] = rng.uniform(-12, 12, (n, len(model.angle_obs_dims)))
    return obs, rng.uniform(-2, 2, (n, model.act_dim))


def _compare(reader, model, path, rng):
    model.save(path)
    loaded = reader.load(path)
    saved = DynamicsModel.load(path)
    obs, act = _inputs(model, rng)
    expected = saved.predict(obs, act)
    got = reader.predict(loaded, obs, act)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    tol = TOLERANCE[model.dtype.type]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    # one pair without the batch axis
    np.testing.assert_allclose(reader.predict(loaded, obs[0], act[0]),
                               saved.predict(obs[0], act[0]), rtol=tol, atol=tol)
    return loaded


KINDS = {
    "single": dict(obs_dim=4, act_dim=2, hidden=(16, 8)),
    "angles": dict(obs_dim=5, act_dim=1, hidden=(12,), angle_obs_dims=(0, 3)),
    "ignored": dict(obs_dim=4, act_dim=2, hidden=(10, 10), ignore_obs_dims=(1, 2)),
    "absolute": dict(obs_dim=6, act_dim=2, hidden=(9,), absolute_obs_dims=(4, 5),
                     angle_obs_dims=(1,)),
    "ensemble": dict(obs_dim=5, act_dim=2, hidden=(8, 8), ensemble_size=3,
                     angle_obs_dims=(2,), ignore_obs_dims=(0,), absolute_obs_dims=(4,)),
    "linear": dict(obs_dim=3, act_dim=1, hidden=(), ensemble_size=2),
    "probabilistic": dict(obs_dim=4, act_dim=2, hidden=(8,), ensemble_size=3, num_elites=2,
                          probabilistic=True, angle_obs_dims=(1,)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reader_matches_predict(reader, tmp_path, kind, activation, dtype):
    rng = np.random.default_rng([len(kind), len(activation), np.dtype(dtype).itemsize])
    model = _randomise(DynamicsModel(**KINDS[kind], activation=activation, dtype=dtype, seed=3),
                       rng)
    loaded = _compare(reader, model, tmp_path / "model.npz", rng)
    assert loaded["ensemble_size"] == model.ensemble_size
    assert len(loaded["members"]) == model.ensemble_size
    assert loaded["dtype"] == model.dtype


@pytest.mark.parametrize("ensemble_size", [1, 2])
def test_reader_matches_a_fitted_model(reader, tmp_path, ensemble_size):
    """Statistics as fit computes them (constant columns, ignored and angle entries)."""
    rng = np.random.default_rng(ensemble_size)
    model = DynamicsModel(4, 1, hidden=(8,), activation="tanh", dtype=np.float64,
                          ensemble_size=ensemble_size, angle_obs_dims=(0,),
                          ignore_obs_dims=(2,), absolute_obs_dims=(3,), seed=1)
    buf = ReplayBuffer(4, 1, capacity=200)
    obs = rng.normal(size=(200, 4))
    obs[:, 1] = 0.5  # a constant column: its scale is 1, not 1/std
    act = rng.uniform(-1, 1, (200, 1))
    nxt = obs + 0.1 * np.tanh(obs + act)
    nxt[:, 3] = rng.normal(size=200)
    buf.add_batch(obs, act, nxt, np.zeros(200))
    model.fit(buf, epochs=2, batch_size=64)
    _compare(reader, model, tmp_path / "model.npz", rng)


def test_reader_reads_a_saved_run(reader):
    """A model.npz written by a training run (fastmbrl 0.1.0, a float32 ensemble)."""
    loaded = reader.load(SAVED_RUN)
    saved = DynamicsModel.load(SAVED_RUN)
    obs, act = _inputs(saved, np.random.default_rng(0))
    np.testing.assert_allclose(reader.predict(loaded, obs, act), saved.predict(obs, act),
                               rtol=2e-5, atol=2e-5)
    assert "ensemble of 2" in reader.summary(loaded)


def test_reader_refuses_another_kind(reader, tmp_path):
    buf = ReplayBuffer(2, 1, capacity=4)
    path = buf.save(tmp_path / "buffer.npz")
    with pytest.raises(ValueError, match="not a dynamics model"):
        reader.load(path)


def test_reader_refuses_an_unknown_header_field(reader, tmp_path):
    """A field the reader does not know might change what the arrays mean."""
    model = DynamicsModel(3, 1, hidden=(4,))
    header = {"obs_dim": 3, "act_dim": 1, "hidden": [4], "activation": "relu",
              "ignore_obs_dims": [], "seed": 0, "dtype": "float32", "ensemble_size": 1,
              "angle_obs_dims": [], "wrapped_obs_dims": [0]}
    path = save_npz(tmp_path / "model.npz", "dynamics_model", 2, header, model.state_dict())
    with pytest.raises(ValueError, match="wrapped_obs_dims"):
        reader.load(path)


def test_reader_imports_only_numpy_and_the_standard_library():
    tree = ast.parse(READER.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the reader must not use relative imports"
            names.add(node.module.split(".")[0])
    assert "fastmbrl" not in names
    outside = {n for n in names if n != "numpy" and n not in sys.stdlib_module_names}
    assert not outside, f"the reader imports {sorted(outside)}"
    # and no dynamic imports either
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & {"__import__", "exec", "eval"}
