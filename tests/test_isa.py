"""The instruction-set spec: chosen from FASTMBRL_ISA or the CPU numba compiles for, reported
by `fastmbrl info`, refused in one line when unknown."""
import json
import os
import subprocess
import sys

import pytest

from fastmbrl.kernels import isa


def _info(**env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("FASTMBRL_ISA", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "fastmbrl", "info", "--json"], env=full,
                          capture_output=True, text=True)


@pytest.mark.parametrize("env,expected", [
    ({"FASTMBRL_ISA": "neon"}, "neon"),
    ({"FASTMBRL_ISA": "generic", "NUMBA_CPU_NAME": "znver4"}, "generic"),  # the override wins
    ({"NUMBA_CPU_NAME": "haswell"}, "avx2"),
    ({"NUMBA_CPU_NAME": "znver1"}, "avx2"),
    ({"NUMBA_CPU_NAME": "skylake-avx512"}, "avx512"),
    ({"NUMBA_CPU_NAME": "x86-64"}, "generic"),
    ({"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": "+avx2,+fma,-avx512f"}, "avx2"),
])
def test_spec_follows_the_override_or_the_target_cpu(env, expected):
    proc = _info(**env)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["isa"] == expected
    assert facts["lanes"] == isa.SPECS[expected].lanes
    assert facts["isa_forced"] == ("FASTMBRL_ISA" in env)
    if "NUMBA_CPU_NAME" in env:
        assert facts["cpu"] == env["NUMBA_CPU_NAME"]


def test_unknown_spec_is_a_one_line_error():
    proc = _info(FASTMBRL_ISA="sse9")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "FASTMBRL_ISA='sse9'" in lines[0] and "avx2" in lines[0]
    with pytest.raises(isa.IsaError, match="unknown instruction-set spec 'sse9'"):
        isa.get_spec("sse9")


def test_specs_fit_their_register_files():
    """Accumulators + weight vectors + one broadcast fit the ISA's vector registers."""
    registers = {"avx512": 32, "avx2": 16, "neon": 32, "generic": 16}
    for name, spec in isa.SPECS.items():
        needed = spec.tile_rows * spec.tile_vectors + spec.tile_vectors + 1
        if not spec.fma:
            needed += spec.tile_vectors  # products before the add
        assert needed <= registers[name], name
        assert spec.chunk_rows % spec.tile_rows == 0
    assert len({s.key for s in isa.SPECS.values()}) == len(isa.SPECS)


def test_version_names_the_spec_and_cpu():
    proc = subprocess.run([sys.executable, "-m", "fastmbrl", "--version"], capture_output=True,
                          text=True, env=dict(os.environ, FASTMBRL_ISA="avx2"))
    assert proc.returncode == 0 and "avx2 kernels" in proc.stdout and "CPU" in proc.stdout
