"""`fastmbrl train TASK`: a new run of any algorithm, or `--resume DIR` of a saved one.

The options are built from the algorithms' config fields (fastmbrl.algorithms.config.setting):
one option per setting name, routed to every algorithm that has it. MB-MF's phases take the
model-based and TRPO options too; where a name is taken already the phase's option carries its
prefix (--mbrl-steps, --trpo-hidden). The planners' options (--iterations, --temperature, ...)
are built from the planners' constructors and go into the run's planner_options.

`--config FILE` (TOML, or JSON by the suffix .json: a run's config.json as it is) gives the task,
seed, algorithm and settings: an option beats the file, the file the task's preset, the preset
the default.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

from fastmbrl.algorithms import ALGORITHMS
from fastmbrl.algorithms.base import config_record
from fastmbrl.algorithms.rundir import config_entry, read_run_config, run_config_meta
from fastmbrl.cli.argtypes import json_object
from fastmbrl.errors import FastMBRLError, FileError, FormatError
from fastmbrl.io import read_json, read_toml
from fastmbrl.planning.controller import planner_keywords
from fastmbrl.planning.planners import OPTION_HELP, PLANNERS
from fastmbrl.progress import Progress
from fastmbrl.tasks import import_tasks, learned

DEFAULT_ALGO = "mbrl"


def _widths(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _number(text: str):
    """An integer if `text` is one (a count), else a finite float (a fraction, a std)."""
    try:
        return int(text)
    except ValueError:
        return _finite(text)


_TYPES = {"int": int, "float": float, "str": str, "widths": _widths, "json": json_object}


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

#: planner keywords without an option of their own: the sample budget is the num_samples
#: setting (population its deprecated name); rows and isa tune the machine, not the training
#: (--planner-options still passes them)
_NOT_PLANNER_FLAGS = ("num_samples", "population", "rows", "isa")


def _planner_flags():
    """{option dest: (planner keyword, {planner: its default})}, in the planners' order; a
    keyword that a setting's option has taken is prefixed (--planner-KEYWORD)."""
    flags: dict = {}
    for name in PLANNERS:
        for keyword, default in planner_keywords(name).items():
            if keyword not in _NOT_PLANNER_FLAGS:
                dest = keyword if keyword not in ROUTES else f"planner_{keyword}"
                flags.setdefault(dest, (keyword, {}))[1][name] = default
    return flags


PLANNER_FLAGS = _planner_flags()
#: {algorithm: its phase holding planner_options (None: the config itself)}
_PLANNING = {algo: phase for algo, (phase, _) in ROUTES["planner_options"][1].items()}


def _planner_type(defaults: dict):
    """How an option is parsed: the one type of the planners' defaults, else a number (a
    default of None stands for an array or "off"; an int and a float, a count or a fraction)."""
    types = {type(d) for d in defaults.values()}
    if len(types) == 1 and types <= {bool, int, float, str}:
        (kind,) = types
        return _finite if kind is float else kind
    return _number


def _shown(value) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def _listed(names: list) -> str:
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def flag(dest: str) -> str:
    return f"--{dest.replace('_', '-')}"


def add_arguments(p) -> None:
    p.add_argument("task", nargs="?", help="task name, e.g. Pendulum-v1 (omit with --resume)")
    p.add_argument("--algo", choices=tuple(ALGORITHMS),
                   help="mbrl: model-based RL with MPC (default); trpo: model-free TRPO; "
                        "mbmf: MPC imitated by a policy, then fine-tuned by TRPO; worldmodels: "
                        "V, M and C on a pixel task's frames (CarRacing-v3, Pendulum-v1)")
    p.add_argument("--seed", type=int, help="seed of everything random in the run (default 0)")
    p.add_argument("--out", help="run directory (default: runs/TASK-PLANNER-sSEED, or "
                                 "runs/TASK-ALGO-sSEED)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run")
    p.add_argument("--config", metavar="FILE",
                   help="take the task, seed, algo and settings from FILE (TOML, or JSON if it "
                        "ends in .json, such as a run's config.json); the options beat it, it "
                        "beats the task's preset")
    p.add_argument("--print-config", action="store_true",
                   help="print the config.json the run would start with (a valid --config "
                        "file) and exit, writing nothing")
    add_import_argument(p)
    p.add_argument("--learned-reward", action="store_true",
                   help="let the model learn the reward and termination (any continuous-action "
                        "Gymnasium id: the task becomes learned-reward/TASK) [mbrl, mbmf]")
    p.add_argument("--quiet", action="store_true", help="print only the summary (no log "
                                                        "lines, no progress bar)")
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
    g = p.add_argument_group(
        "planner options [mbrl, mbmf mbrl] (each sets its key of planner_options, over "
        "--planner-options, and applies to the planners named after it, with their defaults)")
    for dest, (keyword, defaults) in PLANNER_FLAGS.items():
        where = ", ".join(name if d is None else f"{name} {_shown(d)}"
                          for name, d in defaults.items())
        help_ = f"{OPTION_HELP.get(keyword, 'see the planner docstring')} [{where}]"
        kind = _planner_type(defaults)
        if kind is bool:
            g.add_argument(flag(dest), dest=dest, action=argparse.BooleanOptionalAction,
                           help=help_)
        else:
            g.add_argument(flag(dest), dest=dest, type=kind, help=help_,
                           metavar={int: "INT", str: "STR", _finite: "FLOAT"}.get(kind, "NUMBER"))


