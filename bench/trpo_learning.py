"""TRPO learning curves: train on a task for N env steps over seeds, print returns and wall time.

    PYTHONPATH=. python bench/trpo_learning.py InvertedPendulum-v5 --steps 100000 --seeds 0 1 2

Per seed: the best and final mean episode return (mean of the last 5 iterations that finished an
episode), the env steps at which the mean return first reached --target, the deterministic
policy's mean return over --eval-episodes fresh episodes, wall time, and the median seconds per
iteration spent in env stepping, acting (policy forward + sampling), policy update and value fit. Runs go to --out/TASK-sSEED when
--out is given (resumable with fastmbrl's run-directory rules).
"""
from __future__ import annotations

import os

# TRPO's matrices are too small to gain from a second BLAS thread, and on cores shared with other
# work OpenBLAS's spinning threads made updates up to 15x slower here: one thread unless told.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from fastmbrl.algorithms.trpo import PolicyController, train  # noqa: E402


def evaluate(run, episodes):
    """Mean return of the run's deterministic policy (mean action) on fresh episodes."""
    controller = PolicyController(run.policy, run.task.name, run.task.action_low,
                                  run.task.action_high)
    env, returns = run.task.make_env(), []
    for i in range(episodes):
        obs, _ = env.reset(seed=1_000_000 + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(controller.act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return statistics.mean(returns)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--target", type=float, help="report the first env step reaching this return")
    p.add_argument("--out", help="parent directory for the run directories")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="other TRPOConfig settings, e.g. max_kl=0.02 (values parsed as Python)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    settings = {}
    for item in args.set:
        key, value = item.split("=", 1)
        settings[key] = eval(value, {})  # a benchmark script: settings come from its user
    finals = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        out = f"{args.out}/{args.task}-s{seed}" if args.out else None
        run = train(args.task, out=out, log=print if args.verbose else (lambda *a: None),
                    seed=seed, steps=args.steps, **settings)
        wall = time.perf_counter() - t0
        rows = [r for r in run.metrics if r["mean_return"] is not None]
        curve = [r["mean_return"] for r in rows]
        final = statistics.mean(curve[-5:])
        finals.append(final)
        reached = next((r["env_steps"] for r in rows if args.target is not None
                        and r["mean_return"] >= args.target), None)
        ms = {k: 1e3 * statistics.median(r[k] for r in run.metrics)
              for k in ("env_s", "act_s", "policy_s", "value_s")}
        print(f"{args.task} seed {seed}: final {final:.1f}, best {max(curve):.1f}, "
              f"reached {args.target} at {reached} steps, deterministic eval "
              f"{evaluate(run, args.eval_episodes):.1f}, wall {wall:.0f} s over "
              f"{len(run.metrics)} iterations; median ms per iteration: env {ms['env_s']:.0f}, "
              f"act {ms['act_s']:.0f}, policy update {ms['policy_s']:.0f}, "
              f"value fit {ms['value_s']:.0f}", flush=True)
    print(f"{args.task}: median final return {statistics.median(finals):.1f} over "
          f"{len(finals)} seed(s)")


if __name__ == "__main__":
    main()
