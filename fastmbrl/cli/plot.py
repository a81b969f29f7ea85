"""`fastmbrl plot DIR`: the learning curve of one or more runs, as a PNG."""
from __future__ import annotations

from pathlib import Path

from fastmbrl.algorithms.rundir import read_metrics, read_run_config
from fastmbrl.errors import FastMBRLError, FormatError, require
from fastmbrl.io import write_atomic


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _curve(d):
    """(label, env steps, mean returns) of the run in `d`, read and checked before drawing."""
    cfg = read_run_config(d)
    points = []
    for r in read_metrics(d):
        ret = r.get("mean_return") if isinstance(r, dict) else None
        if ret is None:
            continue  # an iteration without a whole episode
        if not (_is_number(r.get("env_steps")) and _is_number(ret)):
            raise FormatError(f"{Path(d) / 'metrics.jsonl'} has a row without numbers for "
                              "env_steps and mean_return")
        points.append((r["env_steps"], ret))
    if not points:
        raise FastMBRLError(f"{d} has no finished iteration to plot yet")
    label = f"{cfg.get('task')} {cfg.get('planner', cfg.get('algo'))} seed {cfg.get('seed')}"
    return label, *zip(*points)


def output_path(path) -> Path:
    """`path` if a PNG can be written there, else a FastMBRLError saying why."""
    path = Path(path)
    if path.is_dir():
        raise FastMBRLError(f"-o {path} is a directory; give a file name ending in .png")
    if path.suffix.lower() != ".png":
        raise FastMBRLError(f"-o {path}: the file name must end in .png")
    if not path.parent.is_dir():
        raise FastMBRLError(f"-o {path}: directory {path.parent} does not exist")
    return path


def plot_runs(run_dirs, path, title=None) -> Path:
    """Mean episode return against environment steps for each run in `run_dirs`, written to
    exactly `path` (a .png)."""
    curves = [_curve(d) for d in run_dirs]
    path = output_path(path)
    require("matplotlib", "plot", "fastmbrl plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, steps, returns in curves:
        ax.plot(steps, returns, marker="o", label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return")
    ax.set_title(title or "fastmbrl learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)
    return path


def add_arguments(p):
    p.add_argument("run_dirs", metavar="DIR", nargs="+", help="run directories")
    p.add_argument("-o", "--output", help="PNG path (default: DIR/learning_curve.png)")


def run(args) -> int:
    out = args.output or str(Path(args.run_dirs[0]) / "learning_curve.png")
    print(f"wrote {plot_runs(args.run_dirs, out)}")
    return 0
