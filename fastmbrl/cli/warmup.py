"""`fastmbrl warmup DIR`: compile a saved controller's kernels into numba's on-disk cache before
deployment, so that the first `Controller.load` in production loads them instead of compiling.

Only what the controller runs is compiled: the rollout kernel specialised to the task's reward
and termination and the planner's own functions (not the training kernels). The cache entries
are for this machine's CPU and instruction-set spec (`fastmbrl info` prints both and the cache
folder): warm up on the machine, or one with the same CPU, that will run the controller.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fastmbrl.cli.train import add_import_argument, import_modules
from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels import isa

# a fresh interpreter's first action: what a deployed process pays after this command
_FIRST_ACTION = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from fastmbrl import Controller
from fastmbrl.algorithms.rundir import import_run_tasks
from fastmbrl.tasks import import_tasks
from pathlib import Path
d = Path(sys.argv[1])
if (d / "config.json").exists():
    import_run_tasks(d)
for spec in json.loads(sys.argv[2]):
    import_tasks(spec)
c = Controller.load(d)
c.act(np.zeros(c.task.obs_dim))
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def add_arguments(p):
    p.add_argument("run_dir", metavar="DIR", help="run directory holding controller.json and "
                                                  "model.npz")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip timing a fresh process's first action afterwards")
    add_import_argument(p)


def first_action_seconds(run_dir, imports=()) -> float:
    """Seconds from interpreter start-up work (imports included) to the first action of the
    controller in `run_dir`, measured in a fresh Python process."""
    proc = subprocess.run([sys.executable, "-c", _FIRST_ACTION, str(run_dir),
                           json.dumps(list(imports))], capture_output=True, text=True,
                          env=dict(os.environ), check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FastMBRLError(f"a fresh process could not load the controller in {run_dir}: {last}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def run(args) -> int:
    import numpy as np
    import numba

    from fastmbrl.algorithms.rundir import import_run_tasks
    from fastmbrl.planning.controller import Controller

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FastMBRLError(f"{run_dir} is not a directory (give a run directory)")
    import_modules(args)
    if (run_dir / "config.json").exists():
        import_run_tasks(run_dir)
    t0 = time.perf_counter()
    controller = Controller.load(run_dir)  # builds the planner, whose warm-up compiles
    controller.act(np.zeros(controller.task.obs_dim))
    spent = time.perf_counter() - t0
    s = controller.settings
    print(f"compiled or loaded {s['planner']} (horizon {s['horizon']}, {s['num_samples']} "
          f"samples) for {controller.task.name} in {spent:.1f} s; {isa.current().name} kernels "
          f"for CPU {isa.target_cpu()} in {numba.config.CACHE_DIR}")
    if args.check:
        fresh = first_action_seconds(run_dir, args.imports)
        print(f"a fresh process now reaches its first action in {fresh:.2f} s")
    return 0
