"""`fastmbrl plot DIR`: the learning curve of one or more runs, as a PNG."""
from __future__ import annotations

from pathlib import Path

from fastmbrl.algorithms.rundir import read_metrics, read_run_config
from fastmbrl.errors import FastMBRLError, require


def plot_runs(run_dirs, path, title=None) -> Path:
    """Mean episode return against environment steps for each run in `run_dirs`."""
    require("matplotlib", "plot", "fastmbrl plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for d in run_dirs:
        cfg = read_run_config(d)
        rows = [r for r in read_metrics(d) if r.get("mean_return") is not None]
        if not rows:
            raise FastMBRLError(f"{d} has no finished iteration to plot yet")
        ax.plot([r["env_steps"] for r in rows], [r["mean_return"] for r in rows], marker="o",
                label=f"{cfg['task']} {cfg.get('planner', cfg['algo'])} seed {cfg['seed']}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return")
    ax.set_title(title or "fastmbrl learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_arguments(p):
    p.add_argument("run_dirs", metavar="DIR", nargs="+", help="run directories")
    p.add_argument("-o", "--output", help="PNG path (default: DIR/learning_curve.png)")


def run(args) -> int:
    out = args.output or str(Path(args.run_dirs[0]) / "learning_curve.png")
    print(f"wrote {plot_runs(args.run_dirs, out)}")
    return 0
