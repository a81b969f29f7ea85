"""`fastmbrl bench planners DIR`: return against compute, every planner on a trained run's model
(or, `--known-dynamics TASK`, on the task's exact dynamics).

Each planner runs closed-loop in the task's real environment at several budgets, a budget being
the model steps one action may cost (candidates scored per plan x horizon x ensemble members);
the planner's sample count is the largest that keeps within it (`planners.num_samples_for`), its
other options its defaults. Every (planner, budget) pair plays the same episodes (the same reset
seeds) with the same planner seed, so the rows differ only by the planner and its budget.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fastmbrl.algorithms.evaluate import evaluate, load_controller
from fastmbrl.algorithms.config import non_negative_int
from fastmbrl.cli.eval import add_planner_source, planner_source
from fastmbrl.cli.train import add_import_argument, import_modules
from fastmbrl.errors import FastMBRLError, require
from fastmbrl.models.function import FunctionModel
from fastmbrl.planning.planners import PLANNERS, num_samples_for
from fastmbrl.progress import Progress
from .common import machine, machine_line

#: default budgets, as fractions of the run's own planner's model steps per action
DEFAULT_FRACTIONS = (1 / 16, 1 / 4, 1)


def model_steps_per_action(name, num_samples, horizon, members, options=None) -> int:
    """Model steps of one plan of the planner called `name` with these settings."""
    return (PLANNERS[name].candidates_per_call(num_samples, horizon=horizon, **(options or {}))
            * horizon * members)


def _int_list(text, what):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FastMBRLError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise FastMBRLError(f"{what}: expected positive integers, got {text!r}")
    return sorted(set(values))


def _names(text):
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in PLANNERS]
    if unknown or not names:
        raise FastMBRLError(f"--planners: unknown planner {', '.join(unknown) or '(none)'}; "
                            f"choose from {', '.join(PLANNERS)}")
    return list(dict.fromkeys(names))


def add_arguments(p):
    add_planner_source(p, "a trained MBRL run directory (its model and task are used)")
    p.add_argument("--planners", default=",".join(PLANNERS),
                   help=f"comma-separated planners (default: {','.join(PLANNERS)})")
    p.add_argument("--budgets", default=None,
                   help="comma-separated model steps per action (default: 1/16, 1/4 and 1 x "
                        "the run's own planner's)")
    p.add_argument("--horizon", type=int, default=None, help="planning horizon (default: the "
                                                             "run's)")
    p.add_argument("--episodes", type=int, default=5, help="episodes per planner and budget")
    p.add_argument("--seed", type=int, default=1_000_000, help="reset seed of the first "
                                                               "episode")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per planner and budget instead of the table")
    p.add_argument("--png", default=None,
                   help="where to draw return against ms per action (default "
                        "bench-planners-TASK.png in the current directory)")
    p.add_argument("--no-png", action="store_true", help="draw nothing")
    add_import_argument(p)


def load_planning_controller(path):
    """The model-based Controller saved at `path` (or `path` itself, a Controller);
    FastMBRLError for a policy, which has no planner."""
    controller = load_controller(path)
    settings = getattr(controller, "settings", None)
    if settings is None or "horizon" not in settings:
        raise FastMBRLError(f"{path} holds a policy, not a model-based controller: there is "
                            "no planner to benchmark")
    return controller


def rows_for(run_dir, planners, budgets=None, horizon=None, episodes=5, seed=1_000_000,
             progress=None) -> list[dict]:
    """One dict per planner and budget (see the module docstring) for a run directory or a
    Controller (e.g. on known dynamics); `progress(done, total)` hears of each episode."""
    controller = load_planning_controller(run_dir)
    settings = controller.settings
    horizon = settings["horizon"] if horizon is None else horizon
    if not isinstance(horizon, int) or horizon < 1:
        raise FastMBRLError(f"--horizon must be a positive integer, got {horizon!r}")
    members = controller.planner.scorer.rollouts_per_candidate  # particles when sampled
    model = "known dynamics" if isinstance(controller.model, FunctionModel) else "learned"
    if budgets is None:
        own = model_steps_per_action(settings["planner"], settings["num_samples"], horizon,
                                     members, settings["planner_options"])
        budgets = sorted({max(1, int(own * f)) for f in DEFAULT_FRACTIONS})
    plan = []
    for name in planners:
        for budget in budgets:
            k = num_samples_for(name, budget // (horizon * members), horizon=horizon)
            plan.append((name, budget, k))
    total, done = len(plan) * episodes, 0
    rows = []
    for name, budget, k in plan:
        def step(_msg):
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        result = evaluate(run_dir, episodes, seed, log=step, planner=name, num_samples=k,
                          horizon=horizon, planner_options={})
        rows.append({"task": result["task"], "model": model, "planner": name, "budget": budget,
                     "num_samples": k, "horizon": horizon,
                     "model_steps_per_action": model_steps_per_action(name, k, horizon, members),
                     "ms_per_action": result["ms_per_act"], "mean_return": result["mean_return"],
                     "std_return": result["std_return"], "returns": result["returns"],
                     "episodes": episodes, "seed": seed, **machine()})
    return rows


def draw(rows, path) -> Path:
    """Mean return (± std over episodes) against ms per action, one line per planner."""
    from fastmbrl.cli.plot import output_path

    path = output_path(path)
    require("matplotlib", "plot", "drawing the planner bench")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(r["planner"] for r in rows):
        mine = sorted((r for r in rows if r["planner"] == name), key=lambda r: r["ms_per_action"])
        ax.errorbar([r["ms_per_action"] for r in mine], [r["mean_return"] for r in mine],
                    yerr=[r["std_return"] for r in mine], marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("ms per action")
    ax.set_ylabel(f"mean return over {rows[0]['episodes']} episodes (± std)")
    ax.set_title(f"{rows[0]['task']}: return against planning time")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.resolve()


def run(args) -> int:
    import_modules(args)
    planners = _names(args.planners)
    budgets = None if args.budgets is None else _int_list(args.budgets, "--budgets")
    if args.episodes < 1:
        raise FastMBRLError(f"--episodes must be >= 1, got {args.episodes}")
    non_negative_int(args.seed, "--seed")
    if not args.no_png and args.png is not None:
        from fastmbrl.cli.plot import output_path

        output_path(args.png)  # a bad path fails before the episodes run
    bar = Progress("planners", unit="episodes")
    try:
        rows = rows_for(planner_source(args), planners, budgets, args.horizon, args.episodes, args.seed,
                        progress=bar)
    finally:
        bar.clear()
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(machine_line())
        print(f"{rows[0]['task']} ({rows[0]['model']} model), {args.episodes} episodes per row "
              f"from reset seed {args.seed}; ± is the std over episodes")
        print(f"{'planner':<8}{'samples':>8}{'model steps/act':>16}{'ms/act':>9}"
              f"{'return':>10}{'± std':>9}")
        for r in rows:
            print(f"{r['planner']:<8}{r['num_samples']:>8}{r['model_steps_per_action']:>16}"
                  f"{r['ms_per_action']:>9.2f}{r['mean_return']:>10.1f}{r['std_return']:>9.1f}")
    if not args.no_png:
        task = rows[0]["task"].replace("/", "_")
        path = draw(rows, args.png or f"bench-planners-{task}.png")
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0
