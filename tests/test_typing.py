"""The public API is fully annotated and ships py.typed (PEP 561), so that type checkers use it."""
from __future__ import annotations

import importlib
import importlib.resources
import inspect

import pytest

# The packages whose __all__ is the public API, and the public modules those names come from
# (for a module without __all__, every public name it defines).
PACKAGES = ["fastmbrl", "fastmbrl.algorithms", "fastmbrl.tasks"]
MODULES = ["fastmbrl.models.mlp", "fastmbrl.models.dynamics", "fastmbrl.models.policies",
           "fastmbrl.models.vae",
           "fastmbrl.data.buffer", "fastmbrl.planning.base", "fastmbrl.planning.planners",
           "fastmbrl.planning.beam", "fastmbrl.planning.controller",
           "fastmbrl.planning.scorer", "fastmbrl.tasks.task", "fastmbrl.algorithms.base",
           "fastmbrl.algorithms.config", "fastmbrl.io", "fastmbrl.errors", "fastmbrl.progress",
           "fastmbrl.limits", "fastmbrl.kernels"]


def _public(module):
    if hasattr(module, "__all__"):
        return [(n, getattr(module, n)) for n in module.__all__ if n != "__version__"]
    return [(n, v) for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]


def _callables():
    """(qualified name, function, is a method) for every public function and method."""
    seen, walked = set(), set()
    for name in PACKAGES + MODULES:
        module = importlib.import_module(name)
        for attr, obj in _public(module):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if inspect.isclass(obj):
                for klass in obj.__mro__:
                    if not klass.__module__.startswith("fastmbrl") or klass in walked:
                        continue
                    walked.add(klass)
                    for meth, value in vars(klass).items():
                        if meth.startswith("_") and meth not in ("__init__", "__call__"):
                            continue
                        if isinstance(value, (staticmethod, classmethod)):
                            yield f"{klass.__module__}.{klass.__qualname__}.{meth}", value.__func__, \
                                isinstance(value, classmethod)
                        elif isinstance(value, property):
                            yield f"{klass.__module__}.{klass.__qualname__}.{meth}", value.fget, True
                        elif inspect.isfunction(value):
                            yield f"{klass.__module__}.{klass.__qualname__}.{meth}", value, True
            elif inspect.isfunction(obj):
                yield f"{obj.__module__}.{obj.__qualname__}", inspect.unwrap(obj), False


def _missing(func, method):
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1 if method else 0:]
    missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    # __init__ returns None by definition; type checkers do not need it spelled out
    if sig.return_annotation is inspect.Signature.empty and func.__name__ != "__init__":
        missing.append("return")
    return missing


def test_the_walk_finds_the_public_api():
    names = {q for q, _, _ in _callables()}
    # a walk that found nothing would pass vacuously
    for expected in ("fastmbrl.models.dynamics.DynamicsModel.predict",
                     "fastmbrl.planning.controller.Controller.act",
                     "fastmbrl.planning.base.Planner.plan", "fastmbrl.algorithms.train",
                     "fastmbrl.algorithms.base.Run.resume", "fastmbrl.tasks.task.register_task"):
        assert expected in names
    assert len(names) > 150


def test_every_public_function_is_annotated():
    problems = {}
    for qualname, func, method in _callables():
        missing = _missing(func, method)
        if missing:
            problems.setdefault(qualname, missing)
    assert not problems, "missing annotations:\n" + "\n".join(
        f"  {q}: {', '.join(m)}" for q, m in sorted(problems.items()))


def test_the_check_sees_a_missing_annotation():
    def f(x: int, y) -> int:
        return x

    def g(x: int):
        return x

    assert _missing(f, False) == ["y"] and _missing(g, False) == ["return"]


def test_py_typed_is_installed():
    assert importlib.resources.files("fastmbrl").joinpath("py.typed").is_file()


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name):
    module = importlib.import_module(name)
    for attr in module.__all__:
        assert getattr(module, attr) is not None
