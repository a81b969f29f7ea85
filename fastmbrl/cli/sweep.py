"""`fastmbrl sweep SPEC --out DIR`: many training runs from one grid of settings, run side by
side on this machine or as Ray tasks; each job an ordinary run directory DIR/NAME.

A spec (TOML, or JSON by the suffix .json; docs/sweeps.md) holds settings by the names of the
`fastmbrl train` options (task, algo, seed, learned_reward, and every setting and planner
option): top-level keys are fixed, `[grid]` gives lists whose product is taken, `[[list]]`
entries are combined with each grid point in turn. `--set KEY=V1,V2` puts KEY in the grid (over
the spec's). A job's settings go through the same resolution and checks as `fastmbrl train`'s
options (fastmbrl.cli.train.new_config): a setting is named once, for both.

A rerun of a sweep skips its finished jobs and resumes its interrupted ones; a job whose
directory holds a run of other settings, or whose settings do not resolve, fails alone.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from fastmbrl.algorithms import ALGORITHMS
from fastmbrl.algorithms.base import config_record
from fastmbrl.algorithms.rundir import read_run_config, read_state
from fastmbrl.cli import train as train_cli
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.executor import BACKENDS, available_cores, plan_local, run_jobs
from fastmbrl.io import read_json, read_toml, write_json
from fastmbrl.progress import Progress, format_seconds
from fastmbrl.tasks import import_tasks

#: `fastmbrl train` options that are not a job's settings: the sweep chooses them
_NOT_SETTINGS = ("out", "resume", "config", "print_config", "quiet", "help", "_run")
_SPEC_TABLES = ("grid", "list")
_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


def _train_actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    train_cli.add_arguments(parser)
    return {a.dest: a for a in parser._actions if a.dest not in _NOT_SETTINGS}


ACTIONS = _train_actions()


def _is_bool_action(action) -> bool:
    return isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction))


def _check_key(key: str, where: str) -> argparse.Action:
    if key not in ACTIONS:
        raise FastMBRLError(f"{where}: unknown key {key!r}: not a `fastmbrl train` setting "
                            "(names as the options', with _ for -: num_samples, planner, seed, "
                            "task, ...)")
    return ACTIONS[key]


def _parse_text(key: str, text: str) -> Any:
    """One value of `--set KEY=...` as the train option KEY parses it."""
    action = ACTIONS[key]
    if key == "imports":
        return [text]
    if _is_bool_action(action):
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise FastMBRLError(f"--set {key}: expected true or false, got {text!r}")
    try:
        value = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, ValueError) as exc:
        if action.type is int:
            exc = f"expected an integer, got {text!r}"
        raise FastMBRLError(f"--set {key}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise FastMBRLError(f"--set {key}: {value!r} is not one of "
                            f"{', '.join(map(str, action.choices))}")
    return value


def parse_set(text: str) -> tuple[str, list]:
    """`KEY=V1,V2,...` (or `KEY=[JSON values]`, for values holding commas) as (KEY, values)."""
    key, sep, values = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise FastMBRLError(f"--set {text!r}: expected KEY=VALUE[,VALUE...]")
    _check_key(key, "--set")
    if values.lstrip().startswith("["):
        try:
            parsed = json.loads(values)
        except json.JSONDecodeError as exc:
            raise FastMBRLError(f"--set {key}: not a JSON list ({exc})") from None
        if not isinstance(parsed, list) or not parsed:
            raise FastMBRLError(f"--set {key}: expected a non-empty JSON list of values")
        return key, parsed
    items = [v.strip() for v in values.split(",")]
    if not all(items):
        raise FastMBRLError(f"--set {key}: an empty value in {values!r}")
    return key, [_parse_text(key, v) for v in items]


def read_spec(path: str | None, sets: list[str] = ()) -> dict:
    """The sweep spec {"fixed": {...}, "grid": {key: [values]}, "list": [{...}, ...]} of the
    file `path` (or none) with the `--set` options over its grid, checked key by key."""
    data: dict = {}
    if path is not None:
        missing = f"sweep spec {path}: no such file"
        data = (read_json(path, missing) if Path(path).suffix.lower() == ".json"
                else read_toml(path, missing))
    where = f"sweep spec {path}" if path else "--set"
    fixed = {k: v for k, v in data.items() if k not in _SPEC_TABLES}
    grid, entries = data.get("grid", {}), data.get("list", [])
    if not isinstance(grid, dict):
        raise FormatError(f"{where}: grid must be a table of KEY = [values], got {grid!r}")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FormatError(f"{where}: list must be an array of tables ([[list]] in TOML)")
    for key in fixed:
        _check_key(key, where)
    for key, values in grid.items():
        _check_key(key, f"{where}: grid")
        if not isinstance(values, list) or not values:
            raise FormatError(f"{where}: grid.{key} must be a non-empty list of values, got "
                              f"{values!r}")
    for i, entry in enumerate(entries):
        for key in entry:
            _check_key(key, f"{where}: list[{i}]")
    grid = dict(grid)
    for text in sets:
        key, values = parse_set(text)
        grid[key] = values
        fixed.pop(key, None)
    clash = [k for k in grid if k in fixed] + [k for e in entries for k in e if k in grid]
    if clash:
        raise FormatError(f"{where}: {clash[0]!r} is given twice (as a fixed value, in grid "
                          "or in list): give each key in one place")
    if "task" not in fixed and "task" not in grid and not (entries and all("task" in e for e in entries)):
        raise FastMBRLError(f"{where}: no task: give task = \"Pendulum-v1\" (or a grid of "
                            "them, or --set task=...)")
    return {"fixed": fixed, "grid": grid, "list": entries}


# -- jobs -----------------------------------------------------------------------------------------
def _name_part(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return "x".join(_name_part(v) for v in value)
    if isinstance(value, dict):
        return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_")


def job_name(settings: dict, varying: list[str]) -> str:
    """TASK-VALUE-...-sSEED: the task, then each varying setting's value (the algorithm's and
    the planner's bare, others after their key), then the seed."""
    parts = [_name_part(settings["task"])]
    for key in varying:
        if key in ("task", "seed") or key not in settings:
            continue
        value = _name_part(settings[key])
        parts.append(value if key in ("algo", "planner") else f"{key}{value}")
    parts.append(f"s{settings.get('seed', 0)}")
    return "-".join(parts)


