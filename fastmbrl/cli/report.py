"""`fastmbrl report DIR`: the runs under DIR (a sweep's, or any) aggregated over seeds.

Runs whose config.json agree but for the seed are one setting. Per setting: the final return
(each run's last iteration with a mean return) and the return of every iteration over the seeds
as n, mean, std, IQM and the 95 % stratified-bootstrap interval of the IQM (fastmbrl.stats);
training wall time and planning milliseconds per action. Printed as a table (or `--json`),
always written to DIR/report.json; `--csv` adds DIR/report.csv and DIR/report-curves.csv,
`--png` learning curves with their bands (DIR/report-TASK.png) and DIR/report-compute.png.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
import numpy as np

from fastmbrl.algorithms import ALGORITHMS
from fastmbrl.algorithms.base import config_record
from fastmbrl.algorithms.rundir import STAGE_PREFIX, read_metrics, read_run_config
from fastmbrl.errors import FastMBRLError, require
from fastmbrl.io import json_dumps, write_atomic, write_json
from fastmbrl.stats import summarize


def find_runs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FastMBRLError(f"{root} is not a directory")
    return sorted(p.parent for p in root.rglob("config.json")
                  if not any(part.startswith(STAGE_PREFIX) for part in p.parts))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _as_resumed(cfg: dict) -> dict:
    """The config as `--resume` would run it: settings the run predates take their defaults,
    so that runs made before and after an upgrade group together (the saved one if it does not
    resolve here, e.g. a task that is not importable)."""
    try:
        algo = ALGORITHMS[cfg["algo"]]
        saved = {k: v for k, v in cfg.items() if k != "algo"}
        return config_record(algo.Config(**saved).resolved())[0]
    except (FastMBRLError, KeyError, TypeError, ValueError):
        return cfg


def read_run(d: Path) -> dict:
    cfg = _as_resumed(read_run_config(d))
    rows = read_metrics(d)
    curve = [(r["iteration"], r["env_steps"], r["mean_return"]) for r in rows
             if isinstance(r, dict) and _number(r.get("mean_return"))]
    plan = [r["plan_ms"] for r in rows if isinstance(r, dict) and _number(r.get("plan_ms"))]
    wall = [r["wall_s"] for r in rows if isinstance(r, dict) and _number(r.get("wall_s"))]
    return {"dir": str(d), "config": cfg, "seed": cfg.get("seed"), "curve": curve,
            "final_return": curve[-1][2] if curve else None,
            "env_steps": rows[-1].get("env_steps", 0) if rows else 0,
            "steps": cfg.get("steps"), "wall_s": float(sum(wall)) if wall else None,
            "plan_ms": float(np.mean(plan)) if plan else None}


def _label(cfg: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = cfg.get(k)
        parts.append(str(v) if k in ("algo", "planner") else f"{k}={json.dumps(v)}")
    return " ".join(parts) or cfg.get("planner") or cfg.get("algo", "?")


def _labels(configs: list[dict]) -> list[str]:
    """What tells the settings of one task apart: the keys whose values differ (a table's, such
    as planner_options, only when nothing else does)."""
    keys = sorted({k for c in configs for k in c if k not in ("seed", "task")})
    differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True)
                                      for c in configs}) > 1]
    plain = [k for k in differ if not isinstance(configs[0].get(k), dict)]
    keys = plain or differ
    keys.sort(key=lambda k: (k not in ("algo", "planner"), k != "planner", k))
    return [_label(c, keys) for c in configs]


def aggregate(root: Path, reps: int = 2000, seed: int = 0) -> dict:
    runs = [read_run(d) for d in find_runs(Path(root))]
    if not runs:
        raise FastMBRLError(f"{root} holds no run directory (no config.json under it)")
    groups: dict[str, list[dict]] = {}
    for r in runs:
        key = json.dumps({k: v for k, v in r["config"].items() if k != "seed"}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    out = []
    tasks: dict[str, list[str]] = {}
    for key, members in groups.items():
        tasks.setdefault(members[0]["config"]["task"], []).append(key)
    for task, keys in tasks.items():
        labels = _labels([groups[k][0]["config"] for k in keys])
        for key, label in zip(keys, labels):
            members = sorted(groups[key], key=lambda r: r["seed"])
            out.append(_group(task, label, members, reps, seed))
    return {"dir": str(root), "settings": out}


def _group(task, label, members, reps, seed) -> dict:
    finals = [r["final_return"] for r in members if r["final_return"] is not None]
    by_iter: dict[int, list] = {}
    for r in members:
        for it, steps, ret in r["curve"]:
            by_iter.setdefault(it, []).append((steps, ret))
    curve = [{"iteration": it, "env_steps": pts[0][0],
              **summarize([p[1] for p in pts], reps, seed)} for it, pts in sorted(by_iter.items())]
    walls = [r["wall_s"] for r in members if r["wall_s"] is not None]
    plans = [r["plan_ms"] for r in members if r["plan_ms"] is not None]
    config = {k: v for k, v in members[0]["config"].items() if k != "seed"}
    return {"task": task, "setting": label, "config": config,
            "seeds": [r["seed"] for r in members],
            "finished": sum(1 for r in members if r["steps"] is not None
                            and r["env_steps"] >= r["steps"]),
            "final": summarize(finals, reps, seed) if finals else None,
            "curve": curve,
            "wall_s": float(np.mean(walls)) if walls else None,
            "plan_ms": float(np.mean(plans)) if plans else None,
            "runs": [{k: r[k] for k in ("seed", "dir", "env_steps", "final_return", "wall_s",
                                        "plan_ms")} for r in members]}


# -- outputs --------------------------------------------------------------------------------------
def _f(x, fmt=".1f") -> str:
    return "-" if x is None else format(x, fmt)


def table(report: dict) -> str:
    head = ["task", "setting", "seeds", "final mean", "std", "IQM", "95% CI (IQM)", "wall s",
            "plan ms"]
    rows = []
    for g in report["settings"]:
        f = g["final"] or {}
        ci = f.get("ci95")
        rows.append([g["task"], g["setting"], f"{g['finished']}/{len(g['seeds'])}",
                     _f(f.get("mean")), _f(f.get("std")), _f(f.get("iqm")),
                     "-" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]", _f(g["wall_s"], ".0f"),
                     _f(g["plan_ms"], ".2f")])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _csv(rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    for r in rows:
        w.writerow(["" if c is None else c for c in r])
    return buf.getvalue().encode()


def write_csvs(report: dict, root: Path) -> list[Path]:
    summary = [["task", "setting", "seeds", "finished", "final_mean", "final_std", "final_iqm",
                "final_ci95_low", "final_ci95_high", "wall_s", "plan_ms"]]
    curves = [["task", "setting", "iteration", "env_steps", "n", "mean", "std", "iqm",
               "ci95_low", "ci95_high"]]
    for g in report["settings"]:
        f = g["final"] or {}
        ci = f.get("ci95") or [None, None]
        summary.append([g["task"], g["setting"], len(g["seeds"]), g["finished"], f.get("mean"),
                        f.get("std"), f.get("iqm"), *ci, g["wall_s"], g["plan_ms"]])
        for c in g["curve"]:
            curves.append([g["task"], g["setting"], c["iteration"], c["env_steps"], c["n"],
                           c["mean"], c["std"], c["iqm"], *c["ci95"]])
    paths = []
    for name, rows in (("report.csv", summary), ("report-curves.csv", curves)):
        write_atomic(root / name, lambda fh, rows=rows: fh.write(_csv(rows)))
        paths.append(root / name)
    return paths


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name)


def write_pngs(report: dict, root: Path) -> list[Path]:
    require("matplotlib", "plot", "fastmbrl report --png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, path):
        fig.tight_layout()
        try:
            write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
        finally:
            plt.close(fig)
        return path

    paths = []
    by_task: dict[str, list] = {}
    for g in report["settings"]:
        by_task.setdefault(g["task"], []).append(g)
    for task, groups in by_task.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for g in groups:
            if not g["curve"]:
                continue
            x = [c["env_steps"] for c in g["curve"]]
            line, = ax.plot(x, [c["iqm"] for c in g["curve"]], marker="o", ms=3,
                            label=f"{g['setting']} (n={len(g['seeds'])})")
            ax.fill_between(x, [c["ci95"][0] for c in g["curve"]],
                            [c["ci95"][1] for c in g["curve"]], color=line.get_color(),
                            alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episode return (IQM over seeds, 95 % CI)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save(fig, root / f"report-{_safe(task)}.png"))
    fig, axes = plt.subplots(1, len(by_task), figsize=(4.5 * len(by_task), 4), squeeze=False)
    for ax, (task, groups) in zip(axes[0], by_task.items()):
        for g in groups:
            f = g["final"]
            if f is None or g["plan_ms"] is None:
                continue
            ax.errorbar([g["plan_ms"]], [f["iqm"]], yerr=[[f["iqm"] - f["ci95"][0]],
                                                         [f["ci95"][1] - f["iqm"]]],
                        fmt="o", capsize=3, label=g["setting"])
        ax.set_xscale("log")
        ax.set_xlabel("planning ms per action")
        ax.set_ylabel("final return (IQM, 95 % CI)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    paths.append(save(fig, root / "report-compute.png"))
    return paths


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR", help="a sweep directory (or any directory of runs)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON, not a table")
    p.add_argument("--csv", action="store_true",
                   help="also write DIR/report.csv and DIR/report-curves.csv")
    p.add_argument("--png", action="store_true", help="also draw DIR/report-TASK.png (learning "
                   "curves, 95 %% CI bands) and DIR/report-compute.png (needs .[plot])")


def run(args) -> int:
    root = Path(args.dir)
    report = aggregate(root)
    written = [write_json(root / "report.json", report)]
    if args.csv:
        written += write_csvs(report, root)
    if args.png:
        written += write_pngs(report, root)
    if args.json:
        print(json_dumps(report))
    else:
        print(table(report))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
