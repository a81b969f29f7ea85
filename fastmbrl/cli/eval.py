"""`fastmbrl eval DIR`: run a saved controller on fresh episodes of its task."""
from __future__ import annotations

import json

from fastmbrl.algorithms.evaluate import evaluate
from fastmbrl.cli.train import add_import_argument, import_modules


def add_arguments(p):
    p.add_argument("run_dir", metavar="DIR", help="run directory (or its model.npz)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--video", metavar="VIDEODIR",
                   help="record each episode into VIDEODIR/eval-episode-N.mp4 (needs .[video])")
    add_import_argument(p)


def run(args) -> int:
    import_modules(args)
    result = evaluate(args.run_dir, args.episodes, args.seed,
                      log=None if args.json else (lambda m: print(m, flush=True)),
                      video=args.video)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']}: mean return {result['mean_return']:.2f} over "
              f"{args.episodes} episodes (std {result['std_return']:.2f}; "
              f"{result['ms_per_act']:.2f} ms per action)")
        if args.video is not None:
            print(f"videos: {', '.join(result['videos'])}")
    return 0
