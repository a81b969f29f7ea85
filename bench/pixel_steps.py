"""Steps per second of the pixel tasks on one core: the bare environment, the 64x64 frames
(rendering and the area resize included) and a whole collection into a frame store (the
random policy and the chunk writes too). Plan World Models budgets with the last column.

    python bench/pixel_steps.py --steps 2000 --out /tmp/pixel-bench
"""
from __future__ import annotations

import argparse
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core
    os.environ.setdefault(var, "1")

import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def rate(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--tasks", nargs="+", default=["CarRacing-v3", "Pendulum-v1"])
    parser.add_argument("--out", default="/tmp/fastmbrl-pixel-bench")
    args = parser.parse_args()

    import gymnasium
    import llvmlite.binding as llvm

    from fastmbrl.data.collect import RandomPolicy, collect
    from fastmbrl.tasks.pixels import get_pixel_task

    print(f"CPU {llvm.get_host_cpu_name()}, {args.steps} steps per figure")
    print(f"{'task':14} {'bare env':>10} {'64x64 frames':>13} {'collect':>10}   (steps/s)")
    for name in args.tasks:
        task = get_pixel_task(name)
        kwargs = dict(task.env_kwargs)
        if task.render_size is not None:
            kwargs["render_mode"] = "rgb_array"
        bare = gymnasium.make(task.env_id, **kwargs)
        bare.reset(seed=0)

        def bare_step() -> None:
            _, _, term, trunc, _ = bare.step(bare.action_space.sample())
            if task.render_size is not None:  # rendered at gymnasium's size
                bare.render()
            if term or trunc:
                bare.reset()

        bare_rate = rate(bare_step, args.steps)
        bare.close()

        env = task.make_env()
        env.reset(seed=0)
        policy = RandomPolicy(env.action_space.low, env.action_space.high)
        rng = np.random.default_rng(0)
        policy.reset(rng)

        def frame_step() -> None:
            _, _, term, trunc, _ = env.step(policy(rng))
            if term or trunc:
                env.reset()
                policy.reset(rng)

        frame_rate = rate(frame_step, args.steps)
        env.close()

        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)
        max_steps = min(args.steps, 1000)
        episodes = max(1, args.steps // max_steps)
        t = time.perf_counter()
        counts = collect(out, task, episodes, max_steps=max_steps, meta=task.describe(),
                         progress=False)
        collect_rate = counts["steps"] / (time.perf_counter() - t)
        shutil.rmtree(out, ignore_errors=True)
        print(f"{name:14} {bare_rate:10.0f} {frame_rate:13.0f} {collect_rate:10.0f}")


if __name__ == "__main__":
    main()
