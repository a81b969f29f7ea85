"""`fastmbrl train TASK`: a new run of any algorithm, or `--resume DIR` of a saved one.

The options are built from the algorithms' config fields (fastmbrl.algorithms.config.setting):
one option per setting name, routed to every algorithm that has it. MB-MF's phases take the
model-based and TRPO options too; where a name is taken already the phase's option carries its
prefix (--mbrl-steps, --trpo-hidden).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from fastmbrl.algorithms import ALGORITHMS
from fastmbrl.algorithms.rundir import read_run_config
from fastmbrl.errors import FastMBRLError, FileError
from fastmbrl.tasks import import_tasks, learned

DEFAULT_ALGO = "mbrl"


def _widths(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_TYPES = {"int": int, "float": float, "str": str, "widths": _widths, "json": _json_dict}


def _routes():
    """{option dest: (first field, {algo: (phase or None, field)})}, in declaration order."""
    routes: dict = {}

    def add(dest, algo, phase, field):
        routes.setdefault(dest, (field, {}))[1][algo] = (phase, field)

    for algo, run_class in ALGORITHMS.items():
        fields = run_class.Config.settings()
        taken = set()
        for f in fields:
            if f.metadata["cli"]:
                add(f.name, algo, None, f)
                taken.add(f.name)
        for f in fields:  # phases: nested configs (MB-MF's mbrl and trpo)
            check = f.metadata["check"]
            nested = getattr(check, "config_class", None)
            if nested is None:
                continue
            for g in nested.settings():
                if not g.metadata["cli"] or g.name in check.exclude:
                    continue
                dest = g.name if g.name not in taken else f"{f.name}_{g.name}"
                add(dest, algo, f.name, g)
                taken.add(dest)
    return routes


ROUTES = _routes()


def flag(dest: str) -> str:
    return f"--{dest.replace('_', '-')}"


def add_arguments(p) -> None:
    p.add_argument("task", nargs="?", help="task name, e.g. Pendulum-v1 (omit with --resume)")
    p.add_argument("--algo", choices=tuple(ALGORITHMS),
                   help="mbrl: model-based RL with MPC (default); trpo: model-free TRPO; "
                        "mbmf: MPC imitated by a policy, then fine-tuned by TRPO")
    p.add_argument("--seed", type=int, help="seed of everything random in the run (default 0)")
    p.add_argument("--out", help="run directory (default: runs/TASK-PLANNER-sSEED, or "
                                 "runs/TASK-ALGO-sSEED)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run")
    add_import_argument(p)
    p.add_argument("--learned-reward", action="store_true",
                   help="let the model learn the reward and termination (any continuous-action "
                        "Gymnasium id: the task becomes learned-reward/TASK) [mbrl, mbmf]")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files into OUT/tensorboard/ (needs "
                        ".[tensorboard]; the run directory remembers it, so --resume goes on)")
    g = p.add_argument_group("settings (default: the task's preset, else the library's; each "
                             "applies to the algorithms named after it)")
    for dest, (field, algos) in ROUTES.items():
        kind = field.metadata["kind"]
        helps: dict = {}  # one meaning per line, with the algorithms it holds for
        for a, (phase, f) in algos.items():
            helps.setdefault(f.metadata["help"], []).append(a if phase is None else f"{a} {phase}")
        help_ = "; ".join(f"{h} [{', '.join(where)}]" for h, where in helps.items())
        if kind == "bool":
            g.add_argument(flag(dest), dest=dest, action=argparse.BooleanOptionalAction,
                           help=help_)
        else:
            choices = getattr(field.metadata["check"], "choices", None)
            g.add_argument(flag(dest), dest=dest, type=_TYPES[kind], choices=choices,
                           metavar=None if choices else kind.upper(), help=help_)


def _given(args) -> dict:
    return {dest: getattr(args, dest) for dest in ROUTES if getattr(args, dest) is not None}


def _settings(algo: str, given: dict) -> dict:
    """The given options as the algorithm's config settings; refuses options it does not have."""
    foreign = [dest for dest in given if algo not in ROUTES[dest][1]]
    if foreign:
        algos = [a for a in ALGORITHMS if any(a in ROUTES[dest][1] for dest in foreign)]
        raise FastMBRLError(f"{', '.join(_spelling(d, given[d]) for d in foreign)} only apply "
                            f"to --algo {' or '.join(algos)}")
    settings: dict = {}
    for dest, value in given.items():
        phase, field = ROUTES[dest][1][algo]
        (settings.setdefault(phase, {}) if phase else settings)[field.name] = value
    return settings