def expand(spec: dict) -> list[tuple[str, dict]]:
    """The jobs of `spec` as (name, settings), grid order (the last key fastest), each grid
    point with each list entry."""
    keys = list(spec["grid"])
    varying = [k for k in keys if len(spec["grid"][k]) > 1]
    for entry in spec["list"]:
        varying += [k for k in entry if k not in varying]
    if len(spec["list"]) < 2:
        varying = [k for k in varying if k in keys and len(spec["grid"][k]) > 1]
    jobs, seen = [], {}
    for point in itertools.product(*(spec["grid"][k] for k in keys)):
        for entry in spec["list"] or [{}]:
            settings = {**spec["fixed"], **dict(zip(keys, point)), **entry}
            name = job_name(settings, varying)
            if name in seen:
                raise FastMBRLError(f"two jobs would be named {name} ({seen[name]} and "
                                    f"{settings}): give each setting distinct values")
            seen[name] = settings
            jobs.append((name, settings))
    return jobs


def resolve(settings: dict) -> tuple[dict, list[str]]:
    """(config.json's config entry, imports) of a job's settings, by `fastmbrl train`'s own
    resolution and checks."""
    args = argparse.Namespace(**{dest: a.default for dest, a in ACTIONS.items()},
                              out=None, resume=None, config=None, print_config=False,
                              quiet=True)
    for key, value in settings.items():
        setattr(args, key, list(value) if key == "imports" else value)
    for spec in args.imports:
        import_tasks(spec)
    return config_record(train_cli.new_config(args))


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def job_status(out: Path, entry: dict, given: Iterable[str] = ()) -> tuple[str, int]:
    """("new" | "resume" | "finished", committed env steps) of a job's directory; refuses
    (FastMBRLError) a directory holding a run of other settings. A setting the saved run does
    not record (added to fastmbrl since) takes its default on resume, as `--resume` gives it:
    it differs only when the sweep gives it (`given`)."""
    if not (out / "config.json").exists():
        return "new", 0
    saved = read_run_config(out)
    given = set(given)
    diff = sorted(k for k in set(saved) | set(entry)
                  if (k in saved or k in given) and _normal(saved.get(k)) != _normal(entry.get(k)))
    if diff:
        raise FastMBRLError(f"{out} holds a run of other settings ({', '.join(diff)} differ); "
                            "move it away or give the sweep another --out")
    state = read_state(out)
    steps = int(state["env_steps"]) if state else 0
    return ("finished" if steps >= entry["steps"] else "resume" if state else "new"), steps


