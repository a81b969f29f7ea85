"""MB-MF against TRPO from scratch: learning curves over seeds in one PNG, and the env steps each
needs to reach a target return.

    PYTHONPATH=. python bench/mbmf_learning.py HalfCheetah-v5 --steps 400000 --target 1500 \\
        --seeds 0 --mbmf mbrl="dict(steps=30000)" dagger_rounds=3 --out runs/mbmf-bench

Both algorithms get the same total env-step budget; MB-MF's axis counts every phase (MBRL data,
DAgger rollouts, TRPO). A run's training return is the mean episode return of each metrics row
(MPC episodes, then the deterministic imitated policy in DAgger, then TRPO's stochastic policy).
"Reached" is the first row whose return is at least --target. Runs go to --out/ALGO/TASK-sSEED
(resumable: an existing finished run directory is reused, not retrained). Needs matplotlib
(the `plot` extra) for the figure.
"""
from __future__ import annotations

import os

# small matrices: a second BLAS thread only spins against the other work on these cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from fastmbrl.algorithms import mbmf, trpo  # noqa: E402
from fastmbrl.errors import require  # noqa: E402


def parse_settings(items):
    settings = {}
    for item in items:
        key, value = item.split("=", 1)
        settings[key] = eval(value, {"dict": dict})  # a benchmark script: settings from its user
    return settings


def run_one(algo, task, seed, steps, settings, out, verbose):
    """Train (or resume, or reuse a finished run); returns (rows, wall seconds)."""
    module, cls = (mbmf, mbmf.MBMFRun) if algo == "mbmf" else (trpo, trpo.TRPORun)
    log = print if verbose else (lambda *a: None)
    t0 = time.perf_counter()
    if out is not None and (out / "config.json").exists():
        run = cls.resume(out, log)
        run.train()
    else:
        run = module.train(task, out=out, log=log, seed=seed, steps=steps, **settings)
    return [r for r in run.metrics if r["mean_return"] is not None], time.perf_counter() - t0


def first_reaching(rows, target, skip_phase=None):
    """env_steps of the first row (not of phase `skip_phase`) with a return >= target, or None."""
    return next((r["env_steps"] for r in rows if target is not None
                 and (skip_phase is None or r.get("phase") != skip_phase)
                 and r["mean_return"] >= target), None)


def mean_curve(curves, grid):
    """Mean over seeds of the curves, each linearly interpolated on `grid` within its own range
    (NaN where no seed has a point)."""
    values = []
    for rows in curves:
        x = np.array([r["env_steps"] for r in rows], float)
        y = np.array([r["mean_return"] for r in rows], float)
        values.append(np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan))
    values = np.array(values)
    count = np.sum(~np.isnan(values), axis=0)
    total = np.nansum(values, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot(results, task, target, path):
    require("matplotlib", "plot", "bench/mbmf_learning.py")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = [r for curves in results.values() for c in curves for r in c]
    grid = np.linspace(min(r["env_steps"] for r in rows), max(r["env_steps"] for r in rows), 400)
    for (algo, curves), color in zip(results.items(), ("tab:red", "tab:blue")):
        for rows in curves:
            ax.plot([r["env_steps"] for r in rows], [r["mean_return"] for r in rows],
                    color=color, alpha=0.25, lw=0.8)
        label = {"mbmf": "MB-MF (MPC → DAgger → TRPO)", "trpo": "TRPO from scratch"}[algo]
        ax.plot(grid, mean_curve(curves, grid), color=color, lw=2,
                label=f"{label}, mean of {len(curves)} seed(s)")
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("environment steps (all phases)")
    ax.set_ylabel("mean training episode return")
    ax.set_title(f"{task}: MB-MF vs TRPO from scratch")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("--steps", type=int, required=True, help="env steps per run, all phases")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--target", type=float, help="report the first env step reaching this return")
    p.add_argument("--out", help="parent directory of the run directories")
    p.add_argument("--png", help="figure path (default: OUT/TASK-mbmf-vs-trpo.png or ./...)")
    p.add_argument("--algos", nargs="+", choices=("mbmf", "trpo"), default=["mbmf", "trpo"])
    p.add_argument("--mbmf", nargs="*", default=[], metavar="KEY=VALUE",
                   help="MBMFConfig settings, e.g. dagger_rounds=2 mbrl='dict(steps=30000)'")
    p.add_argument("--trpo", nargs="*", default=[], metavar="KEY=VALUE",
                   help="TRPOConfig settings of TRPO from scratch")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    settings = {"mbmf": parse_settings(args.mbmf), "trpo": parse_settings(args.trpo)}
    results = {}
    for algo in args.algos:
        results[algo] = []
        for seed in args.seeds:
            out = Path(args.out) / algo / f"{args.task}-s{seed}" if args.out else None
            rows, wall = run_one(algo, args.task, seed, args.steps, settings[algo], out,
                                 args.verbose)
            results[algo].append(rows)
            reached = first_reaching(rows, args.target)
            final = statistics.mean(r["mean_return"] for r in rows[-5:])
            phases = ""
            if algo == "mbmf":
                ends = {}
                for r in rows:
                    ends[r["phase"]] = (r["env_steps"], r["mean_return"])
                phases = (f"; the policy (DAgger or TRPO, not MPC) reached it at "
                          f"{first_reaching(rows, args.target, 'mbrl')}; phase ends (env steps, "
                          "return): "
                          + ", ".join(f"{k} ({s}, {v:.0f})" for k, (s, v) in ends.items()))
            print(f"{algo} {args.task} seed {seed}: reached {args.target} at {reached} env steps, "
                  f"final {final:.1f}, best {max(r['mean_return'] for r in rows):.1f}, "
                  f"wall {wall:.0f} s{phases}", flush=True)
    for algo, curves in results.items():
        views = (("", None), (" (policy only)", "mbrl")) if algo == "mbmf" else (("", None),)
        for who, skip in views:
            hits = [first_reaching(rows, args.target, skip) for rows in curves]
            got = [h for h in hits if h is not None]
            print(f"{algo}{who}: reached {args.target} in {len(got)}/{len(hits)} seed(s) at "
                  f"{hits} env steps, median {statistics.median(got) if got else None}")
    png = args.png or str(Path(args.out or ".") / f"{args.task}-mbmf-vs-trpo.png")
    plot(results, args.task, args.target, png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
