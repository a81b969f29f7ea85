"""`fastmbrl plot DIR...`: a run's metrics against environment steps, one panel per metric the
runs recorded (return, model losses, planning ms, ...), as a PNG.

`learning_figure(run_dirs)` returns the matplotlib Figure (built without pyplot, so it leaves
the caller's backend alone); `plot_runs` saves it. An MBRL run's random phase is the first point
of its return curve (iteration 0). A World Models run (one at a time) is drawn by its stages
(V's and M's losses per epoch, C's returns per generation) and, in a second PNG, frames of a
stored episode above V's reconstructions and M's dream of the same steps decoded by V.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from fastmbrl.algorithms.mbrl import read_random_phase
from fastmbrl.algorithms.rundir import read_metrics, read_run_config
from fastmbrl.errors import FastMBRLError, FormatError, require
from fastmbrl.io import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: (panel id, title, y label, {metrics field: line label}) in drawing order; a panel is drawn
#: when a run has a number in one of its fields
PANELS = (
    ("return", "return", "mean episode return", {"mean_return": None}),
    ("model_loss", "model loss", "MSE",
     {"train_loss": "train", "val_loss": "validation"}),
    ("plan_ms", "planning", "ms per plan", {"plan_ms": None}),
    ("fit_s", "model fit", "s per fit", {"fit_s": None}),
    ("imitation", "imitation", "MSE", {"imitation_loss": "imitation loss",
                                       "policy_expert_mse": "policy vs expert"}),
    ("kl", "policy step", "KL", {"kl": None}),
    ("entropy", "policy entropy", "entropy", {"entropy": None}),
    ("value_loss", "value function", "value loss", {"value_loss": None}),
)
_LINE_STYLES = ("-", "--", ":")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _run_series(d):
    """(label, {field: [(env steps, value)]}, random phase point or None) of the run in `d`,
    read and checked before anything is drawn."""
    cfg = read_run_config(d)
    fields = [f for _, _, _, lines in PANELS for f in lines]
    series: dict[str, list] = {f: [] for f in fields}
    for r in read_metrics(d):
        if not isinstance(r, dict):
            continue
        for f in fields:
            value = r.get(f)
            if value is None:
                continue  # e.g. an iteration without a whole episode
            if not (_is_number(r.get("env_steps")) and _is_number(value)):
                raise FormatError(f"{Path(d) / 'metrics.jsonl'} has a row without numbers for "
                                  f"env_steps and {f}")
            series[f].append((r["env_steps"], value))
    start = None
    if cfg.get("algo") == "mbrl":
        phase = read_random_phase(d)
        if phase is not None and phase["mean_return"] is not None:
            start = (phase["env_steps"], phase["mean_return"])
    if not any(series.values()) and start is None:
        raise FastMBRLError(f"{d} has no finished iteration to plot yet")
    label = f"{cfg.get('task')} {cfg.get('planner', cfg.get('algo'))} seed {cfg.get('seed')}"
    return label, series, start


def _is_worldmodels(d) -> bool:
    return read_run_config(d).get("algo") == "worldmodels"


#: a World Models run's panels: (stage, x field, title, y label, {field: line label})
WM_PANELS = (
    ("vae", "epoch", "V (convolutional VAE)", "loss per frame",
     {"vae_loss": "loss", "r_loss": "reconstruction", "kl_loss": "KL (floored)"}),
    ("mdnrnn", "epoch", "M (MDN-RNN)", "loss per step",
     {"rnn_loss": "loss", "nll": "z NLL", "reward_loss": "reward", "done_loss": "done"}),
    ("controller", "generation", "C (CMA-ES)", "return",
     {"fitness_mean": "population mean", "fitness_best": "population best",
      "mean_return": "C's mean, real episodes"}),
)


def worldmodels_figure(run_dir, title: str | None = None) -> Figure:
    """A World Models run's stages: one panel per trained model (see WM_PANELS)."""
    cfg = read_run_config(run_dir)
    rows = [r for r in read_metrics(run_dir) if isinstance(r, dict)]
    require("matplotlib", "plot", "fastmbrl plot")
    from matplotlib.figure import Figure

    panels = [p for p in WM_PANELS if any(r.get("stage") == p[0] for r in rows)]
    if not panels:
        raise FastMBRLError(f"{run_dir} has no trained model to plot yet (its stage: collect)")
    fig = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (stage, x, name, ylabel, lines) in zip(axes, panels):
        ax.set_gid(stage)
        drawn = False
        for style, (field, label) in zip(("-", "--", ":", "-."), lines.items()):
            points = [(r[x], r[field]) for r in rows if r.get("stage") == stage
                      and _is_number(r.get(x)) and _is_number(r.get(field))]
            if points:
                ax.plot(*zip(*points), style, marker="o", markersize=3, label=label)
                drawn = True
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small")
        else:  # placed in the run directory before it started and kept (no losses of its own)
            ax.text(0.5, 0.5, "given, not trained in this run", ha="center", va="center",
                    transform=ax.transAxes, gid="given")
    fitness = f", C trained in the {cfg.get('train_in')}" if cfg.get("train_in") else ""
    fig.suptitle(title if title is not None else
                 f"fastmbrl: {cfg.get('task')} World Models seed {cfg.get('seed')}{fitness}")
    return fig


