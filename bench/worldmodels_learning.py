"""World Models' learning target: train a pixel task's stages, evaluate C, report each stage's time.

    python bench/worldmodels_learning.py CarRacing-v3 --out runs/wm-car
    python bench/worldmodels_learning.py CarRacing-v3 --out runs/wm-car-dream -- --train-in dream \\
        --generations 300 --rollouts 4 --dream-temperature 1.0
    python bench/worldmodels_learning.py Pendulum-v1 --out runs/wm-pendulum --episodes 10 --seed 500000

Arguments after `--` go to `fastmbrl train TASK --algo worldmodels` as written. A directory that
holds a run is resumed with the settings it saved (`--resume DIR`) and one that is finished only
evaluated, so the script can be restarted after a stop. C's mean is then run on --episodes fresh episodes (`fastmbrl eval`'s
evaluation) and the wall time of every stage is summed from the run's metrics.jsonl, over every
session that worked on it.

Not a CI test: CarRacing takes hours. CI trains the same stages with tiny sizes
(tests/test_worldmodels*.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastmbrl.algorithms.evaluate import evaluate
from fastmbrl.algorithms.rundir import read_metrics
from fastmbrl.cli import main as fastmbrl_main

# task -> (mean return over the evaluation episodes to reach, the least that counts as working);
# issue 15's
TARGETS = {"CarRacing-v3": (700.0, 500.0)}
STAGES = ("collect", "vae", "mdnrnn", "controller")


def stage_times(rows: list[dict]) -> dict[str, float]:
    """Seconds spent in each stage, summed over the run's metrics rows."""
    totals = dict.fromkeys(STAGES, 0.0)
    for row in rows:
        totals[row["stage"]] = totals.get(row["stage"], 0.0) + float(row.get("wall_s", 0.0))
    return totals


def curve(rows: list[dict]) -> list[tuple[int, float]]:
    """(generation, C's mean on the run's real evaluation episodes) as training logged them."""
    return [(r["generation"], r["mean_return"]) for r in rows
            if r["stage"] == "controller" and "mean_return" in r]


def host_cpu() -> str:
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", nargs="?", default="CarRacing-v3")
    p.add_argument("--out", type=Path, required=True, help="the run directory")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=5_000_000, help="seed of the first evaluation "
                                                                 "episode")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.epilog = "arguments after -- go to `fastmbrl train` (e.g. -- --train-in dream)"
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = p.parse_args(argv[:cut]), argv[cut + 1:]
    argv_train = ["train", args.task, "--algo", "worldmodels", "--out", str(args.out), *extra]
    state, done = args.out / "state.json", False
    if state.exists():  # the run keeps its settings: only how it reports may be given again
        argv_train = ["train", "--resume", str(args.out), *(f for f in extra if f == "--quiet")]
        try:
            done = json.loads(state.read_text()).get("stage") == "done"
        except ValueError:
            pass  # `train --resume` recovers an interrupted commit or says what is wrong
    if not done:
        code = fastmbrl_main(argv_train)
        if code:
            return code
    result = evaluate(args.out, args.episodes, args.seed,
                      log=None if args.json else (lambda m: print(m, flush=True)))
    rows = read_metrics(args.out)  # the committed rows only
    times = stage_times(rows)
    target, least = TARGETS.get(args.task, (None, None))
    summary = {"task": args.task, "run_dir": str(args.out), "cpu": host_cpu(),
               "episodes": args.episodes, "seed": args.seed,
               "mean_return": result["mean_return"], "std_return": result["std_return"],
               "returns": result["returns"], "stage_wall_s": times,
               "total_wall_s": sum(times.values()), "curve": curve(rows),
               "target": target, "least": least,
               "reached": None if target is None else result["mean_return"] >= target}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.task}: mean return {summary['mean_return']:.1f} ± {summary['std_return']:.1f} "
          f"over {args.episodes} episodes (seeds {args.seed}+), CPU {summary['cpu']}")
    print("wall time per stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f"; total {summary['total_wall_s'] / 3600:.2f} h")
    if target is not None:
        verdict = ("reached" if result["mean_return"] >= target else
                   "working, below the target" if result["mean_return"] >= least else
                   "below the least that counts as working")
        print(f"target {target:.0f} (least {least:.0f}): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
