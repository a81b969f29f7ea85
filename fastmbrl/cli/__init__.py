"""The `fastmbrl` command. Each subcommand lives in its own module of this package exposing
`add_arguments(parser)` and `run(args) -> int`; this file only wires them together (a
subcommand's module is imported when the parser is built, light modules only)."""
from __future__ import annotations

import argparse
import importlib
import sys

from fastmbrl import __version__
from fastmbrl.errors import FastMBRLError
from fastmbrl.kernels import isa

# name -> (module, help)
COMMANDS = {
    "train": ("fastmbrl.cli.train", "learn to control a task (MBRL loop of Algorithm 1)"),
    "eval": ("fastmbrl.cli.eval", "run a saved controller and report its returns"),
    "plot": ("fastmbrl.cli.plot", "draw a run's learning curve to a PNG"),
    "sweep": ("fastmbrl.cli.sweep", "many training runs from a grid of settings, side by side "
              "or on Ray"),
    "report": ("fastmbrl.cli.report", "aggregate a sweep's runs over seeds: IQM, 95 % CI, curves"),
    "warmup": ("fastmbrl.cli.warmup", "compile a saved controller's kernels ahead of deployment"),
    "demo": ("fastmbrl.cli.demo", "fit a dynamics model on Pendulum transitions"),
    "info": ("fastmbrl.cli.info", "the instruction-set spec, CPU and versions this install runs with"),
}
BENCH_COMMANDS = {
    "train": ("fastmbrl.cli.bench.train", "training throughput of the dynamics MLP"),
    "plan": ("fastmbrl.cli.bench.plan", "planning latency of the fused rollout kernel"),
    "controller": ("fastmbrl.cli.bench.controller", "latency of Controller.act"),
    "vae": ("fastmbrl.cli.bench.vae", "training throughput of the World Models ConvVAE"),
    "mdnrnn": ("fastmbrl.cli.bench.mdnrnn", "training throughput of the MDN-RNN (World Models' M)"),
    "dream": ("fastmbrl.cli.bench.dream", "World Models controllers rolled out inside M: "
              "rollouts per second"),
    "planners": ("fastmbrl.cli.bench.planners", "return against compute: every planner at "
                 "several budgets on a trained run's model"),
    "cmaes": ("fastmbrl.cli.bench.cmaes", "CMA-ES: evaluations to 1e-8 on the standard "
              "functions, ask/tell overhead at the controller's size"),
}


def _add(subparsers, table):
    for name, (module, help_) in table.items():
        mod = importlib.import_module(module)
        p = subparsers.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmbrl", description="Model-based reinforcement learning on the CPU: train, "
        "evaluate and plot runs, and benchmark the kernels. `fastmbrl COMMAND --help` for each.")
    spec = isa.current()
    parser.add_argument("--version", action="version",
                        version=f"fastmbrl {__version__} ({spec.name} kernels, CPU "
                                f"{isa.target_cpu()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add(sub, COMMANDS)
    bench = sub.add_parser("bench", help="benchmarks (throughput, latency)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT")
    _add(bench_sub, BENCH_COMMANDS)
    bench.set_defaults(_run=lambda args: (bench.print_help(), 2)[1])
    return parser


def _error(exc, what=None) -> int:
    """One line on stderr and exit status 2: a user's mistake or a bad file."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"fastmbrl: error: {what + ': ' if what else ''}{text}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    try:
        isa.current()  # a bad FASTMBRL_ISA is a one-line error before anything runs
    except isa.IsaError as exc:
        return _error(exc)
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except (FastMBRLError, ValueError) as exc:
        # they name the bad setting, option or file: a traceback would add nothing for a user
        return _error(exc)
    except (OSError, MemoryError, RecursionError) as exc:
        # last line of defence: the readers and writers name their files and the settings
        # their sizes; these escaped from somewhere that does not yet
        return _error(exc, "out of memory" if isinstance(exc, MemoryError) else
                      "input nested too deeply" if isinstance(exc, RecursionError) else None)
    except KeyboardInterrupt:
        print("fastmbrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