def run_job(job: dict) -> dict:
    """Train one job to its end in its run directory (a new run, or a resume of the one there);
    what the sweep reports of it. A top-level function: the executor's workers import it."""
    started_at = time.time()
    out = Path(job["out"])
    for spec in job["imports"]:
        import_tasks(spec)
    algo = job["config"]["algo"]
    run_class = ALGORITHMS[algo]
    quiet = lambda msg: None  # noqa: E731 - the sweep prints job events, not iterations
    if (out / "config.json").exists():
        run = run_class.resume(out, quiet)
        resumed_at: int | None = run.iteration
    else:
        config = {k: v for k, v in job["config"].items() if k != "algo"}
        run = run_class(run_class.Config(**config), out, quiet)
        run.tensorboard = job["tensorboard"]
        run.write_config()
        resumed_at = None
    first: list[float] = []
    record = run.record

    def timed_record(row: dict) -> None:
        record(row)
        if not first:
            first.append(time.time())

    run.record = timed_record  # type: ignore[method-assign]  # the first commit's time
    skipped = run.finished()
    t0 = time.perf_counter()
    run.train()
    last = next((m["mean_return"] for m in reversed(run.metrics)
                 if m.get("mean_return") is not None), None)
    return {"name": job["name"], "skipped": skipped, "resumed_at": resumed_at,
            "env_steps": run.env_steps, "iterations": len(run.metrics), "last_return": last,
            "wall_s": round(time.perf_counter() - t0, 3), "started_at": started_at,
            "first_iteration_at": first[0] if first else None}


# -- the command ----------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("spec", nargs="?", metavar="SPEC",
                   help="sweep spec (TOML, or JSON if it ends in .json; see docs/sweeps.md)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="sweep directory: each job is the run directory DIR/NAME")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid key and its values (over the spec's), e.g. --set "
                        "planner=cem,mppi --set seed=0,1,2; values with commas as a JSON "
                        "list: --set 'hidden=[[64,64],[200,200]]'; repeatable")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: processes on this machine (default); ray: Ray tasks (needs "
                        ".[ray]), on --address or a local Ray instance")
    p.add_argument("--jobs", type=int, help="local: jobs at once (default: the cores / "
                                            "--threads-per-job)")
    p.add_argument("--threads-per-job", type=int, metavar="T",
                   help="numba threads of each job (ray: its CPUs; default: local, the cores "
                        "/ --jobs; ray, 1); jobs x threads may not exceed the cores")
    p.add_argument("--address", metavar="A", help="ray: the cluster's address (e.g. auto or "
                   "ray://HEAD:10001); DIR must then be storage the cluster's nodes share")
    p.add_argument("--dry-run", action="store_true",
                   help="print the jobs (and what a run would do with each) and exit")


