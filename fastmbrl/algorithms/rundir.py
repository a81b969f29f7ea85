"""Run directories, shared by every training algorithm.

config.json  {"fastmbrl_version", "run_format", "config": {"algo": ..., ...}}
metrics.jsonl one JSON object per finished iteration (at least iteration, env_steps, mean_return)
state.json   written last after each iteration: the commit point a resume starts from
"""
from __future__ import annotations

import json
from pathlib import Path

from fastmbrl import __version__
from fastmbrl.errors import FastMBRLError, FormatError
from fastmbrl.io import read_json, write_json

RUN_FORMAT = 1
ALGOS = ("mbrl", "trpo", "mbmf")


def write_run_config(out, config: dict) -> None:
    """Start a run directory; refuses one that already holds a run."""
    out = Path(out)
    if (out / "config.json").exists():
        raise FastMBRLError(f"{out} already holds a run: use --resume {out} or another --out")
    if config.get("algo") not in ALGOS:
        raise ValueError(f"config algo must be one of {ALGOS}, got {config.get('algo')!r}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json",
               {"fastmbrl_version": __version__, "run_format": RUN_FORMAT, "config": config})


def read_run_config(out, algo=None) -> dict:
    """The "config" entry of `out`'s config.json, checked for format (and algorithm if given)."""
    meta = read_json(Path(out) / "config.json",
                     f"{out} is not a fastmbrl run directory (no config.json)")
    if meta.get("run_format") != RUN_FORMAT:
        raise FormatError(
            f"{out} was written by fastmbrl {meta.get('fastmbrl_version', '?')} with run format "
            f"{meta.get('run_format')}; this fastmbrl {__version__} reads format {RUN_FORMAT}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise FormatError(f"{out}/config.json has no config entry")
    found = config.get("algo")
    if found not in ALGOS or (algo is not None and found != algo):
        raise FormatError(f"{out} is not a {algo or 'fastmbrl'} run (its algo is {found!r})")
    return config


def append_metrics(out, row: dict) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def read_metrics(out) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is corrupt: {exc}") from exc


def finished_metrics(out, iteration: int) -> list[dict]:
    """Rows up to `iteration`, dropping (and deleting from disk) any written just before an
    interruption that state.json does not cover."""
    rows = read_metrics(out)
    kept = [r for r in rows if r["iteration"] <= iteration]
    if len(kept) != len(rows):
        with open(Path(out) / "metrics.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in kept)
    return kept
