"""Sweep executors: two jobs side by side against the same jobs one after another, and the
overhead of a job (submission to its start and to its first iteration) locally and on Ray.

    python bench/sweep_bench.py parallel --steps 1400    # 2 Pendulum jobs: 2x1 vs 1x2 threads
    python bench/sweep_bench.py overhead                 # local and a local Ray instance

Not a CI test (minutes, and timings). Each measurement trains into a fresh temporary directory.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fastmbrl.cli.sweep import expand, read_spec, resolve, run_job
from fastmbrl.executor import run_jobs


def jobs(root: Path, sets: list[str]) -> list[dict]:
    out = []
    for name, settings in expand(read_spec(None, sets)):
        entry, imports = resolve(settings)
        out.append({"name": name, "out": str(root / name), "config": entry,
                    "imports": imports, "tensorboard": False})
    return out


def timed(todo, **kw) -> tuple[float, list]:
    t0 = time.time()
    results = []
    for o in run_jobs(run_job, todo, **kw):
        if not o.ok:
            raise SystemExit(f"{o.key}: {o.error}\n{o.details}")
        results.append(o.value)
    return time.time() - t0, [dict(r, submitted_at=t0) for r in results]


def parallel(args) -> dict:
    sets = ["task=Pendulum-v1", f"steps={args.steps}", "random_steps=200",
            "steps_per_iteration=400", "epochs=20", "seed=0,1"]
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    timed(jobs(tmp / "warm", ["task=Pendulum-v1", "steps=300", "random_steps=200",
                              "steps_per_iteration=100", "epochs=1"]), workers=1, threads=2)
    wide, _ = timed(jobs(tmp / "wide", sets), workers=2, threads=1)
    one_by_one, _ = timed(jobs(tmp / "seq", sets), workers=1, threads=2)
    single, _ = timed(jobs(tmp / "seq1", sets), workers=1, threads=1)
    return {"two_jobs_at_once_s": round(wide, 1), "one_after_another_s": round(one_by_one, 1),
            "one_after_another_1_thread_s": round(single, 1),
            "ratio": round(wide / one_by_one, 3), "ratio_1_thread": round(wide / single, 3)}


def overhead(args) -> dict:
    sets = ["task=Pendulum-v1", "steps=300", "random_steps=200", "steps_per_iteration=100",
            "epochs=1", "hidden=[[16,16]]", "seed=0,1"]
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    out = {}
    for backend in ("local", "ray"):
        kw = {"workers": 2, "threads": 1} if backend == "local" else {"threads": 1}
        if backend == "ray":
            import ray

            t0 = time.time()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            out["ray_init_s"] = round(time.time() - t0, 2)
        _, results = timed(jobs(tmp / backend, sets), backend=backend, **kw)
        out[backend] = {
            "to_start_s": [round(r["started_at"] - r["submitted_at"], 2) for r in results],
            "to_first_iteration_s": [round(r["first_iteration_at"] - r["submitted_at"], 2)
                                     for r in results]}
        if backend == "ray":
            ray.shutdown()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("parallel", "overhead"))
    p.add_argument("--steps", type=int, default=1400)
    args = p.parse_args(argv)
    print(json.dumps((parallel if args.what == "parallel" else overhead)(args)))


if __name__ == "__main__":
    main()