def _spelling(dest: str, value) -> str:
    if value is False:
        return f"--no-{dest.replace('_', '-')}"
    return flag(dest)


def _writable_dir(out: str) -> Path:
    """`--out` as a path, refused (before anything is written) if it cannot become a run
    directory: empty, a file, under a file, or under a directory we cannot write."""
    if not out:
        raise FastMBRLError("--out must not be empty")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FastMBRLError(f"--out {out} is a file, not a directory")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())
    if not existing.is_dir():
        raise FastMBRLError(f"--out {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FastMBRLError(f"--out {out}: cannot write into {existing}")
    return path


def add_import_argument(p) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module of yours that registers tasks (or MODULE:ATTRIBUTE "
                        "of a Task); repeatable; a run directory remembers it")


def import_modules(args) -> None:
    for spec in args.imports:
        import_tasks(spec)


def new_run(args, log):
    """A new run directory from `fastmbrl train` arguments."""
    algo = args.algo or DEFAULT_ALGO
    if not args.task:
        raise FastMBRLError(f"a task name is required, e.g. fastmbrl train Pendulum-v1 --algo {algo}")
    run_class = ALGORITHMS[algo]
    settings = _settings(algo, _given(args))
    task = args.task
    if args.learned_reward:
        if algo == "trpo":
            raise FastMBRLError("--learned-reward applies to --algo mbrl or mbmf (TRPO learns "
                                "no model)")
        if not learned.base_id(task):
            task = learned.PREFIX + task
    cfg = run_class.Config.create(task, 0 if args.seed is None else args.seed,
                                  **settings).resolved()
    out = _writable_dir(args.out if args.out is not None else
                        f"runs/{cfg.task}-{cfg.label}-s{cfg.seed}")
    run = run_class(cfg, out, log)
    run.tensorboard = args.tensorboard
    try:
        run.write_config()
    except OSError as exc:
        raise FileError(f"--out {out}: cannot create the run directory: "
                        f"{exc.strerror or exc}") from None
    log(f"training {cfg.task} with {run.title or cfg.label} for {cfg.steps} steps into {out}")
    return run


def resumed_run(args, log):
    """The run saved in `--resume DIR`; any option that would change it is refused."""
    if args.task:
        raise FastMBRLError("give either a task or --resume DIR, not both")
    given = ([flag("algo")] if args.algo is not None else []) + [
        _spelling(d, v) for d, v in _given(args).items()] + [
        flag(name) for name in ("seed", "out") if getattr(args, name) is not None] + (
        ["--learned-reward"] if args.learned_reward else []) + (
        ["--tensorboard"] if args.tensorboard else [])
    if given:
        raise FastMBRLError(
            f"--resume continues a run with the settings saved in {args.resume}; "
            f"drop {', '.join(given)} (or start a new run to change them)")
    algo = read_run_config(args.resume)["algo"]
    return ALGORITHMS[algo].resume(args.resume, log)


def run(args) -> int:
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    import_modules(args)
    r = resumed_run(args, log) if args.resume else new_run(args, log)
    t0 = time.perf_counter()
    r.train()
    last = next((m["mean_return"] for m in reversed(r.metrics) if m.get("mean_return") is not None),
                float("nan"))
    print(f"done: {r.env_steps} steps in {time.perf_counter() - t0:.0f} s, last mean return "
          f"{last:.2f}; evaluate with: fastmbrl eval {r.out}")
    return 0
