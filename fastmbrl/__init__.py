"""fastmbrl: model-based reinforcement learning on the CPU with NumPy and Numba."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names, imported on first use so that `import fastmbrl` stays light.
_LAZY = {
    "ReplayBuffer": "fastmbrl.buffer",
    "MLP": "fastmbrl.nn",
    "Adam": "fastmbrl.nn",
    "SGD": "fastmbrl.nn",
    "DynamicsModel": "fastmbrl.dynamics",
    "RandomShooting": "fastmbrl.planners",
    "CEM": "fastmbrl.planners",
    "MPPI": "fastmbrl.planners",
    "ICEM": "fastmbrl.planners",
    "Planner": "fastmbrl.planners",
    "num_threads": "fastmbrl.kernels",
    "Controller": "fastmbrl.controller",
    "Task": "fastmbrl.tasks",
    "register_task": "fastmbrl.tasks",
    "get_task": "fastmbrl.tasks",
    "FastMBRLError": "fastmbrl.errors",
    "FormatError": "fastmbrl.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastmbrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
