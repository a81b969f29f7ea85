"""`fastmbrl eval DIR`: run a saved controller on fresh episodes of its task."""
from __future__ import annotations

import json

from fastmbrl.algorithms.evaluate import evaluate, known_dynamics_controller
from fastmbrl.cli.train import add_import_argument, import_modules


def add_planner_source(p, what="run directory (or its model.npz)"):
    """DIR, or TASK with --known-dynamics; the planner settings that may replace DIR's."""
    p.add_argument("run_dir", metavar="DIR", help=f"{what}; with --known-dynamics a task name")
    p.add_argument("--known-dynamics", action="store_true",
                   help="plan with the task's exact dynamics instead of a learned model (an "
                        "upper bound; Pendulum-v1 and MountainCarContinuous-v0 have them)")


def add_arguments(p):
    add_planner_source(p)
    p.add_argument("--planner", default=None, help="planner (default: the run's)")
    p.add_argument("--horizon", type=int, default=None, help="planning horizon (default: the "
                                                             "run's)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="candidates per planning iteration (default: the run's)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--video", metavar="VIDEODIR",
                   help="record each episode into VIDEODIR/eval-episode-N.mp4 (needs .[video])")
    add_import_argument(p)


def planner_source(args, **settings):
    """What DIR (or TASK with --known-dynamics) names: a run directory, or a Controller."""
    if args.known_dynamics:
        return known_dynamics_controller(args.run_dir, **settings)
    return args.run_dir


def run(args) -> int:
    import_modules(args)
    settings = {k: v for k, v in (("planner", args.planner), ("horizon", args.horizon),
                                  ("num_samples", args.num_samples)) if v is not None}
    source = planner_source(args, **settings)
    result = evaluate(source, args.episodes, args.seed,
                      log=None if args.json else (lambda m: print(m, flush=True)),
                      video=args.video, **({} if args.known_dynamics else settings))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']}: mean return {result['mean_return']:.2f} over "
              f"{args.episodes} episodes (std {result['std_return']:.2f}; "
              f"{result['ms_per_act']:.2f} ms per action)")
        if args.video is not None:
            print(f"videos: {', '.join(result['videos'])}")
    return 0
