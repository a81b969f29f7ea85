"""fastmbrl: model-based reinforcement learning on the CPU with NumPy and Numba."""
from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"


def _cache_dir() -> str:
    """numba's cache for fastmbrl's kernels: NUMBA_CACHE_DIR if set, else a per-user folder.

    numba's default writes next to the sources, into the installed package, where pip never
    removes it (a leftover __pycache__ then shadows a later editable install as a namespace
    package) and where a read-only install cannot write (every start recompiles)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastmbrl", "numba")


# before any kernel is compiled; numba re-reads the environment when it compiles, so both
os.environ["NUMBA_CACHE_DIR"] = _cache_dir()
if "numba" in sys.modules:
    sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

# Public names, imported on first use so that `import fastmbrl` stays light.
_LAZY = {
    "ReplayBuffer": "fastmbrl.data.buffer",
    "MLP": "fastmbrl.models.mlp",
    "Adam": "fastmbrl.models.mlp",
    "SGD": "fastmbrl.models.mlp",
    "DynamicsModel": "fastmbrl.models.dynamics",
    "FunctionModel": "fastmbrl.models.function",
    "ConvVAE": "fastmbrl.models.vae",
    "VAEConfig": "fastmbrl.models.vae",
    "RandomShooting": "fastmbrl.planning.planners",
    "CEM": "fastmbrl.planning.planners",
    "MPPI": "fastmbrl.planning.planners",
    "ICEM": "fastmbrl.planning.planners",
    "BeamSearch": "fastmbrl.planning.beam",
    "Planner": "fastmbrl.planning.planners",
    "num_threads": "fastmbrl.kernels",
    "Controller": "fastmbrl.planning.controller",
    "Task": "fastmbrl.tasks",
    "register_task": "fastmbrl.tasks",
    "get_task": "fastmbrl.tasks",
    "list_tasks": "fastmbrl.tasks",
    "import_tasks": "fastmbrl.tasks",
    "train": "fastmbrl.algorithms",
    "register_preset": "fastmbrl.algorithms",
    "CMAES": "fastmbrl.optim.cmaes",
    "FastMBRLError": "fastmbrl.errors",
    "FormatError": "fastmbrl.errors",
    "OptimizerError": "fastmbrl.errors",
    "ResourceLimitError": "fastmbrl.limits",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastmbrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
