"""Run configurations: dataclasses whose fields declare their default, check and help once.

A field declared with `setting(...)` holds None until resolved, meaning "not given".
`Config.resolved()` fills it from, in order: what was given, the algorithm's preset for the task
(fastmbrl.algorithms.presets), the declared default. Then every declared check runs, then the
config's own `validate()` for rules between fields. The `fastmbrl train` options are built from
the same declarations (fastmbrl.cli.train), so a setting is named, typed and explained once.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from fastmbrl.algorithms.presets import preset
from fastmbrl.errors import FastMBRLError
from fastmbrl.tasks import get_task, import_tasks


#: a setting's check: (value, name) -> the normalised value, or a FastMBRLError
Check = Callable[[Any, str], Any]


def setting(default: Any = None, help: str = "", check: Check | None = None, kind: str = "",
            choices: Sequence[str] | None = None, cli: bool = True) -> Any:
    """A config field: `default` when neither given nor preset (a callable gets the config
    resolved so far); `check(value, name)` returns the normalised value or raises
    FastMBRLError; `kind` is how the CLI parses it (int, float, str, bool, widths, json)."""
    return dataclasses.field(default=None, metadata={
        "default": default, "help": help, "check": check, "kind": kind, "choices": choices,
        "cli": cli})


# -- checks: (value, name) -> normalised value, or a FastMBRLError naming the setting -----------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any, name: str) -> int:
    if not _is_int(value) or value <= 0:
        raise FastMBRLError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(value: Any, name: str) -> int:
    if not _is_int(value) or value < 0:
        raise FastMBRLError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def positive(value: Any, name: str) -> float:
    if not _is_number(value) or not value > 0 or not math.isfinite(value):
        raise FastMBRLError(f"{name} must be positive, got {value!r}")
    return float(value)


def non_negative(value: Any, name: str) -> float:
    if not _is_number(value) or not value >= 0 or not math.isfinite(value):
        raise FastMBRLError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def finite(value: Any, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise FastMBRLError(f"{name} must be finite, got {value!r}")
    return float(value)


def unit_interval(value: Any, name: str) -> float:
    if not _is_number(value) or not 0 <= value <= 1:
        raise FastMBRLError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def fraction(value: Any, name: str) -> float:
    if not _is_number(value) or not 0 <= value < 1:
        raise FastMBRLError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise FastMBRLError(f"{name} must be True or False, got {value!r}")
    return value


def widths(value: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(value)
    except TypeError:
        out = None
    if not out or any(not _is_int(h) or h <= 0 for h in out):
        raise FastMBRLError(f"{name} must be positive integers, got {value!r}")
    return out


def mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise FastMBRLError(f"{name} must be a dict, got {value!r}")
    return dict(value)


def optional(check: Check) -> Check:
    def check_or_none(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)
    return check_or_none


def one_of(*names: str) -> Check:
    def check_name(value: Any, name: str) -> Any:
        if value not in names:
            raise FastMBRLError(f"unknown {name} {value!r}; choose one of {', '.join(names)}")
        return value
    check_name.choices = names  # type: ignore[attr-defined]  # read by the CLI's --help
    return check_name


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- the base -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Config:
    """Settings of one run: the task, the seed and the algorithm's fields (see `setting`)."""

    ALGO: ClassVar[str] = ""

    task: str
    seed: int = 0
    if TYPE_CHECKING:  # every algorithm declares its budget in env steps
        @property
        def steps(self) -> int: ...

    @staticmethod
    def lookup_task(name: str) -> Any:
        """The task object a run of this algorithm trains on (the task registry's by default;
        World Models looks among the pixel tasks)."""
        return get_task(name)

    @classmethod
    def settings(cls) -> list[dataclasses.Field]:
        """The declared fields (everything but task and seed)."""
        return [f for f in dataclasses.fields(cls) if f.name not in ("task", "seed")]

    @classmethod
    def setting_names(cls) -> set[str]:
        return {f.name for f in cls.settings()}

    @classmethod
    def create(cls, task: str, seed: int = 0, **settings: Any) -> "Config":
        """A config from keyword settings, refusing unknown names. `task` is a task's name or
        MODULE:ATTRIBUTE of one (imported now: fastmbrl.tasks.import_tasks)."""
        unknown = set(settings) - cls.setting_names()
        if unknown:
            raise FastMBRLError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if isinstance(task, str) and ":" in task:
            task = import_tasks(task)[0].name
        return cls(task=task, seed=seed, **settings)

    @property
    def label(self) -> str:
        """How run-directory names and log lines name the algorithm."""
        return self.ALGO

    def budget(self) -> str:
        """What the run will spend, for its first log line."""
        return f"{self.steps} steps"

    def preset(self) -> dict:
        """This algorithm's preset for the task (empty when there is none)."""
        return preset(self.ALGO, self.task)

    def resolved(self) -> "Config":
        """A copy with every None filled (given > preset > declared default), checked."""
        self.lookup_task(self.task)  # an unknown task fails first, with the registry's message
        if not _is_int(self.seed) or self.seed < 0:  # random generators take no negative seed
            raise FastMBRLError(f"seed must be a non-negative integer, got {self.seed!r}")
        given = self.adjust_preset(self.preset())
        values = dataclasses.asdict(self)
        for f in self.settings():  # in declaration order: a callable default sees earlier fields
            if values[f.name] is None and f.name in given:
                values[f.name] = given[f.name]
            default = f.metadata["default"]
            if values[f.name] is None:
                values[f.name] = default(values) if callable(default) else default
            check = f.metadata["check"]
            if check is not None:
                values[f.name] = check(values[f.name], f.name)
        cfg = type(self)(**values)
        cfg.validate()
        return cfg

    def adjust_preset(self, preset: dict) -> dict:
        """Hook: the preset as it applies given what the user set."""
        return preset

    def validate(self) -> None:
        """Hook: rules between fields, after every field's own check."""
