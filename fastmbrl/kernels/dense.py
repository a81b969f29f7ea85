"""Register-blocked dense layers for the rollout kernel, built per instruction-set spec.

A layer computes ``dst[r, :] = bias + src[r, :fan_in] @ W`` for a block of rows. The weights are
pre-laid-out as column *panels* of ``spec.lanes`` outputs (one vector register of float32):
panel ``v`` is a contiguous ``(fan_in, lanes)`` block, so each step of the inner loop loads whole
registers of weights. The tile routine keeps a ``tile_rows`` x (lanes * NV)-column block of
outputs in registers for the whole reduction over ``fan_in``: per input unit it loads NV weight
vectors and ``tile_rows`` scalars (broadcast) and issues tile_rows * NV fused multiply-adds, so it
runs at the FMA units' speed, not at the memory's. The tile must fit the register file, which is
why its shape follows the ISA (``isa.py``): a tile sized for 32 zmm registers spills on every
multiply-add where there are 16 ymm.

LLVM's loop vectoriser cannot do this itself (it only vectorises innermost loops, and the stores to
several output rows need more runtime alias checks than it allows), so the tile is written directly
in LLVM IR through a numba intrinsic. Vectors of any width are legal IR on every target (LLVM
splits or widens them), so every spec compiles and runs correctly on any machine; only its speed
depends on the machine.
"""
from __future__ import annotations

import os
import types as pytypes

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import FASTMATH, source_digest
from .isa import Spec, get_spec

RELU, TANH, SILU = 0, 1, 2
ACTIVATIONS = {"relu": RELU, "tanh": TANH, "silu": SILU, "swish": SILU}

_F32 = ir.FloatType()


