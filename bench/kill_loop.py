"""Kill -9 a short `fastmbrl train` run again and again, resume it each time, and compare the
finished run with an uninterrupted one (metrics without timings, model, buffer).

Half of the kills land at a random moment, half 0-15 ms after an iteration's log line, the
window in which the iteration is being committed. Prints one line per trial and a summary.

    python bench/kill_loop.py --trials 15 --kills-per-trial 3 --out /tmp/kill-loop
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = ["Pendulum-v1", "--planner", "rs", "--steps", "2000", "--random-steps", "200",
            "--steps-per-iteration", "200", "--horizon", "8", "--num-samples", "64",
            "--epochs", "3", "--seed", "7"]
TIMINGS = {"fit_s", "plan_ms", "acting_s", "wall_s"}


def _cmd(out: Path, resume: bool):
    base = [sys.executable, "-c", "import sys; from fastmbrl.cli import main; sys.exit(main())"]
    return base + (["train", "--resume", str(out)] if resume else
                   ["train", *SETTINGS, "--out", str(out)])


def _finished(out: Path):
    rows = [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (out / "metrics.jsonl").read_text().splitlines()]
    with np.load(out / "model.npz") as m, np.load(out / "buffer.npz") as b:
        model = {k: m[k].tobytes() for k in m.files if k != "__header__"}
        buf = {k: b[k].tobytes() for k in b.files if k != "__header__"}
    return rows, model, buf


def _run_killed(out: Path, resume: bool, targeted: bool, rng) -> bool:
    """Start the run (or its resume) and kill -9 it; True if it was killed before finishing."""
    proc = subprocess.Popen(_cmd(out, resume), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    if targeted:
        wanted = rng.randint(1, 3)
        seen = 0
        for line in proc.stdout:
            if line.startswith("iteration ") and " steps, return " in line:
                seen += 1
                if seen == wanted:
                    time.sleep(rng.uniform(0, 0.015))
                    break
    else:
        time.sleep(rng.uniform(0.5, 5.0))
    if proc.poll() is not None:
        proc.stdout.read()
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--kills-per-trial", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("kill-loop"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    ref = args.out / "reference"
    subprocess.run(_cmd(ref, False), check=True, capture_output=True)
    expected = _finished(ref)
    kills = identical = 0
    for t in range(args.trials):
        out = args.out / f"trial{t}"
        resume, k = False, 0
        while k < args.kills_per_trial:
            if not _run_killed(out, resume and (out / "config.json").exists(), k % 2 == 1, rng):
                break
            k += 1
            resume = True
        kills += k
        if (out / "config.json").exists():
            done = subprocess.run(_cmd(out, True), capture_output=True, text=True)
        else:
            done = subprocess.run(_cmd(out, False), capture_output=True, text=True)
        same = done.returncode == 0 and _finished(out) == expected
        identical += same
        leftovers = [p.name for p in out.iterdir() if p.name.startswith(".stage-")
                     or p.name.endswith(".tmp")]
        print(f"trial {t}: {k} kills, resumed run {'identical' if same else 'DIFFERENT'}"
              + (f", leftovers {leftovers}" if leftovers else "")
              + ("" if done.returncode == 0 else f", exit {done.returncode}: "
                 f"{done.stderr.strip().splitlines()[-1:]}"), flush=True)
    print(f"{kills} kills over {args.trials} trials; {identical}/{args.trials} finished runs "
          "identical to the uninterrupted one")
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
