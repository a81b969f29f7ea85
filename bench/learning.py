"""Learning targets of the MBRL loop: train over seeds, evaluate, report returns and wall time.

    python bench/learning.py Pendulum-v1 --seeds 0 1 2
    python bench/learning.py HalfCheetah-v5 --seeds 0 --steps 50000 --json
    python bench/learning.py learned-reward/Pendulum-v1 --seeds 0 1 2   # the reward learned
    python bench/learning.py Pendulum-v1 --planner beam --set num_samples=150 --seeds 0 1 2

The seeds train side by side (`--jobs`, fastmbrl.executor: the same results as one by one) and
the summary is fastmbrl.stats' (mean, std, IQM, 95 % bootstrap CI over seeds). For grids over
planners and tasks use `fastmbrl sweep` and `fastmbrl report`.

Not a CI test: a run takes minutes. CI runs the same loop with a tiny budget (tests/test_agent.py).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fastmbrl.algorithms.evaluate import evaluate, known_dynamics_controller
from fastmbrl.cli.sweep import resolve, run_job
from fastmbrl.executor import run_jobs
from fastmbrl.stats import summarize
from fastmbrl.tasks.learned import base_id

# task -> (env steps, mean evaluation return to reach); issue 4's targets
TARGETS = {
    "Pendulum-v1": (5_000, -200.0),
    "InvertedPendulum-v5": (5_000, 950.0),
    "Reacher-v5": (20_000, -6.0),
    "HalfCheetah-v5": (50_000, 1_000.0),
    "MountainCarContinuous-v0": (None, 90.0),
    "Hopper-v5": (100_000, 1_000.0),  # issue 14's
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, help="env steps (default: the target's budget)")
    p.add_argument("--planner")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=JSON",
                   help="a training setting, e.g. --set num_samples=150 (repeatable)")
    p.add_argument("--no-shaping", dest="shaping", action="store_false",
                   help="plan with the environment's reward even if the task has a planning reward")
    p.add_argument("--episodes", type=int, default=5, help="evaluation episodes per seed")
    p.add_argument("--reference", action="store_true",
                   help="also plan the same evaluation episodes with the task's exact dynamics "
                        "(Pendulum-v1, MountainCarContinuous-v0) and the run's planner settings: "
                        "what a perfect model would reach from those starts")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--jobs", type=int, help="seeds trained at once (default: one per core)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    # a learned-reward task has its environment's budget and target
    budget, target = TARGETS.get(base_id(args.task) or args.task, (None, None))
    settings = {}
    if args.steps or budget:
        settings["steps"] = args.steps or budget
    if args.planner:
        settings["planner"] = args.planner
    if not args.shaping:
        settings["shaping"] = False
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=JSON")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value  # a bare string, e.g. --set planner=beam
    stamp = int(time.time())
    jobs = []
    for seed in args.seeds:
        entry, imports = resolve({"task": args.task, "seed": seed, **settings})
        jobs.append({"name": f"{args.task}-s{seed}", "config": entry, "imports": imports,
                     "out": str(Path(args.out) / f"{args.task}-s{seed}-{stamp}"),
                     "tensorboard": False})
    rows = []
    for outcome in run_jobs(run_job, jobs, workers=args.jobs, keys=args.seeds):
        if not outcome.ok:
            raise SystemExit(f"seed {outcome.key}: {outcome.error}")
        seed, run = outcome.key, outcome.value
        out = jobs[args.seeds.index(seed)]["out"]
        ev = evaluate(out, episodes=args.episodes, seed=10_000 * (seed + 1))
        cfg = jobs[args.seeds.index(seed)]["config"]
        row = {"task": args.task, "seed": seed, "env_steps": run["env_steps"],
               "planner": cfg["planner"], "shaping": cfg["shaping"],
               "eval_mean_return": ev["mean_return"],
               "eval_std_return": ev["std_return"], "train_wall_s": round(run["wall_s"], 1),
               "ms_per_act": round(ev["ms_per_act"], 3), "run_dir": out}
        if args.reference:
            exact = known_dynamics_controller(
                args.task, planner=cfg["planner"], horizon=cfg["horizon"],
                num_samples=cfg["num_samples"], planner_options=cfg["planner_options"],
                shaping=cfg["shaping"], seed=seed)
            ref = evaluate(exact, episodes=args.episodes, seed=10_000 * (seed + 1))
            row["reference_mean_return"] = ref["mean_return"]
        rows.append(row)
        ref_text = (f" (exact dynamics on the same episodes {row['reference_mean_return']:.1f})"
                    if args.reference else "")
        print(json.dumps(row) if args.json else
              f"seed {seed}: eval return {ev['mean_return']:.1f} ± {ev['std_return']:.1f}"
              f"{ref_text} after {run['env_steps']} steps, {run['wall_s']:.0f} s", flush=True)
    means = [r["eval_mean_return"] for r in rows]
    stats = summarize(means)
    summary = {"task": args.task, "seeds": args.seeds, "mean_over_seeds": float(np.mean(means)),
               "std_over_seeds": float(np.std(means)), "iqm_over_seeds": stats["iqm"],
               "ci95_iqm": stats["ci95"], "target": target,
               "median_wall_s": float(np.median([r["train_wall_s"] for r in rows]))}
    if target is not None:
        summary["met"] = bool(summary["mean_over_seeds"] >= target)
        summary["seeds_meeting_target"] = sum(m >= target for m in means)
    if args.reference:
        refs = [r["reference_mean_return"] for r in rows]
        summary["reference_mean_over_seeds"] = float(np.mean(refs))
        if target is not None:
            summary["seeds_meeting_target_exact_dynamics"] = sum(m >= target for m in refs)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