def _make_tile(spec: Spec, nv: int):
    """Intrinsic for one tile_rows x (nv * lanes) output tile (offsets are in float32 elements).

    tile(dst, dst_off, dst_ld, src, src_off, src_rs, src_ks, w, w_off, w_ps, w_ks, bias,
         bias_off, k):
    dst[dst_off + r dst_ld + n lanes + j] = bias[bias_off + n lanes + j]
        + sum_i src[src_off + r src_rs + i src_ks] * w[w_off + n w_ps + i w_ks + j]
    for the tile's rows r, vectors n < nv and lanes j, i < k (k >= 1). The rollout passes
    src_ks = 1 and w_ks = lanes (contiguous panels); training also multiplies by transposes.
    """
    lanes, n_rows = spec.lanes, spec.tile_rows
    vec = ir.VectorType(_F32, lanes)
    splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    # fmuladd lets LLVM fuse where the target has FMA and split it where it has not; llvm.fma
    # would become a libm call per element there
    fma_name = f"llvm.{'fma' if spec.fma else 'fmuladd'}.v{lanes}f32"

    @intrinsic
    def tile(typingctx, dst, dst_off, dst_ld, src, src_off, src_rs, src_ks, w, w_off, w_ps, w_ks,
             bias, bias_off, k):
        sig = types.void(dst, dst_off, dst_ld, src, src_off, src_rs, src_ks, w, w_off, w_ps, w_ks,
                         bias, bias_off, k)

        def codegen(context, builder, signature, args):
            tys = signature.args
            intp = context.get_value_type(types.intp)

            def const(v):
                return ir.Constant(intp, v)

            def integer(i):
                return context.cast(builder, args[i], tys[i], types.intp)

            def pointer(i, off_index):
                data = context.make_array(tys[i])(context, builder, args[i]).data
                return builder.gep(data, [integer(off_index)])

            def vec_ptr(base, offset):
                return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

            d, s = pointer(0, 1), pointer(3, 4)
            wp, b = pointer(7, 8), pointer(11, 12)
            dst_ld, src_rs, src_ks = integer(2), integer(5), integer(6)
            w_ps, w_ks, n_in = integer(9), integer(10), integer(13)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), fma_name)

            init = [builder.load(vec_ptr(b, const(lanes * n)), align=4) for n in range(nv)]
            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            i = builder.phi(intp)
            acc = [[builder.phi(vec) for _ in range(nv)] for _ in range(n_rows)]
            i_w = builder.mul(i, w_ks)
            i_s = builder.mul(i, src_ks)
            wv = [builder.load(vec_ptr(wp, builder.add(i_w, builder.mul(w_ps, const(n)))),
                               align=4) for n in range(nv)]
            new = []
            for r in range(n_rows):
                x = builder.load(builder.gep(s, [builder.add(i_s, builder.mul(src_rs, const(r)))]))
                xb = builder.insert_element(ir.Constant(vec, ir.Undefined), x,
                                            ir.Constant(ir.IntType(32), 0))
                xb = builder.shuffle_vector(xb, ir.Constant(vec, ir.Undefined), splat)
                new.append([builder.call(fma, [xb, wv[n], acc[r][n]]) for n in range(nv)])
            i_next = builder.add(i, const(1))
            tail = builder.block
            builder.cbranch(builder.icmp_signed("<", i_next, n_in), loop, done)
            i.add_incoming(const(0), entry)
            i.add_incoming(i_next, tail)
            for r in range(n_rows):
                for n in range(nv):
                    acc[r][n].add_incoming(init[n], entry)
                    acc[r][n].add_incoming(new[r][n], tail)
            builder.position_at_end(done)
            for r in range(n_rows):
                row = builder.mul(dst_ld, const(r))
                for n in range(nv):
                    builder.store(new[r][n], vec_ptr(d, builder.add(row, const(lanes * n))),
                                  align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def group_width(left, max_nv):
    """Vectors in the next tile along a row of panels with `left` panels to go: as many as the
    tile holds, except that 3 + 1 becomes 2 + 2 (a lone vector would waste a tile)."""
    if max_nv == 3:
        return 2 if (left == 2 or left == 4) else (1 if left == 1 else 3)
    if max_nv == 2:
        return 1 if left == 1 else 2
    return 1


_group_width = njit(inline="always")(group_width)


def panel_groups(n_panels: int, spec: Spec) -> list:
    """(first panel, vectors) of the tiles that cover `n_panels` panels, cut as the kernels cut."""
    out, v = [], 0
    while v < n_panels:
        nv = group_width(n_panels - v, spec.tile_vectors)
        out.append((v, nv))
        v += nv
    return out


def _tile_n(dst, do, dst_ld, src, so, src_rs, src_ks, w, wo, w_ps, w_ks, bias, bo, k, nv):
    """The tile of `nv` vectors (1 to MAX_NV); bound as `tile` in specialised templates."""
    if nv == 3:
        _tile3(dst, do, dst_ld, src, so, src_rs, src_ks, w, wo, w_ps, w_ks, bias, bo, k)
    elif nv == 2:
        _tile2(dst, do, dst_ld, src, so, src_rs, src_ks, w, wo, w_ps, w_ks, bias, bo, k)
    else:
        _tile1(dst, do, dst_ld, src, so, src_rs, src_ks, w, wo, w_ps, w_ks, bias, bo, k)


def specialise(template, spec: Spec, name: str, parallel: bool = False, **scope):
    """`template` compiled for `spec`: its globals bind the spec's constants (LANES, TILE_ROWS,
    MAX_NV), `tile(..., nv)` (the spec's tile of any width) and `scope`; cached on disk under a
    name that carries `name`, the spec's key and the kernel sources' digest."""
    tiles = [_make_tile(spec, nv) for nv in range(1, spec.tile_vectors + 1)]
    tiles += [tiles[-1]] * (3 - len(tiles))  # never called: MAX_NV folds those branches away
    consts = dict(LANES=spec.lanes, TILE_ROWS=spec.tile_rows, MAX_NV=spec.tile_vectors,
                  _tile1=tiles[0], _tile2=tiles[1], _tile3=tiles[2])
    tile = pytypes.FunctionType(_tile_n.__code__, dict(globals(), **consts), "_tile_n")
    env = dict(template.__globals__, **consts, tile=njit(inline="always")(tile), **scope)
    f = pytypes.FunctionType(template.__code__, env, template.__name__)
    # numba names cache files after the qualname
    source = os.path.basename(template.__code__.co_filename)
    f.__qualname__ = f"{name}__{spec.key}__{source_digest(source)}"
    opts = dict(parallel=True, nogil=True) if parallel else {}
    return njit(fastmath=FASTMATH, cache=True, error_model="numpy", **opts)(f)


def _dense(dst, dst_ld, src, src_off, src_ld, rows, w, w_off, w_stride, fan_in, bias, bias_off,
           n_panels):
    """dst[r, :LANES*n_panels] = bias + src[r, src_off:src_off+fan_in] @ W for r < rows (a
    multiple of TILE_ROWS).

    `w_off` points at panel 0 of W, `w_stride` is the distance between panels, `fan_in` >= 1.
    Template: `dense_kernel(spec)` compiles a copy for a spec.
    """
    v = 0
    while v < n_panels:
        nv = _group_width(n_panels - v, MAX_NV)
        wo = w_off + v * w_stride
        bo = bias_off + LANES * v
        for r0 in range(0, rows, TILE_ROWS):
            tile(dst, r0 * dst_ld + LANES * v, dst_ld, src, r0 * src_ld + src_off, src_ld, 1,
                 w, wo, w_stride, LANES, bias, bo, fan_in, nv)
        v += nv


def pack_panels(w, b, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """A layer's W (fan_in, fan_out) and b (fan_out,) as `dense` reads them: W as column panels
    of `lanes` outputs (panel v the contiguous (fan_in, lanes) block of columns v lanes onward,
    flat) and b, both float32 and zero-padded to whole panels."""
    fan_in, fan_out = np.shape(w)
    panels = -(-fan_out // lanes)
    padded = np.zeros((fan_in, panels * lanes), np.float32)
    padded[:, :fan_out] = w
    bias = np.zeros(panels * lanes, np.float32)
    bias[:fan_out] = b
    return padded.reshape(fan_in, panels, lanes).transpose(1, 0, 2).ravel(), bias


_DENSE: dict = {}


def dense_kernel(spec=None):
    """The compiled dense layer of `spec` (default: the current one), cached per spec key."""
    spec = get_spec(spec)
    fn = _DENSE.get(spec.key)
    if fn is None:
        fn = _DENSE[spec.key] = specialise(_dense, spec, "dense")
    return fn


# tanh(x) ~= x P(x^2) / Q(x^2) on [-9, 9] (|error| < 4e-7 in float32), clamped outside where
# float32 tanh is +-1. Coefficients fitted for this project by weighted least squares; unlike
# libm's tanhf this has no calls or branches, so LLVM vectorises it.
_P0, _P1, _P2, _P3, _P4 = (np.float32(0.999999983), np.float32(1.33924257e-01),
                           np.float32(3.50912596e-03), np.float32(2.08318087e-05),
                           np.float32(1.36632128e-08))
_Q1, _Q2, _Q3, _Q4 = (np.float32(4.67257444e-01), np.float32(2.59284892e-02),
                      np.float32(3.30777218e-04), np.float32(7.90285691e-07))
_CLAMP = np.float32(9.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@njit(fastmath=FASTMATH, inline="always", error_model="numpy")
def _tanh(x):
    # written so that NaN passes through (both comparisons are false for NaN)
    if x > _CLAMP:
        x = _CLAMP
    if x < -_CLAMP:
        x = -_CLAMP
    z = x * x
    p = (((_P4 * z + _P3) * z + _P2) * z + _P1) * z + _P0
    q = (((_Q4 * z + _Q3) * z + _Q2) * z + _Q1) * z + _ONE
    return x * p / q


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def activate(h, rows, width, code):
    """Apply activation `code` in place to h[:rows, :width]. Zero padding stays zero."""
    for r in range(rows):
        if code == RELU:
            for j in range(width):
                v = h[r, j]
                h[r, j] = _ZERO if v < _ZERO else v  # keeps NaN, like np.maximum
        elif code == TANH:
            for j in range(width):
                h[r, j] = _tanh(h[r, j])
        else:
            for j in range(width):
                v = h[r, j]
                h[r, j] = v * (_HALF + _HALF * _tanh(_HALF * v))  # x * sigmoid(x)
