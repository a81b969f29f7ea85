"""`fastmbrl bench cmaes`: what fastmbrl.CMAES costs, in evaluations and in its own time.

- Evaluations to f < 1e-8 on the standard functions (sphere, ellipsoid of condition 1e6,
  Rosenbrock) from x0 = 0.1 (all coordinates) and σ₀ = 0.5, over `--seeds` seeds (median, min,
  max), next to the published CMA-ES figures for 10-D; runs that stop before the target are
  counted as failures and left out of the median.
- The optimiser's overhead per generation at `--controller-dim` variables (867: the World
  Models CarRacing controller), with no objective (the fitness is a random vector): ask and
  tell each, median over `--generations`, the lazy eigendecomposition included in the mean.
"""
from __future__ import annotations

import json
import time

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.errors import FastMBRLError
from fastmbrl.optim.cmaes import CMAES, default_popsize
from fastmbrl.optim.functions import FUNCTIONS
from fastmbrl.progress import Progress
from .common import blas_info, machine, machine_line

#: published CMA-ES evaluations to 1e-8 in 10-D from σ₀ = 0.5 (docs/cmaes.md)
PUBLISHED_10D = {"sphere": 1300, "ellipsoid": 4000, "rosenbrock": 5000}
TARGET = 1e-8


def add_arguments(p):
    p.add_argument("--functions", default=",".join(FUNCTIONS),
                   help=f"comma-separated test functions (default: {','.join(FUNCTIONS)})")
    p.add_argument("--dim", type=int, default=10, help="their dimension (default 10)")
    p.add_argument("--seeds", type=int, default=11, help="runs per function (default 11)")
    p.add_argument("--no-active", action="store_true",
                   help="positive recombination weights only (CMAES(active=False))")
    p.add_argument("--controller-dim", type=int, default=867,
                   help="variables for the overhead measurement (default 867; 0: skip it)")
    p.add_argument("--popsize", type=int, default=None,
                   help="population for the overhead measurement (default 4 + 3 ln n)")
    p.add_argument("--generations", type=int, default=200,
                   help="generations timed for the overhead (default 200)")
    p.add_argument("--json", action="store_true", help="print one JSON object per row")


def evaluation_counts(name, dim, seeds, active=True, progress=None) -> dict:
    f = FUNCTIONS[name]
    counts, failed = [], 0
    for seed in range(seeds):
        es = CMAES(np.full(dim, 0.1), 0.5, seed=seed, ftarget=TARGET, active=active)
        result = es.optimize(f)
        if result.fbest <= TARGET:
            counts.append(result.evaluations)
        else:
            failed += 1
        if progress is not None:
            progress(seed + 1, seeds)
    row = {"function": name, "dim": dim, "seeds": seeds, "active": active, "target": TARGET,
           "evaluations": counts, "failed": failed,
           "median": float(np.median(counts)) if counts else None,
           "min": min(counts, default=None), "max": max(counts, default=None)}
    if dim == 10:
        row["published"] = PUBLISHED_10D[name]
    return row


def overhead(dim, popsize=None, generations=200, progress=None) -> dict:
    """ms per ask and per tell at `dim` variables (fitness: a fixed-seed random vector)."""
    es = CMAES(np.zeros(dim), 0.1, popsize=popsize, seed=0)
    rng = np.random.default_rng(1)
    t_ask, t_tell = [], []
    for g in range(generations):
        t0 = time.perf_counter()
        X = es.ask()
        t1 = time.perf_counter()
        es.tell(X, rng.standard_normal(len(X)))
        t2 = time.perf_counter()
        t_ask.append(t1 - t0)
        t_tell.append(t2 - t1)
        if progress is not None:
            progress(g + 1, generations)
    C = es.C.copy()
    t0 = time.perf_counter()
    np.linalg.eigh(C)
    eigh = time.perf_counter() - t0
    ms = lambda v: round(1e3 * v, 3)  # noqa: E731
    return {"dim": dim, "popsize": es.popsize, "generations": generations,
            "ask_ms_median": ms(np.median(t_ask)), "tell_ms_median": ms(np.median(t_tell)),
            "generation_ms_mean": ms(np.mean(np.add(t_ask, t_tell))),
            "eigh_ms": ms(eigh),
            "eigendecompositions_per_generation": round(es.popsize / es.eigen_gap, 3)}


def run(args) -> int:
    names = [v.strip() for v in args.functions.split(",") if v.strip()]
    unknown = [v for v in names if v not in FUNCTIONS]
    if unknown or not names:
        raise FastMBRLError(f"--functions: unknown function {', '.join(unknown) or '(none)'}; "
                            f"choose from {', '.join(FUNCTIONS)}")
    try:
        dim = check_positive_int(args.dim, "--dim")
        seeds = check_positive_int(args.seeds, "--seeds")
        generations = check_positive_int(args.generations, "--generations")
        if args.popsize is not None and args.popsize < 2:
            raise ValueError(f"--popsize must be an integer >= 2, got {args.popsize}")
        if args.controller_dim < 0:
            raise ValueError(f"--controller-dim must be >= 0, got {args.controller_dim}")
    except ValueError as exc:
        raise FastMBRLError(str(exc)) from None
    if dim < 2:
        raise FastMBRLError(f"--dim must be >= 2, got {dim}")
    if not args.json:
        print(machine_line())
        print(f"evaluations to f < {TARGET:g} from x0 = 0.1, sigma0 = 0.5, {seeds} seeds "
              f"({'positive weights only' if args.no_active else 'active CMA'}), {dim}-D")
        print(f"{'function':<12}{'median':>9}{'min':>8}{'max':>8}{'failed':>8}"
              f"{'published':>11}{'ratio':>7}")
    for name in names:
        bar = Progress(name, unit="runs")
        try:
            row = evaluation_counts(name, dim, seeds, not args.no_active, bar)
        finally:
            bar.clear()
        if args.json:
            print(json.dumps(dict(row, **machine())), flush=True)
            continue
        pub = row.get("published")
        ratio = (f"{row['median'] / pub:>7.2f}" if pub and row["median"] is not None
                 else f"{'-':>7}")
        med = "-" if row["median"] is None else f"{row['median']:.0f}"
        print(f"{name:<12}{med:>9}{row['min'] or '-':>8}{row['max'] or '-':>8}"
              f"{row['failed']:>8}{pub or '-':>11}{ratio}", flush=True)
    if args.controller_dim:
        n = args.controller_dim
        bar = Progress(f"overhead n={n}", unit="generations")
        try:
            row = overhead(n, args.popsize, generations, bar)
        finally:
            bar.clear()
        row["blas"] = blas_info()
        if args.json:
            print(json.dumps(dict(row, **machine())), flush=True)
        else:
            lam = args.popsize or default_popsize(n)
            print(f"overhead per generation, n = {n}, popsize {lam}, {generations} generations "
                  f"(BLAS: {row['blas']}):\n"
                  f"  ask {row['ask_ms_median']} ms, tell {row['tell_ms_median']} ms (medians); "
                  f"mean per generation {row['generation_ms_mean']} ms with the lazy "
                  f"eigendecomposition ({row['eigh_ms']} ms each, "
                  f"{row['eigendecompositions_per_generation']} per generation)")
    return 0
