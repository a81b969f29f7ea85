"""`fastmbrl info`: what this installation runs on (version, instruction-set spec, CPU, numba)."""
from __future__ import annotations

import json
import sys

import numba
import numpy as np

from fastmbrl import __version__
from fastmbrl.kernels import isa


def facts() -> dict:
    spec = isa.current()
    return {"fastmbrl": __version__, **isa.describe(), "lanes": spec.lanes,
            "tile": f"{spec.tile_rows}x{spec.tile_vectors}", "chunk_rows": spec.chunk_rows,
            "numba": numba.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "numba_threads": numba.get_num_threads(),
            "numba_cache_dir": numba.config.CACHE_DIR or "(next to the package's sources)"}


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="one JSON object")


def run(args) -> int:
    f = facts()
    if args.json:
        print(json.dumps(f))
        return 0
    forced = f" (forced by {isa.ENV_VAR})" if f["isa_forced"] else ""
    cpu = f["cpu"] if f["cpu"] == f["host_cpu"] else f"{f['cpu']} (host {f['host_cpu']})"
    print(f"fastmbrl {f['fastmbrl']}\n"
          f"instruction-set spec: {f['isa']}{forced}: {f['lanes']} float32 lanes, "
          f"{f['tile']} register tile, {f['chunk_rows']}-row chunks\n"
          f"CPU: {cpu}\n"
          f"numba {f['numba']} ({f['numba_threads']} threads), NumPy {f['numpy']}, "
          f"Python {f['python']}\n"
          f"numba cache: {f['numba_cache_dir']}")
    return 0