def _given(args, table=ROUTES) -> dict:
    return {dest: getattr(args, dest) for dest in table if getattr(args, dest) is not None}


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


# -- config files ---------------------------------------------------------------------------------
#: what a config file holds besides settings
_FILE_KEYS = ("task", "seed", "algo", "imports")
#: what a run's config.json holds (its tensorboard choice is not a setting: --tensorboard is)
_RUN_KEYS = ("fastmbrl_version", "run_format", "config", "imports", "tensorboard")


def read_config_file(path) -> dict:
    """A --config file as one dict of task, seed, algo, imports and settings, each optional.
    A run's config.json gives its config entry and imports (its run format is checked, the
    fastmbrl version that wrote it is not)."""
    missing = f"--config {path}: no such file"
    data = (read_json(path, missing) if Path(path).suffix.lower() == ".json"
            else read_toml(path, missing))
    if "config" in data:
        unknown = sorted(set(data) - set(_RUN_KEYS))
        if unknown:
            raise FormatError(f"{path}: unknown key {unknown[0]!r} beside config (a run's "
                              f"config.json holds {', '.join(_RUN_KEYS)})")
        entry = config_entry(data, path)
        if "imports" in entry:
            raise FormatError(f"{path}: imports belongs beside config, not in it")
        data = {**entry, **({"imports": data["imports"]} if "imports" in data else {})}
    algo, task, seed = data.get("algo"), data.get("task"), data.get("seed")
    imports = data.get("imports", [])
    if algo is not None and algo not in ALGORITHMS:
        raise FormatError(f"{path}: algo must be one of {', '.join(ALGORITHMS)}, got {algo!r}")
    if task is not None and (not isinstance(task, str) or not task):
        raise FormatError(f"{path}: task must be a task name, got {task!r}")
    if seed is not None and (type(seed) is not int or seed < 0):
        raise FormatError(f"{path}: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise FormatError(f"{path}: imports must be a list of module names, got {imports!r}")
    return data


def _check_file_settings(config_class, values: dict, path, prefix="") -> None:
    """Refuse, naming `path`, a key of `values` that is not a setting of `config_class` or a
    value its check refuses; a phase's table (MB-MF's mbrl, trpo) key by key."""
    fields = {f.name: f for f in config_class.settings()}
    for key, value in values.items():
        if key not in fields:  # (in a phase's table its own check below refused it first)
            raise FastMBRLError(f"{path}: unknown key {key!r}: not a setting of --algo "
                                f"{config_class.ALGO} (nor {', '.join(_FILE_KEYS)})")
        check = fields[key].metadata["check"]
        if value is None or check is None:
            continue  # None is "not given", as in a config
        try:
            check(value, prefix + key)
        except FastMBRLError as exc:
            raise FastMBRLError(f"{path}: {exc}") from None
        nested = getattr(check, "config_class", None)
        if nested is not None:
            _check_file_settings(nested, value, path, f"{prefix}{key}.")


def _merge(config_class, base: dict, over: dict) -> dict:
    """Settings `over` (the options') on top of `base` (a config file's): a phase's table key
    by key, any other setting whole. A planner other than the one `base` names drops its
    planner_options, which were that planner's (as a preset's are)."""
    out = dict(base)
    fields = {f.name: f for f in config_class.settings()}
    for key, value in over.items():
        nested = getattr(fields[key].metadata["check"], "config_class", None)
        if nested is not None and isinstance(out.get(key), dict):
            value = _merge(nested, out[key], value)
        out[key] = value
    if ("planner" in over and "planner_options" not in over
            and base.get("planner") not in (None, over["planner"])):
        out.pop("planner_options", None)
    return out


def _with_planner_flags(run_class, task, seed, settings: dict, given: dict):
    """The resolved config of `settings` with the planner options `given` ({option dest:
    value}) over the same keys of the planner_options it resolves to (given, the file's, the
    preset's); refused for a planner that does not take one."""
    cfg = run_class.Config.create(task, seed, **settings).resolved()
    if not given:
        return cfg
    phase = _PLANNING[run_class.Config.ALGO]
    planning = getattr(cfg, phase) if phase else dataclasses.asdict(cfg)
    planner = planning["planner"]
    takes = planner_keywords(planner)
    wrong = [d for d in given if PLANNER_FLAGS[d][0] not in takes]
    if wrong:
        own = [flag(d) for d, (keyword, _) in PLANNER_FLAGS.items() if keyword in takes]
        named = ", ".join(f"{_spelling(d, given[d])} (an option of "
                          f"{_listed(list(PLANNER_FLAGS[d][1]))})" for d in wrong)
        raise FastMBRLError(f"{named} {'does' if len(wrong) == 1 else 'do'} not apply to "
                            f"planner {planner}, whose options are {', '.join(own) or 'none'}")
    options = {**planning["planner_options"],
               **{PLANNER_FLAGS[d][0]: value for d, value in given.items()}}
    if phase:
        settings = {**settings, phase: {**settings.get(phase, {}), "planner_options": options}}
    else:
        settings = {**settings, "planner_options": options}
    return run_class.Config.create(task, seed, **settings).resolved()


def new_config(args):
    """The resolved config of a new run from `fastmbrl train` arguments: each setting from
    its option, else the --config file, else the task's preset, else the default."""
    file = read_config_file(args.config) if args.config else {}
    for spec in file.get("imports", []):
        try:
            import_tasks(spec)
        except FastMBRLError as exc:
            raise FastMBRLError(f"{args.config}: imports: {exc}") from None
    algo = args.algo or file.get("algo") or DEFAULT_ALGO
    task = args.task or file.get("task")
    if not task:
        raise FastMBRLError("a task name is required, e.g. fastmbrl train Pendulum-v1 --algo "
                            f"{algo}" + (f" (or task = ... in {args.config})" if args.config
                                         else ""))
    run_class = ALGORITHMS[algo]
    given = _settings(algo, _given(args))
    planner_given = _given(args, PLANNER_FLAGS)
    if planner_given and algo not in _PLANNING:
        raise FastMBRLError(f"{', '.join(_spelling(d, v) for d, v in planner_given.items())} "
                            f"only apply to --algo {' or '.join(_PLANNING)}")
    from_file = {k: v for k, v in file.items() if k not in _FILE_KEYS}
    _check_file_settings(run_class.Config, from_file, args.config)
    settings = _merge(run_class.Config, from_file, given)
    if args.learned_reward:
        if algo == "trpo":
            raise FastMBRLError("--learned-reward applies to --algo mbrl or mbmf (TRPO learns "
                                "no model)")
        if not learned.base_id(task):
            task = learned.PREFIX + task
    seed = args.seed if args.seed is not None else file.get("seed", 0)
    return _with_planner_flags(run_class, task, seed, settings, planner_given)


def new_run(args, log):
    """A new run directory from `fastmbrl train` arguments."""
    cfg = new_config(args)
    run_class = ALGORITHMS[cfg.ALGO]
    out = _writable_dir(args.out if args.out is not None else
                        f"runs/{cfg.task}-{cfg.label}-s{cfg.seed}")
    run = run_class(cfg, out, log)
    run.tensorboard = args.tensorboard
    try:
        run.write_config()
    except OSError as exc:
        raise FileError(f"--out {out}: cannot create the run directory: "
                        f"{exc.strerror or exc}") from None
    log(f"training {cfg.task} with {run.title or cfg.label} for {cfg.budget()} into {out}")
    return run


def resumed_run(args, log):
    """The run saved in `--resume DIR`; any option that would change it is refused."""
    if args.task:
        raise FastMBRLError("give either a task or --resume DIR, not both")
    given = ([flag("algo")] if args.algo is not None else []) + [
        _spelling(d, v) for d, v in {**_given(args), **_given(args, PLANNER_FLAGS)}.items()] + [
        flag(name) for name in ("seed", "out", "config") if getattr(args, name) is not None] + [
        flag(name) for name in ("learned_reward", "print_config", "tensorboard")
        if getattr(args, name)]
    if given:
        raise FastMBRLError(
            f"--resume continues a run with the settings saved in {args.resume}; "
            f"drop {', '.join(given)} (or start a new run to change them)")
    algo = read_run_config(args.resume)["algo"]
    return ALGORITHMS[algo].resume(args.resume, log)


def run(args) -> int:
    bar = None if args.quiet else Progress("training")
    log = (lambda msg: None) if bar is None else bar.print
    import_modules(args)
    if args.print_config and not args.resume:
        print(json.dumps(run_config_meta(*config_record(new_config(args))), indent=2,
                         allow_nan=False))
        return 0
    r = resumed_run(args, log) if args.resume else new_run(args, log)
    r.progress = bar
    t0 = time.perf_counter()
    try:
        r.train()
    finally:
        if bar is not None:
            bar.close()
    last = next((m["mean_return"] for m in reversed(r.metrics) if m.get("mean_return") is not None),
                float("nan"))
    print(f"done: {r.env_steps} steps in {time.perf_counter() - t0:.0f} s, last mean return "
          f"{last:.2f}; evaluate with: fastmbrl eval {r.out}")
    return 0
