"""The package's rooms: imports point one way (kernels <- models <- planning <- algorithms <- cli;
tasks and data need only the kernels and the shared utilities), no module imports itself back
through others, and compiled code lives in kernels/ (reward functions aside)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastmbrl"
#: a module may import modules of its own rank or below
RANK = {"errors": 0, "io": 0, "_validate": 0, "limits": 0, "progress": 0, "executor": 0, "stats": 0,
        "kernels": 1, "tasks": 2, "data": 2, "models": 3, "optim": 3, "planning": 4,
        "algorithms": 5, "cli": 6, "__main__": 7}
#: rooms that must not lean on anything but the kernels and the utilities
ALLOWED = {"tasks": {"errors", "io", "_validate", "limits", "kernels", "tasks"},
           "data": {"errors", "io", "_validate", "limits", "progress", "data"},
           "optim": {"errors", "io", "_validate", "limits", "progress", "kernels", "optim"}}
REWARD_ARGS = ["obs", "act", "next_obs", "out"]
DYNAMICS_ARGS = ["obs", "act", "next_obs"]  # a task's known dynamics, beside its rewards


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


MODULES = dict(_modules())


def _imports(name, path):
    """Modules of fastmbrl that `name` imports, anywhere in its body."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])


def test_imports_point_one_way():
    wrong = []
    for module, deps in GRAPH.items():
        room = _room(module)
        if room is None:
            continue  # the package's top level: lazy public names only
        for dep in deps:
            target = _room(dep)
            if target is None:
                continue  # the top level holds __version__ and lazy public names only
            if RANK[target] > RANK[room] or (room in ALLOWED and target not in ALLOWED[room]):
                wrong.append(f"{module} ({room}) imports {dep} ({target})")
    assert not wrong, "\n".join(wrong)


def test_every_room_is_known():
    assert {_room(m) for m in MODULES} - {None} == set(RANK)


def test_compiled_functions_live_in_kernels_unless_they_are_task_functions():
    stray = []
    for module, path in MODULES.items():
        if _room(module) == "kernels":
            continue
        compiled = [node for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.FunctionDef)
                    and any("njit" in ast.unparse(d) or "numba.jit" in ast.unparse(d)
                            for d in node.decorator_list)]
        rewards = [f for f in compiled
                   if [a.arg for a in f.args.args] in (REWARD_ARGS, DYNAMICS_ARGS)]
        for f in compiled:
            # a reward module may keep private compiled helpers of its rewards
            if f not in rewards and not (rewards and f.name.startswith("_")):
                stray.append(f"{module}.{f.name}")
    assert not stray, stray


def test_the_checks_see_the_imports():
    # the graph is read right: a few edges that must be there
    assert "fastmbrl.kernels.rollout" in GRAPH["fastmbrl.planning.scorer"]
    assert "fastmbrl.algorithms.base" in GRAPH["fastmbrl.algorithms.mbrl"]
    assert "fastmbrl.tasks.task" in GRAPH["fastmbrl.tasks.builtin"]