def _ret(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(args) -> int:
    if args.address and args.backend != "ray":
        raise FastMBRLError("--address applies to --backend ray")
    if args.jobs is not None and args.backend == "ray":
        raise FastMBRLError("--jobs applies to --backend local (Ray places the jobs by their "
                            "--threads-per-job CPUs)")
    if args.spec is None and not args.sets:
        raise FastMBRLError("give a sweep spec file or --set KEY=VALUES options")
    root = train_cli._writable_dir(args.out).resolve()
    spec = read_spec(args.spec, args.sets)
    jobs, failed, totals = [], [], {}
    for name, settings in expand(spec):
        out = root / name
        try:
            entry, imports = resolve(settings)
            status, steps = job_status(out, entry, settings)
        except FastMBRLError as exc:
            failed.append((name, " ".join(str(exc).split())))
            continue
        totals[name] = (entry["steps"], steps)
        jobs.append({"name": name, "out": str(out), "config": entry, "imports": imports,
                     "tensorboard": bool(settings.get("tensorboard")), "status": status})
    if args.backend == "local":
        workers, threads = plan_local(len(jobs), args.jobs, args.threads_per_job)
        where = f"{workers} at once x {threads} threads on {available_cores()} cores"
    else:
        workers, threads = 0, args.threads_per_job or 1
        where = f"Ray tasks of {threads} CPU(s) on {args.address or 'a local Ray instance'}"
    if args.dry_run:
        for job in jobs:
            done, total = totals[job["name"]][1], totals[job["name"]][0]
            what = {"new": "new", "resume": f"resume at {done}/{total} steps",
                    "finished": "finished: skip"}[job["status"]]
            print(f"{job['name']}: {what}")
        for name, error in failed:
            print(f"{name}: FAILS: {error}")
        print(f"{len(jobs) + len(failed)} jobs into {root} ({where})")
        return 1 if failed else 0
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "sweep.json", {"spec": spec, "jobs": [
        {"name": j["name"], "config": j["config"], "imports": j["imports"]} for j in jobs]})
    for name, error in failed:
        print(f"FAILED {name}: {error}", flush=True)
    todo = [j for j in jobs if j["status"] != "finished"]
    for job in jobs:
        if job["status"] == "finished":
            print(f"skip {job['name']}: finished", flush=True)
    bar = Progress("sweep", unit="steps")
    total = sum(totals[j["name"]][0] for j in todo)
    seen: dict[str, int] = {j["name"]: totals[j["name"]][1] for j in todo}
    active: set[str] = set()

    ended: set[str] = set()

    def poll() -> None:
        for job in todo:
            name = job["name"]
            if name in ended:
                continue
            try:
                state = read_state(Path(job["out"]))
            except FastMBRLError:
                continue
            steps = int(state["env_steps"]) if state else 0
            if name not in active and (steps > seen[name] or (
                    job["status"] == "new" and (Path(job["out"]) / "config.json").exists())):
                active.add(name)
                how = (f"resumed at {seen[name]} steps" if job["status"] == "resume"
                       else "started")
                bar.print(f"{how} {name}")
            seen[name] = steps
        bar(sum(seen.values()), total)

    print(f"sweep of {len(todo)} jobs ({len(jobs) - len(todo)} finished, {len(failed)} "
          f"refused) into {root}: {where}", flush=True)
    t0 = time.perf_counter()
    ok = 0
    try:
        outcomes = run_jobs(run_job, todo, args.backend, workers or None, threads, args.address,
                            keys=[j["name"] for j in todo], tick=poll)
        for outcome in outcomes:
            poll()
            ended.add(outcome.key)
            if outcome.ok:
                ok += 1
                r = outcome.value
                seen[outcome.key] = r["env_steps"]
                bar.print(f"done {outcome.key}: {r['env_steps']} steps, return "
                          f"{_ret(r['last_return'])}, {format_seconds(r['wall_s'])}")
            else:
                failed.append((outcome.key, outcome.error))
                bar.print(f"FAILED {outcome.key}: {outcome.error}")
    finally:
        bar.close()
    print(f"sweep done in {format_seconds(time.perf_counter() - t0)}: {ok} ran, "
          f"{len(jobs) - len(todo)} skipped, {len(failed)} failed"
          + (f" ({', '.join(n for n, _ in failed)})" if failed else "")
          + f"; aggregate with: fastmbrl report {root}", flush=True)
    return 1 if failed else 0
