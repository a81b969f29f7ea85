"""The one place that knows the machine: the register tile the kernels are built for.

A spec says how wide a vector register is (float32 lanes), how many output rows and vector
registers one register tile of a dense layer keeps in accumulators, and how many rows a parallel
chunk of the rollout holds. The tile must fit the register file: rows x vectors accumulators
plus the weight vectors and one broadcast (see ``dense.py``).

The spec is chosen once, on first use, from ``FASTMBRL_ISA`` if set, else from the CPU numba
compiles for: ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when set (compiling for another CPU),
otherwise the host's features as LLVM reports them. Every kernel that depends on the width is
built per spec, and its on-disk cache entry is keyed by ``Spec.key``.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from ..errors import FastMBRLError

ENV_VAR = "FASTMBRL_ISA"


class IsaError(FastMBRLError, ValueError):
    """FASTMBRL_ISA names no known spec."""


@dataclass(frozen=True)
class Spec:
    name: str
    lanes: int  # float32 lanes of one vector register: panel width and padding unit
    tile_rows: int  # output rows of one register tile
    tile_vectors: int  # vector registers per tile row (at most 3)
    chunk_rows: int  # default rows per parallel chunk of the rollout, a multiple of tile_rows
    fma: bool  # the ISA has fused multiply-add (else LLVM may split fmuladd into mul + add)

    def __post_init__(self):
        if not (self.lanes in (4, 8, 16) and 1 <= self.tile_vectors <= 3 and self.tile_rows >= 1
                and self.chunk_rows % self.tile_rows == 0):
            raise ValueError(f"inconsistent ISA spec {self}")

    @property
    def key(self) -> str:
        """Identity of the generated code: names cached kernels, so that a changed spec is
        compiled anew rather than read from a stale cache entry."""
        return (f"{self.name}_l{self.lanes}r{self.tile_rows}v{self.tile_vectors}"
                f"c{self.chunk_rows}{'f' if self.fma else 'm'}")


SPECS = {
    # 8 rows x 3 zmm = 24 accumulators + 3 weight vectors + 1 broadcast of 32 registers
    "avx512": Spec("avx512", 16, 8, 3, 32, True),
    # BLIS's Haswell 6x16: 6 rows x 2 ymm = 12 accumulators + 2 weights + 1 broadcast of 16
    "avx2": Spec("avx2", 8, 6, 2, 24, True),
    # BLIS's ARMv8 8x12: 8 rows x 3 q registers = 24 accumulators of 32
    "neon": Spec("neon", 4, 8, 3, 32, True),
    # SSE2 baseline: 16 xmm, separate multiply and add need a temporary per product
    "generic": Spec("generic", 4, 4, 2, 16, False),
}

# CPU names (LLVM's) by the widest spec they support, for NUMBA_CPU_NAME without features
_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake",
                "tigerlake", "rocketlake", "sapphirerapids", "graniterapids", "emeraldrapids",
                "znver4", "znver5", "knl", "knm", "x86-64-v4")
_AVX2_CPUS = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
              "arrowlake", "lunarlake", "gracemont", "znver1", "znver2", "znver3",
              "x86-64-v3", "bdver4")


def _from_features(features: dict, arm: bool) -> str:
    if arm or features.get("neon"):
        return "neon"
    if features.get("avx512f"):
        return "avx512"
    if features.get("avx2") and features.get("fma"):
        return "avx2"
    return "generic"


def _from_cpu_name(cpu: str) -> str:
    cpu = cpu.lower()
    if cpu.startswith(_AVX512_CPUS):
        return "avx512"
    if cpu.startswith(_AVX2_CPUS):
        return "avx2"
    if cpu.startswith(("apple-", "cortex-a", "neoverse", "ampere", "thunderx", "a64fx",
                       "generic-arm", "carmel", "kryo", "exynos", "falkor", "saphira", "tsv110")):
        return "neon"
    return "generic"


def target_cpu() -> str:
    """The CPU numba generates code for (NUMBA_CPU_NAME if set, else the host's)."""
    import numba

    name = numba.config.CPU_NAME
    return name if name and name != "host" else host_cpu()


def host_cpu() -> str:
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name()


def detect() -> Spec:
    """The spec for the CPU numba compiles for (ignores FASTMBRL_ISA)."""
    import numba

    arm = platform.machine().lower() in ("arm64", "aarch64")
    feature_str = numba.config.CPU_FEATURES
    if feature_str:
        flags = {f[1:]: f[0] == "+" for f in feature_str.split(",") if f[:1] in "+-"}
        return SPECS[_from_features(flags, arm)]
    name = numba.config.CPU_NAME
    if name and name != "host":
        return SPECS[_from_cpu_name(name)]
    import llvmlite.binding as llvm

    return SPECS[_from_features(dict(llvm.get_host_cpu_features()), arm)]


def get_spec(name: str | Spec | None = None) -> Spec:
    """A spec by name; None gives the current one."""
    if name is None:
        return current()
    if isinstance(name, Spec):
        return name
    spec = SPECS.get(name)
    if spec is None:
        raise IsaError(f"unknown instruction-set spec {name!r}; choose one of "
                       f"{', '.join(SPECS)}")
    return spec


_CURRENT: Spec | None = None


def current() -> Spec:
    """The spec every kernel uses unless given another: FASTMBRL_ISA, else `detect()`."""
    global _CURRENT
    if _CURRENT is None:
        chosen = os.environ.get(ENV_VAR, "").strip()
        if chosen:
            if chosen not in SPECS:
                raise IsaError(f"{ENV_VAR}={chosen!r} is not a known instruction-set spec; "
                               f"choose one of {', '.join(SPECS)} or unset it")
            _CURRENT = SPECS[chosen]
        else:
            _CURRENT = detect()
    return _CURRENT


def describe() -> dict:
    """Facts for reports: spec name and key, CPU, whether the spec was forced."""
    spec = current()
    return {"isa": spec.name, "isa_key": spec.key, "cpu": target_cpu(),
            "isa_forced": bool(os.environ.get(ENV_VAR, "").strip()),
            "host_cpu": host_cpu()}
