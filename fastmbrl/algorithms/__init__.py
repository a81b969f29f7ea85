"""Training algorithms on one run lifecycle (base.Run): MBRL (Algorithm 1), TRPO, MB-MF and World
Models.

Each algorithm is a Run subclass with its Config; `ALGORITHMS` maps the names used in run
directories and on the command line to them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastmbrl._validate import StrPath
from fastmbrl.algorithms.base import Log, Run
from fastmbrl.algorithms.mbmf import MBMFConfig, MBMFRun
from fastmbrl.algorithms.mbrl import MBRLConfig, MBRLRun
from fastmbrl.algorithms.presets import preset, store_preset
from fastmbrl.algorithms.trpo import TRPOConfig, TRPORun
from fastmbrl.algorithms.worldmodels import WorldModelsConfig, WorldModelsRun
from fastmbrl.errors import FastMBRLError

ALGORITHMS: dict[str, type[Run]] = {"mbrl": MBRLRun, "trpo": TRPORun, "mbmf": MBMFRun,
                                    "worldmodels": WorldModelsRun}

__all__ = ["ALGORITHMS", "MBRLConfig", "MBRLRun", "TRPOConfig", "TRPORun", "MBMFConfig",
           "MBMFRun", "WorldModelsConfig", "WorldModelsRun", "register_preset", "preset",
           "train"]


def _algorithm(algo: str) -> type[Run]:
    if algo not in ALGORITHMS:
        raise FastMBRLError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algo]


def register_preset(algo: str, task: str, settings: Mapping, overwrite: bool = False) -> None:
    """Make `settings` (field names of the algorithm's config, e.g. MBRLConfig's planner,
    horizon, hidden) what runs of `algo` on `task` use unless told otherwise. Unknown names are
    refused now; values are checked when a run resolves its config."""
    names = _algorithm(algo).Config.setting_names()
    if not isinstance(settings, Mapping):
        raise FastMBRLError(f"settings must be a dict, got {type(settings).__name__}")
    unknown = sorted(set(settings) - names)
    if unknown:
        raise FastMBRLError(f"{algo} preset for {task}: unknown setting(s) {unknown}; known: "
                            f"{sorted(names)}")
    store_preset(algo, task, settings, overwrite)


def train(task: str, algo: str = "mbrl", out: StrPath | None = None, log: Log = print,
          tensorboard: bool = False, **settings: Any) -> Run:
    """Train `algo` (mbrl, trpo, mbmf or worldmodels) on `task`, as `fastmbrl train TASK --algo
    ALGO` does; `settings` are the algorithm's Config fields, `out` a new run directory (None:
    keep nothing; worldmodels needs one), `tensorboard` writes event files into out/tensorboard/ as `--tensorboard` does.
    Returns the finished run (its `metrics`, model or policy)."""
    return _algorithm(algo).run(task, out, log, tensorboard, **settings)