def world_model_figure(run_dir, frames: int = 8, stride: int = 4) -> Figure:
    """Frames of a World Models run's first stored episode every `stride` steps, V's
    reconstructions below them, and M's dream of the same steps decoded by V."""
    from fastmbrl.algorithms.worldmodels import world_model_strip

    strip = world_model_strip(run_dir, frames, stride)
    require("matplotlib", "plot", "fastmbrl plot")
    from matplotlib.figure import Figure

    names = (("real", "real"), ("recon", "V"), ("dream", "M's dream"))
    n = len(strip["steps"])
    fig = Figure(figsize=(1.3 * n + 1.2, 4.4), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    for i, (key, label) in enumerate(names):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(strip[key][j])
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize="small")
            if i == 0:
                ax.set_title(f"step {int(strip['steps'][j])}", fontsize="small")
    fig.suptitle(f"{read_run_config(run_dir).get('task')}: frames, reconstructions and a "
                 "dream from the first frame under the episode's actions")
    return fig


def learning_figure(run_dirs, title: str | None = None) -> Figure:
    """The metrics of the runs in `run_dirs` against environment steps: one panel per metric
    recorded (see PANELS; each axes' gid is its panel id), one colour per run, the random
    phase as the first point of an MBRL run's return curve. `title` heads the figure."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if any(_is_worldmodels(d) for d in run_dirs):
        if len(run_dirs) != 1:
            raise FastMBRLError("a World Models run is plotted on its own (its panels are its "
                                "stages, not environment steps)")
        return worldmodels_figure(run_dirs[0], title)
    runs = [_run_series(d) for d in run_dirs]
    require("matplotlib", "plot", "fastmbrl plot")
    from matplotlib.figure import Figure

    panels = [p for p in PANELS
              if any(series[f] for _, series, _ in runs for f in p[3])
              or (p[0] == "return" and any(start for _, _, start in runs))]
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.4 * ncols, 1.0 + 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.remove()
    for ax, (gid, name, ylabel, lines) in zip(axes, panels):
        ax.set_gid(gid)
        values = []
        for i, (label, series, start) in enumerate(runs):
            color = f"C{i % 10}"
            for style, (field, line_label) in zip(_LINE_STYLES, lines.items()):
                points = list(series[field])
                if field == "mean_return" and start is not None:
                    points.insert(0, start)
                if not points:
                    continue
                xs, ys = zip(*points)
                values += ys
                text = label if line_label is None else (
                    line_label if len(runs) == 1 else f"{label}, {line_label}")
                ax.plot(xs, ys, style, marker="o", markersize=3.5, color=color, label=text)
                if field == "mean_return" and start is not None:
                    ax.plot(*start, marker="s", markersize=8, markerfacecolor="none",
                            color=color, linestyle="none",
                            label="random actions (iteration 0)" if i == 0 else None)
        if len(lines) > 1 and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if gid == "return" or len(lines) > 1:
            ax.legend(fontsize="small")
    fig.suptitle(title if title is not None else (
        f"fastmbrl: {runs[0][0]}" if len(runs) == 1 else "fastmbrl learning curves"))
    return fig


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


def _save(fig, path: Path) -> Path:
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return path.resolve()


def plot_runs(run_dirs, path, title: str | None = None) -> Path:
    """`learning_figure(run_dirs, title)` written to exactly `path` (a .png); returns its
    absolute path."""
    return _save(learning_figure(run_dirs, title), output_path(path))


def world_model_path(path) -> Path:
    """Where the frames of a World Models run go beside its curves at `path`."""
    path = Path(path)
    return path.with_name(f"{path.stem}-world-model.png")


def add_arguments(p):
    p.add_argument("run_dirs", metavar="DIR", nargs="+", help="run directories")
    p.add_argument("-o", "--output", help="PNG path (default: DIR/learning_curve.png; a World "
                                          "Models run's frames go to DIR/world_model.png, or "
                                          "beside -o as NAME-world-model.png)")
    p.add_argument("--title", default=None,
                   help="the figure's title (default: the run, or 'fastmbrl learning curves')")


def run(args) -> int:
    out = args.output or str(Path(args.run_dirs[0]) / "learning_curve.png")
    print(f"wrote {plot_runs(args.run_dirs, out, args.title)}")
    d = args.run_dirs[0]
    if len(args.run_dirs) == 1 and _is_worldmodels(d):
        frames = Path(d) / "world_model.png" if args.output is None else world_model_path(out)
        print(f"wrote {_save(world_model_figure(d), output_path(frames))}")
    return 0
