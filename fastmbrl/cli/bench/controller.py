"""`fastmbrl bench controller`: what an embedder of `Controller.act` gets, per call.

Each configuration builds a DynamicsModel with random weights and realistic normalisation
statistics (set directly), wraps it in a Controller on the built-in task, and reports:

- latency of `act(obs)` over `--calls` calls after warm-up (median, p90, p99), on a fixed cycle
  of random observations, warm start on as in an episode;
- allocation per call, measured with tracemalloc: `bytes_per_call` is the most memory a call
  took on top of what was live before it (all allocations, short-lived ones included; numba's
  unboxing costs 48 bytes per array argument of a compiled function while it runs), and
  `numpy_bytes_per_call` the NumPy array data seen alive at any Python call/return boundary
  during a call (0: no NumPy array is allocated);
- `first_action_s`: in a fresh process with a warm numba cache, seconds from `Controller.load`
  to the first action returned (`startup_s` adds the interpreter and the import).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field

import numba
import numpy as np

from fastmbrl.planning.controller import Controller
from fastmbrl.planning.planners import check_deadline
from fastmbrl.models.dynamics import DynamicsModel
from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels import num_threads
from fastmbrl.progress import Progress
from .common import machine, machine_line

F32 = np.float32


@dataclass(frozen=True)
class Config:
    name: str
    task: str
    hidden: tuple
    activation: str
    planner: str
    num_samples: int
    horizon: int
    options: dict = field(default_factory=dict)
    ignore_obs_dims: tuple = ()


CONFIGS = {
    c.name: c for c in [
        Config("pendulum", "Pendulum-v1", (64, 64), "silu", "cem", 400, 25, {"iterations": 5}),
        Config("cheetah", "HalfCheetah-v5", (200, 200), "silu", "cem", 400, 30,
               {"iterations": 4}, (0,)),
        Config("cheetah_rs", "HalfCheetah-v5", (200, 200), "relu", "rs", 1000, 30, {}, (0,)),
    ]
}


def make_controller(cfg: Config, seed: int = 0) -> Controller:
    """A Controller whose model has random weights and plausible statistics: inputs of unit-ish
    spread around random means, per-step deltas of 5-20 % of a unit (as a fitted model has)."""
    from fastmbrl.tasks import get_task

    task = get_task(cfg.task)
    model = DynamicsModel(task.obs_dim, task.act_dim, cfg.hidden, cfg.activation,
                          cfg.ignore_obs_dims, seed=seed)
    rng = np.random.default_rng(seed)
    d_in = task.obs_dim + task.act_dim
    state = model.state_dict()
    scale = 1.0 / rng.uniform(0.5, 2.0, d_in)
    scale[list(cfg.ignore_obs_dims)] = 0.0
    state.update(input_mean=rng.standard_normal(d_in), input_scale=scale,
                 delta_mean=0.01 * rng.standard_normal(task.obs_dim),
                 delta_std=rng.uniform(0.05, 0.2, task.obs_dim))
    model.load_state(state)
    return Controller(model, task, planner=cfg.planner, horizon=cfg.horizon,
                      num_samples=cfg.num_samples, seed=seed, planner_options=cfg.options)


def observations(controller: Controller, n: int = 16, seed: int = 1) -> list:
    """Random float64 observations (what gymnasium's MuJoCo tasks return)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(controller.task.obs_dim) for _ in range(n)]


def latency_ms(controller: Controller, calls: int, warmup: int = 5,
               progress=None) -> np.ndarray:
    """Milliseconds per act() on the embedded path (into a preallocated `out`);
    `progress(done, calls)` is called between the timed calls."""
    obs = observations(controller)
    out = np.empty(controller.task.act_dim, np.float32)
    for i in range(warmup):
        controller.act(obs[i % len(obs)], out)
    times = np.empty(calls)
    for i in range(calls):
        o = obs[i % len(obs)]
        t = time.perf_counter()
        controller.act(o, out)
        times[i] = time.perf_counter() - t
        if progress is not None:
            progress(i + 1, calls)
    return 1e3 * times


def allocations(fn, calls: int = 20, numpy_calls: int = 3) -> dict:
    """Allocation per call of `fn()` after one warm-up call (see the module docstring):
    `bytes_per_call` (largest over `calls` calls) and `numpy_bytes_per_call` (over
    `numpy_calls` calls, sampled at every Python-level call and return)."""
    fn()
    peaks = np.zeros(calls, np.int64)
    tracemalloc.start()
    try:
        for i in range(calls):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            fn()
            peaks[i] = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    only_numpy = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
    seen = 0

    def sample(frame, event, arg):
        nonlocal seen
        traces = tracemalloc.take_snapshot().filter_traces(only_numpy).traces
        seen = max(seen, sum(t.size for t in traces))

    tracemalloc.start()  # only what is allocated from here on is traced
    sys.setprofile(sample)
    try:
        for _ in range(numpy_calls):
            fn()
    finally:
        sys.setprofile(None)
        tracemalloc.stop()
    return {"bytes_per_call": int(peaks.max()), "numpy_bytes_per_call": int(seen)}


_FIRST_ACTION = """
import time; t0 = time.perf_counter()
import sys, numpy as np
from fastmbrl import Controller
t1 = time.perf_counter()
c = Controller.load(sys.argv[1])
c.act(np.zeros(c.task.obs_dim))
t2 = time.perf_counter()
print(t2 - t1, t2 - t0)
"""


def first_action_s(controller: Controller) -> tuple:
    """(seconds from Controller.load to the first action, the same from interpreter start) in a
    fresh process; numba's cache is warm once this process has built the same controller."""
    with tempfile.TemporaryDirectory() as tmp:
        controller.save(tmp)
        proc = subprocess.run([sys.executable, "-c", _FIRST_ACTION, tmp], capture_output=True,
                              text=True, check=True)
    load, total = (float(v) for v in proc.stdout.split())
    return load, total


def measure(cfg: Config, calls: int = 300, startup: bool = True, deadline_ms=None,
            status=None) -> dict:
    """One configuration's row; `status(message)` hears of each stage and `status.progress` (if
    any) of the timed calls."""
    say = status or (lambda msg: None)
    say(f"{cfg.name}: building the controller (compiles on a cold numba cache)")
    controller = make_controller(cfg)
    controller.planner.deadline_ms = deadline_ms
    say(f"{cfg.name}: timing {calls} calls")
    ms = latency_ms(controller, calls, progress=getattr(status, "progress", None))
    obs = observations(controller, 1)[0]
    out = np.empty(controller.task.act_dim, np.float32)
    row = {
        "config": cfg.name,
        "task": cfg.task,
        "planner": f"{cfg.planner} {cfg.num_samples} x H{cfg.horizon} {cfg.options or ''}".strip(),
        "model": f"{'x'.join(map(str, cfg.hidden))} {cfg.activation}",
        "ms_per_act": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "min_ms": round(float(ms.min()), 3),
        "calls": calls,
        "deadline_ms": deadline_ms,
        # the share of calls that overran the budget (the first iteration always runs)
        "over_deadline": None if deadline_ms is None else round(float(np.mean(ms > deadline_ms)),
                                                                3),
        **allocations(lambda: controller.act(obs, out)),
        "threads": numba.get_num_threads(),
    }
    if startup:
        say(f"{cfg.name}: first action in a fresh process")
        row["first_action_s"], row["startup_s"] = (round(v, 3) for v in first_action_s(controller))
    return row


class _Status:
    """Stage messages and the calls' bar on stderr (stdout keeps the table or the JSON)."""

    def __init__(self, bar: Progress):
        self.progress = bar

    def __call__(self, msg: str) -> None:
        self.progress.print(msg, file=sys.stderr)


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS),
                        help="which configurations to run (default: all)")
    parser.add_argument("--calls", type=int, default=300,
                        help="timed act() calls per configuration (default 300)")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba threads for the timed calls (default: all cores)")
    parser.add_argument("--deadline-ms", type=float, default=None,
                        help="time budget per act(): planners stop refining when it is spent; "
                             "the report gives the share of calls over it")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip the fresh-process time to first action")


def run(args) -> int:
    if args.calls < 1:
        raise FastMBRLError("--calls must be >= 1")
    if args.deadline_ms is not None:
        check_deadline(args.deadline_ms)
    if args.threads is not None and args.threads < 1:  # 0 must not quietly mean all cores
        raise FastMBRLError(f"--threads must be >= 1, got {args.threads}")
    with num_threads(args.threads or numba.config.NUMBA_NUM_THREADS):
        return _run(args)


def _run(args) -> int:
    if not args.json:
        print(f"{machine_line()}\nController.act on float64 observations")
        print(f"{'config':<12}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}{'B/call':>8}"
              f"{'numpy B':>9}{'first act s':>12}  planner / model")
    for name in args.configs:
        cfg = CONFIGS[name]
        bar = Progress(f"{name}", unit="calls")
        status = _Status(bar)
        try:
            row = dict(measure(cfg, args.calls, not args.no_startup, args.deadline_ms, status),
                       **machine())
        finally:
            bar.clear()
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            first = f"{row['first_action_s']:.2f}" if "first_action_s" in row else "-"
            over = ("" if args.deadline_ms is None else
                    f", {100 * row['over_deadline']:.0f} % of calls over {args.deadline_ms} ms")
            print(f"{name:<12}{row['ms_per_act']:>10.2f}{row['p90_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                  f"{row['bytes_per_call']:>8}{row['numpy_bytes_per_call']:>9}{first:>12}  "
                  f"{row['planner']} / {row['model']}{over}", flush=True)
    return 0
