"""Fused Triton selective scan: forward and backward, real and complex, sequence-parallel.

Layers, top to bottom: ``@triton.jit`` helpers and kernels; host launchers; the autograd
Function; the public :func:`selective_scan_triton`. The math (chunking, the carry pass, the
adjoint) is in README.md, section "The fused Triton kernels".

Shapes use one alphabet: ``B`` batch, ``D`` channels, ``L`` length, ``N`` state, ``G`` groups,
``K`` chunks of one or more tiles of ``T`` positions. A scan program owns one channel of one batch
row and one chunk, which it walks tile by tile, one state index at a time: every per-position
sequence is a ``[T]`` vector in registers (real and imaginary parts as two fp32 vectors for a
complex scan), the ``N`` states carried between tiles a ``[N]`` vector. Only the states entering
every tile ``[B, D, L / T, N]`` are written, and only when a backward will follow.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra import libdevice

from .._triton_env import interpreting

# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


# exp(dt A) as 2^(dt (A log2 e)): A is scaled once per state index, which saves the multiply by
# log2 e that tl.exp spends on every position. Measured on an H100: the forward of the 7M model's
# chunked scan at 2^20, 15.3 -> 13.3 ms per layer; the backward at (8, 1536, 16, 16384) bf16,
# training forward + backward minus forward, 15.3-15.7 -> 14.0-14.2 ms. Not in the backward that
# also writes y (checkpointed blocks, ``WRITE_Y``): there it went 36.7 -> 41.5 ms per layer.
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _decay(dt, A, EXP2: tl.constexpr):
    """exp(dt A) for a ``[T]`` row dt and a scalar A (see LOG2E)."""
    if EXP2:
        e = tl.exp2(dt * (A * LOG2E))
    else:
        e = tl.exp(dt * A)
    return e


# 2 pi in two parts for the reduction of an angle to [-pi, pi]: k * _TWO_PI_HI is exact for
# |k| < 2^16 (8 significant bits), _TWO_PI_LO is the rest.
_TWO_PI_HI: tl.constexpr = tl.constexpr(6.28125)
_TWO_PI_LO: tl.constexpr = tl.constexpr(0.0019353071795864769)
_INV_TWO_PI: tl.constexpr = tl.constexpr(0.15915494309189535)


@triton.jit
def _cos_sin(x, FAST: tl.constexpr):
    """(cos x, sin x). ``FAST``: the angle is reduced to [-pi, pi] (two FMAs against 2 pi in two
    parts), then the hardware approximations ``cos.approx`` / ``sin.approx`` (absolute error
    about 2^-21 there) replace libdevice's accurate functions, which cost several times the
    instructions (the complex bf16 scan at (8, 1536, 16, 4096) on an H100: forward 4.0-4.2 ->
    2.7 ms, backward 9.9-10.1 -> 7.8-8.1 ms). The launchers take it for 16-bit inputs, whose own
    rounding (2^-9) dwarfs that error, and for every forward (see _FAST_MATH); the backward of an
    fp32 scan keeps the accurate functions (with the approximations one dA of the fp32 GPU test
    drifted past its tolerance), and so does the interpreter, which has no such functions."""
    if FAST:
        k = tl.floor(x * _INV_TWO_PI + 0.5)
        r = (x - k * _TWO_PI_HI) - k * _TWO_PI_LO
        c = libdevice.fast_cosf(r)
        s = libdevice.fast_sinf(r)
    else:
        c = tl.cos(x)
        s = tl.sin(x)
    return c, s


@triton.jit
def _softplus(x, FAST: tl.constexpr):
    """torch's softplus (threshold 20) with a log1p that keeps small exp(x) exact: for dt ~ 1e-3
    a plain log(1 + e) loses four digits. ``FAST`` (16-bit inputs, see _cos_sin): log1p(e) is its
    series e - e^2/2 + e^3/3 below 1e-2 (relative error under e^3/4) and the hardware log2 above
    (relative error about 2e-5 at 1e-2), in place of libdevice's log and a division (about 30
    instructions per position)."""
    e = tl.exp(tl.minimum(x, 20.0))
    if FAST:
        series = e * (1.0 - e * (0.5 - e * 0.3333333333333333))
        log1p = tl.where(e < 0.01, series, libdevice.fast_logf(1.0 + e))
    else:
        v = 1.0 + e
        log1p = tl.where(v == 1.0, e, tl.log(v) * e / (v - 1.0))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_pair(ptr, off, mask, IS_COMPLEX: tl.constexpr):
    """fp32 real and imaginary parts at ``off`` and ``off + 1`` (imaginary 0 for a real scan)."""
    re = tl.load(ptr + off, mask=mask, other=0.0).to(tl.float32)
    if IS_COMPLEX:
        im = tl.load(ptr + off + 1, mask=mask, other=0.0).to(tl.float32)
    else:
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _combine_real(a1, b1, a2, b2):
    # (a1, b1) is applied first: h -> a2 * (a1 * h + b1) + b2.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    # Complex version of _combine_real, parts carried as separate fp32 tiles.
    ar = ar2 * ar1 - ai2 * ai1
    ai = ar2 * ai1 + ai2 * ar1
    br = ar2 * br1 - ai2 * bi1 + br2
    bi = ar2 * bi1 + ai2 * br1 + bi2
    return ar, ai, br, bi


@triton.jit
def _state_off(pid_b, offs_d, offs_n, dim, n_chunks, k, dstate, NC: tl.constexpr):
    """Offsets ``[BLOCK_D, BLOCK_N]`` into a contiguous fp32 ``[B, D, K, N, NC]`` buffer."""
    row = ((pid_b * dim + offs_d).to(tl.int64) * n_chunks + k) * (dstate * NC)
    return row[:, None] + (offs_n * NC)[None, :]


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _carry_kernel(
    # pointers
    S_ptr, dtsum_ptr, A_ptr, init_ptr, out_ptr,
    # dims
    dim, n_chunks, dstate,
    # meta
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr, HAS_INIT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
):
    """Pass 2: the carry entering each chunk, out[k] = P_{k-1} out[k-1] + S_{k-1}, out[0] = init,
    with P_k = exp(A T_k). REVERSE runs the adjoint version: out[k] = conj(P_{k+1}) out[k+1] +
    S_{k+1}, out[K-1] = init. ``init`` is ``[B, D, N, NC]``; S and out are ``[B, D, K, N, NC]``.
    ``STAGES``: chunks whose S and T are loaded ahead of the carry (see _CARRY_STAGES)."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask = mask_d[:, None] & (offs_n < dstate)[None, :]
    a_off = offs_d[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
    Ar, Ai = _load_pair(A_ptr, a_off, mask, IS_COMPLEX)
    if REVERSE:
        Ai = -Ai  # the adjoint propagates with conj(P)
    if HAS_INIT:
        i_off = _state_off(pid_b, offs_d, offs_n, dim, 1, 0, dstate, NC)
        cr, ci = _load_pair(init_ptr, i_off, mask, IS_COMPLEX)
    else:
        cr = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        ci = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dts_row = (pid_b * dim + offs_d).to(tl.int64) * n_chunks
    for i in tl.range(0, n_chunks, num_stages=STAGES):
        if REVERSE:
            k = n_chunks - 1 - i
        else:
            k = i
        off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, k, dstate, NC)
        tl.store(out_ptr + off, cr, mask=mask)
        if IS_COMPLEX:
            tl.store(out_ptr + off + 1, ci, mask=mask)
        # chunk k's S and total dt only carry into a later chunk (the last chunk's S is never read:
        # the one-channel-per-thread forward leaves it unwritten)
        carried = i + 1 < n_chunks
        tot = tl.load(dtsum_ptr + dts_row + k, mask=mask_d & carried, other=0.0)
        mag = tl.exp(tot[:, None] * Ar)
        sr = tl.load(S_ptr + off, mask=mask & carried, other=0.0)
        if IS_COMPLEX:
            pr = mag * tl.cos(tot[:, None] * Ai)
            pi = mag * tl.sin(tot[:, None] * Ai)
            si = tl.load(S_ptr + off + 1, mask=mask & carried, other=0.0)
            cr, ci = pr * cr - pi * ci + sr, pr * ci + pi * cr + si
        else:
            cr = mag * cr + sr


@triton.jit
def _dt_row(delta_ptr, off, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
            FAST: tl.constexpr = False):
    """delta (+ bias) (-> softplus) as fp32 ``[BLOCK_T]``, 0 where masked; and the raw value."""
    raw = tl.load(delta_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += bias
    if SOFTPLUS:
        dt = _softplus(raw, FAST)
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw



# --------------------------------------------------------------------------------------------
# Scan kernels: one channel per program, one state index at a time (version 4)
# --------------------------------------------------------------------------------------------
# A program owns ONE channel of one batch row and walks its chunk in tiles of BLOCK_T positions.
# Every per-position sequence (u, delta, z, dout, one row of B or C) is a [BLOCK_T] vector loaded
# straight from memory, so each thread holds several consecutive positions and
# ``tl.associative_scan`` runs sequentially inside a thread, with shuffles only between threads.
# The N state indices are an unrolled loop: sums over N (y, and the delta / u gradients) add up
# inside a thread, and per-position work (softplus, gate) is done once, not once per state index.
# The N states carried from tile to tile live in a [BLOCK_N] vector.


@triton.jit
def _pick(vec, offs, n):
    """Element ``n`` of a small vector, as a scalar."""
    return tl.sum(tl.where(offs == n, vec, 0.0), axis=0)


@triton.jit
def _at(x, loc, pos):
    """The value of the ``[BLOCK_T]`` vector ``x`` at position ``pos`` of the tile, as a scalar."""
    return tl.sum(tl.where(loc == pos, x, 0.0), axis=0)


@triton.jit
def _row(ptr, base, n, s2, s_ri, offs_t, mask_t, row_ok, VAR: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """Row ``n`` of B or C over the tile: ``[BLOCK_T]`` fp32 vectors (variable, planar layout) or
    scalars (constant), real and imaginary part (imaginary 0 for real)."""
    if VAR:
        off = base + n * s2 + offs_t
        m = mask_t & row_ok
        re = tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)
        if IS_COMPLEX:
            im = tl.load(ptr + off + s_ri, mask=m, other=0.0).to(tl.float32)
        else:
            im = re
    else:
        off = base + n * s2
        re = tl.load(ptr + off, mask=row_ok, other=0.0).to(tl.float32)
        if IS_COMPLEX:
            im = tl.load(ptr + off + s_ri, mask=row_ok, other=0.0).to(tl.float32)
        else:
            im = re
    return re, im


@triton.jit
def _bc_rows(B_ptr, C_ptr, b_base, c_base, n, sB2, sBri, sC2, sCri, offs_t, mask_t, row_ok,
             VAR_B: tl.constexpr, VAR_C: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """Row ``n`` of B and of C over the tile (see :func:`_row`): Br, Bi, Cr, Ci."""
    Br, Bi = _row(B_ptr, b_base, n, sB2, sBri, offs_t, mask_t, row_ok, VAR_B, IS_COMPLEX)
    Cr, Ci = _row(C_ptr, c_base, n, sC2, sCri, offs_t, mask_t, row_ok, VAR_C, IS_COMPLEX)
    return Br, Bi, Cr, Ci


# With PREFETCH the rows of B and C for state index n are loaded one iteration of the state loop
# ahead (while index n - 1 is scanned), so their latency overlaps the scan instead of stalling
# it: _bc_rows_first before the loop, _bc_rows_next in it, the rows for n + 1 carried along.


@triton.jit
def _bc_rows_first(B_ptr, C_ptr, b_base, c_base, dstate, sB2, sBri, sC2, sCri, offs_t, mask_t,
                   VAR_B: tl.constexpr, VAR_C: tl.constexpr, IS_COMPLEX: tl.constexpr,
                   PREFETCH: tl.constexpr):
    """The rows of state index 0 to carry into the state loop (placeholders without PREFETCH)."""
    if PREFETCH:
        nBr, nBi, nCr, nCi = _bc_rows(B_ptr, C_ptr, b_base, c_base, 0, sB2, sBri, sC2, sCri, offs_t,
                                      mask_t, 0 < dstate, VAR_B, VAR_C, IS_COMPLEX)
    else:
        nBr = 0.0
        nBi = 0.0
        nCr = 0.0
        nCi = 0.0
    return nBr, nBi, nCr, nCi


@triton.jit
def _bc_rows_next(B_ptr, C_ptr, b_base, c_base, n, dstate, sB2, sBri, sC2, sCri, offs_t, mask_t,
                  nBr, nBi, nCr, nCi, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
                  IS_COMPLEX: tl.constexpr, PREFETCH: tl.constexpr):
    """The rows of state index n (Br, Bi, Cr, Ci) and those to carry to the next iteration."""
    if PREFETCH:
        Br, Bi, Cr, Ci = nBr, nBi, nCr, nCi
        nBr, nBi, nCr, nCi = _bc_rows(B_ptr, C_ptr, b_base, c_base, n + 1, sB2, sBri, sC2, sCri,
                                      offs_t, mask_t, n + 1 < dstate, VAR_B, VAR_C, IS_COMPLEX)
    else:
        Br, Bi, Cr, Ci = _bc_rows(B_ptr, C_ptr, b_base, c_base, n, sB2, sBri, sC2, sCri, offs_t,
                                  mask_t, n < dstate, VAR_B, VAR_C, IS_COMPLEX)
    return Br, Bi, Cr, Ci, nBr, nBi, nCr, nCi


@triton.jit
def _scan1(ar, ai, br, bi, REVERSE: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """h_t = a_t h_{t-1} + b_t along a ``[BLOCK_T]`` vector (h_t = a_t h_{t+1} + b_t when REVERSE)."""
    if IS_COMPLEX:
        _, _, hr, hi = tl.associative_scan((ar, ai, br, bi), 0, _combine_complex, reverse=REVERSE)
    else:
        _, hr = tl.associative_scan((ar, br), 0, _combine_real, reverse=REVERSE)
        hi = hr
    return hr, hi


@triton.jit
def _channel_program(dim, L, dstate, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    """Where a per-channel program of grid (chunks, dim, batch) works: its chunk, channel and batch
    row, the state and tile-position ranges, the state mask, and the channel's row index
    (b * dim + d, int64) and its offset ``row = chan * L`` in [B, D, L] tensors."""
    pid_k = tl.program_id(0)
    d = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_n = tl.arange(0, BLOCK_N)
    loc_t = tl.arange(0, BLOCK_T)
    chan = (pid_b * dim + d).to(tl.int64)
    return pid_k, d, pid_b, offs_n, loc_t, offs_n < dstate, chan, chan * L


@triton.jit
def _scalar(ptr, d, HAS: tl.constexpr):
    """``ptr[d]`` as fp32, or 0 when the argument is absent."""
    v = 0.0
    if HAS:
        v = tl.load(ptr + d).to(tl.float32)
    return v


@triton.jit
def _bc_base(pid_b, d, s0, s1, group, VAR: tl.constexpr):
    """Offset of channel ``d``'s B or C: its batch row and group (variable) or its row (constant)."""
    if VAR:
        base = pid_b.to(tl.int64) * s0 + (d // group).to(tl.int64) * s1
    else:
        base = (d * s1).to(tl.int64)
    return base


@triton.jit
def _state_vec(ptr, row, dstate, offs_n, mask_n, HAS: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """Row ``row`` of a fp32 ``[.., N, NC]`` state buffer as ``[BLOCK_N]`` real and imaginary
    vectors (zeros when absent; the imaginary part is the real one for a real scan)."""
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    if HAS:
        re, im = _load_pair(ptr, row * (dstate * NC) + offs_n * NC, mask_n, IS_COMPLEX)
    else:
        re = tl.zeros(offs_n.shape, dtype=tl.float32)
        im = re
    if not IS_COMPLEX:
        im = re
    return re, im


@triton.jit
def _bc_grad(ptr, base, n, s2, s_ri, offs_t, mask, g_re, g_im, acc_re, acc_im, VAR: tl.constexpr,
             IS_COMPLEX: tl.constexpr):
    """Add the gradient ``g [BLOCK_T]`` of row ``n`` of B or C: one atomic add per position (and
    channel) for a variable B/C; for a constant one, the tile's sum into element n of the
    ``acc [BLOCK_N]`` vectors, which are returned."""
    if VAR:
        off = base + n * s2 + offs_t
        tl.atomic_add(ptr + off, g_re, mask=mask, sem="relaxed")
        if IS_COMPLEX:
            tl.atomic_add(ptr + off + s_ri, g_im, mask=mask, sem="relaxed")
    else:
        sel = tl.arange(0, acc_re.shape[0]) == n
        acc_re = tl.where(sel, acc_re + tl.sum(g_re, axis=0), acc_re)
        if IS_COMPLEX:
            acc_im = tl.where(sel, acc_im + tl.sum(g_im, axis=0), acc_im)
    return acc_re, acc_im


@triton.jit
def _scan1_fwd_kernel(
    # pointers
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, hin_ptr, y_ptr, last_ptr,
    hsave_ptr,
    # dims; z's batch stride beyond dim * L (z may be one half of a [B, 2D, L] tensor)
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c, z_extra,
    # strides of B and C (planar layout, see _prep_bc)
    sB0, sB1, sB2, sBri, sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    WRITE_LAST: tl.constexpr, WRITE_STATES: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, TILES: tl.constexpr, N_UNROLL: tl.constexpr, PREFETCH: tl.constexpr,
    SPLIT: tl.constexpr, FAST_MATH: tl.constexpr,
):
    """Forward scan of one channel over one chunk of ``TILES`` tiles, from the state carried into
    the chunk (``hin[b, d, k]``, or zero): writes y, optionally the state entering every
    backward tile (``hsave [B, D, n_tiles, N]``) and the final state. A backward tile is
    ``BLOCK_T // SPLIT`` positions: with ``SPLIT = 2`` a forward tile also saves the state at its
    middle, so the forward runs on tiles twice the backward's."""
    pid_k, d, pid_b, offs_n, loc_t, mask_n, chan, row = _channel_program(dim, L, dstate, BLOCK_N, BLOCK_T)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    bias = _scalar(bias_ptr, d, HAS_BIAS)
    Dv = _scalar(D_ptr, d, HAS_D)
    b_base = _bc_base(pid_b, d, sB0, sB1, group_b, VAR_B)
    c_base = _bc_base(pid_b, d, sC0, sC1, group_c, VAR_C)
    first = loc_t == 0
    hr_vec, hi_vec = _state_vec(hin_ptr, chan * n_chunks + pid_k, dstate, offs_n, mask_n, HAS_HIN,
                                IS_COMPLEX)

    for j in range(0, TILES):
        tile = pid_k * TILES + j
        offs_t = tile * BLOCK_T + loc_t
        mask_t = offs_t < L
        io = row + offs_t
        if WRITE_STATES:
            t_off = (chan * n_tiles + tile * SPLIT) * (dstate * NC) + offs_n * NC
            t_mask = mask_n & (tile * SPLIT < n_tiles)
            tl.store(hsave_ptr + t_off, hr_vec, mask=t_mask)
            if IS_COMPLEX:
                tl.store(hsave_ptr + t_off + 1, hi_vec, mask=t_mask)
        hm_vec = tl.zeros([BLOCK_N], dtype=tl.float32)  # SPLIT = 2: the state at the middle
        hmi_vec = hm_vec
        u = tl.load(u_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        dt, _ = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = tl.zeros([BLOCK_T], dtype=tl.float32)
        nBr, nBi, nCr, nCi = _bc_rows_first(B_ptr, C_ptr, b_base, c_base, dstate, sB2, sBri, sC2, sCri,
                                            offs_t, mask_t, VAR_B, VAR_C, IS_COMPLEX, PREFETCH)
        for n0 in range(0, dstate, N_UNROLL):
            for k in tl.static_range(N_UNROLL):
                n = n0 + k
                row_ok = n < dstate
                Ar = tl.load(A_ptr + (d * dstate + n) * NC, mask=row_ok, other=0.0)
                Br, Bi, Cr, Ci, nBr, nBi, nCr, nCi = _bc_rows_next(
                    B_ptr, C_ptr, b_base, c_base, n, dstate, sB2, sBri, sC2, sCri, offs_t, mask_t,
                    nBr, nBi, nCr, nCi, VAR_B, VAR_C, IS_COMPLEX, PREFETCH)
                h0r = _pick(hr_vec, offs_n, n)
                if IS_COMPLEX:
                    Ai = tl.load(A_ptr + (d * dstate + n) * NC + 1, mask=row_ok, other=0.0)
                    mag = _decay(dt, Ar, True)
                    cs, sn = _cos_sin(dt * Ai, FAST_MATH)
                    ar = mag * cs
                    ai = mag * sn
                    h0i = _pick(hi_vec, offs_n, n)
                    # The carried-in state enters as an extra input at the tile's first position.
                    xr = dtu * Br + tl.where(first, ar * h0r - ai * h0i, 0.0)
                    xi = dtu * Bi + tl.where(first, ar * h0i + ai * h0r, 0.0)
                    hr, hi = _scan1(ar, ai, xr, xi, False, True)
                    y += 2.0 * (Cr * hr - Ci * hi)
                    # Positions past L keep the state (dt = 0): the last one leaves the tile.
                    hr_vec = tl.where(offs_n == n, _at(hr, loc_t, BLOCK_T - 1), hr_vec)
                    hi_vec = tl.where(offs_n == n, _at(hi, loc_t, BLOCK_T - 1), hi_vec)
                    if WRITE_STATES and SPLIT == 2:
                        hm_vec = tl.where(offs_n == n, _at(hr, loc_t, BLOCK_T // 2 - 1), hm_vec)
                        hmi_vec = tl.where(offs_n == n, _at(hi, loc_t, BLOCK_T // 2 - 1), hmi_vec)
                else:
                    ar = _decay(dt, Ar, True)
                    xr = dtu * Br + tl.where(first, ar * h0r, 0.0)
                    hr, _ = _scan1(ar, ar, xr, xr, False, False)
                    y += Cr * hr
                    hr_vec = tl.where(offs_n == n, _at(hr, loc_t, BLOCK_T - 1), hr_vec)
                    if WRITE_STATES and SPLIT == 2:
                        hm_vec = tl.where(offs_n == n, _at(hr, loc_t, BLOCK_T // 2 - 1), hm_vec)
        if WRITE_STATES and SPLIT == 2:
            m_off = (chan * n_tiles + tile * 2 + 1) * (dstate * NC) + offs_n * NC
            m_mask = mask_n & (tile * 2 + 1 < n_tiles)
            tl.store(hsave_ptr + m_off, hm_vec, mask=m_mask)
            if IS_COMPLEX:
                tl.store(hsave_ptr + m_off + 1, hmi_vec, mask=m_mask)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            z = tl.load(z_ptr + pid_b.to(tl.int64) * z_extra + io, mask=mask_t, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + io, y.to(y_ptr.dtype.element_ty), mask=mask_t)

    if WRITE_LAST:
        if pid_k == n_chunks - 1:
            l_off = chan * (dstate * NC) + offs_n * NC
            tl.store(last_ptr + l_off, hr_vec, mask=mask_n)
            if IS_COMPLEX:
                tl.store(last_ptr + l_off + 1, hi_vec, mask=mask_n)


# --------------------------------------------------------------------------------------------
# Forward scan in two passes per thread (version 5)
# --------------------------------------------------------------------------------------------
# The tile is a [R, P] block: row r holds positions r * P .. r * P + P - 1, and the launcher picks
# P so that each thread owns whole rows (R = 32 rows for one warp). Per state index:
#   pass 1  each row scans its P positions from zero, inside its thread, and keeps only its end
#           state; the row's decay is exp(A * sum of its dt), one exponential per row;
#   rows    the R (decay, end state) pairs are scanned across rows (shuffles, log2 R steps), the
#           tile's entering state joined in at row 0; one shuffle rotates the inclusive result by
#           one row, which gives every row the state entering it and row 0 the state leaving the
#           tile (the next tile's entering state);
#   pass 2  each row runs its P positions again from its entering state and adds C h to y.
# Against ``tl.associative_scan`` over a [T] vector (version 4) this drops the per-position
# cumulative decays, the prefix applied to every position, and the reductions that read one
# position out of the tile and pick a state out of an [N] vector: the N states live in a tuple
# of [R] vectors (row 0 meaningful), unrolled over a static N.


@triton.jit
def _last_col(x, p, P: tl.constexpr):
    """Column P - 1 of an [R, P] tile as an [R] vector (a register of each thread, no shuffles)."""
    return tl.sum(tl.where(p[None, :] == P - 1, x, 0.0), axis=1)


@triton.jit
def _put(t, n: tl.constexpr, v):
    """The tuple ``t`` with element ``n`` replaced by ``v``."""
    return t[:n] + (v,) + t[n + 1:]


@triton.jit
def _rows_scan(ar, ai, xr, xi, gr, gi, h0r, h0i, lane0, p, rot, P: tl.constexpr,
               IS_COMPLEX: tl.constexpr):
    """One state index over one tile (see the section comment). ``(ar, ai)`` decays and ``(xr,
    xi)`` inputs ``[R, P]``; ``(gr, gi)`` each row's whole decay ``[R]``; ``(h0r, h0i)`` the state
    entering the tile, at row 0. Returns h ``[R, P]`` and the rotated row states (row 0: the state
    leaving the tile; row i > 0: the state leaving row i - 1), and the inclusive row states."""
    if IS_COMPLEX:
        _, _, er, ei = tl.associative_scan((ar, ai, xr, xi), 1, _combine_complex)
        er = _last_col(er, p, P)
        ei = _last_col(ei, p, P)
        er = tl.where(lane0, er + gr * h0r - gi * h0i, er)
        ei = tl.where(lane0, ei + gr * h0i + gi * h0r, ei)
        _, _, incr, inci = tl.associative_scan((gr, gi, er, ei), 0, _combine_complex)
        rotr = tl.gather(incr, rot, 0)
        roti = tl.gather(inci, rot, 0)
        hinr = tl.where(lane0, h0r, rotr)[:, None]
        hini = tl.where(lane0, h0i, roti)[:, None]
        first = p[None, :] == 0
        xr = tl.where(first, xr + ar * hinr - ai * hini, xr)
        xi = tl.where(first, xi + ar * hini + ai * hinr, xi)
        _, _, hr, hi = tl.associative_scan((ar, ai, xr, xi), 1, _combine_complex)
    else:
        _, er = tl.associative_scan((ar, xr), 1, _combine_real)
        er = _last_col(er, p, P)
        er = tl.where(lane0, er + gr * h0r, er)
        _, incr = tl.associative_scan((gr, er), 0, _combine_real)
        rotr = tl.gather(incr, rot, 0)
        hinr = tl.where(lane0, h0r, rotr)[:, None]
        xr = tl.where(p[None, :] == 0, xr + ar * hinr, xr)
        _, hr = tl.associative_scan((ar, xr), 1, _combine_real)
        hi = hr
        roti = rotr
        inci = incr
    return hr, hi, rotr, roti, incr, inci


@triton.jit
def _scan2_fwd_kernel(
    # pointers
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, hin_ptr, y_ptr, last_ptr,
    hsave_ptr,
    # dims; z's batch stride beyond dim * L (z may be one half of a [B, 2D, L] tensor)
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c, z_extra,
    # strides of B and C (planar layout, see _prep_bc)
    sB0, sB1, sB2, sBri, sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    WRITE_LAST: tl.constexpr, WRITE_STATES: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, TILES: tl.constexpr, P: tl.constexpr, SPLIT: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    """Forward scan of one channel over one chunk of ``TILES`` tiles of ``BLOCK_T = R x P``
    positions, two passes per thread (section comment above); arguments and outputs as
    :func:`_scan1_fwd_kernel`. With ``SPLIT = 2`` the state at each tile's middle (after row
    R / 2 - 1) is saved too."""
    pid_k, d, pid_b, _offs_n, _loc_t, _mask_n, chan, row = _channel_program(dim, L, dstate, BLOCK_N,
                                                                            BLOCK_T)
    R: tl.constexpr = BLOCK_T // P
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    r = tl.arange(0, R)
    p = tl.arange(0, P)
    loc = r[:, None] * P + p[None, :]
    lane0 = r == 0
    rot = (r + R - 1) % R
    bias = _scalar(bias_ptr, d, HAS_BIAS)
    Dv = _scalar(D_ptr, d, HAS_D)
    b_base = _bc_base(pid_b, d, sB0, sB1, group_b, VAR_B)
    c_base = _bc_base(pid_b, d, sC0, sC1, group_c, VAR_C)
    zero_r = tl.zeros([R], dtype=tl.float32)
    # Per state index: A (real part times log2 e, imaginary part) and the carried state, row 0.
    A2s = ()
    Ais = ()
    hrs = ()
    his = ()
    for n in tl.static_range(BLOCK_N):
        ok = n < dstate
        a_off = (d * dstate + n) * NC
        A2s = A2s + (tl.load(A_ptr + a_off, mask=ok, other=0.0) * LOG2E,)
        h0r = zero_r
        h0i = zero_r
        if IS_COMPLEX:
            Ais = Ais + (tl.load(A_ptr + a_off + 1, mask=ok, other=0.0),)
        if HAS_HIN:
            s_off = (chan * n_chunks + pid_k) * (dstate * NC) + n * NC
            h0r = zero_r + tl.load(hin_ptr + s_off, mask=ok, other=0.0)
            if IS_COMPLEX:
                h0i = zero_r + tl.load(hin_ptr + s_off + 1, mask=ok, other=0.0)
        hrs = hrs + (h0r,)
        his = his + (h0i,)

    for j in range(0, TILES):
        tile = pid_k * TILES + j
        offs_t = tile * BLOCK_T + loc
        mask_t = offs_t < L
        io = row + offs_t
        u = tl.load(u_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        dt, _ = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
        dtu = dt * u
        dts = tl.sum(dt, axis=1)
        if HAS_D:
            y = Dv * u
        else:
            y = tl.zeros([R, P], dtype=tl.float32)
        s_row = (chan * n_tiles + tile * SPLIT) * (dstate * NC)
        for n in tl.static_range(BLOCK_N):
            row_ok = n < dstate
            Br, Bi, Cr, Ci = _bc_rows(B_ptr, C_ptr, b_base, c_base, n, sB2, sBri, sC2, sCri, offs_t,
                                      mask_t, row_ok, VAR_B, VAR_C, IS_COMPLEX)
            h0r = hrs[n]
            h0i = his[n]
            if WRITE_STATES:
                s_ok = lane0 & row_ok & (tile * SPLIT < n_tiles)
                tl.store(hsave_ptr + (s_row + n * NC) + r * 0, h0r, mask=s_ok)
                if IS_COMPLEX:
                    tl.store(hsave_ptr + (s_row + n * NC + 1) + r * 0, h0i, mask=s_ok)
            if IS_COMPLEX:
                mag = tl.exp2(dt * A2s[n])
                cs, sn = _cos_sin(dt * Ais[n], FAST_MATH)
                gm = tl.exp2(dts * A2s[n])
                gc, gs = _cos_sin(dts * Ais[n], FAST_MATH)
                hr, hi, rotr, roti, incr, inci = _rows_scan(
                    mag * cs, mag * sn, dtu * Br, dtu * Bi, gm * gc, gm * gs, h0r, h0i, lane0, p, rot,
                    P, True)
                y += 2.0 * (Cr * hr - Ci * hi)
                his = _put(his, n, roti)
            else:
                hr, hi, rotr, roti, incr, inci = _rows_scan(
                    tl.exp2(dt * A2s[n]), zero_r, dtu * Br, zero_r, tl.exp2(dts * A2s[n]), zero_r, h0r,
                    h0i, lane0, p, rot, P, False)
                y += Cr * hr
            hrs = _put(hrs, n, rotr)
            if WRITE_STATES and SPLIT == 2:
                m_ok = (r == R // 2 - 1) & row_ok & (tile * 2 + 1 < n_tiles)
                m_off = s_row + dstate * NC + n * NC
                tl.store(hsave_ptr + m_off + r * 0, incr, mask=m_ok)
                if IS_COMPLEX:
                    tl.store(hsave_ptr + m_off + 1 + r * 0, inci, mask=m_ok)
        if HAS_Z:
            z = tl.load(z_ptr + pid_b.to(tl.int64) * z_extra + io, mask=mask_t, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + io, y.to(y_ptr.dtype.element_ty), mask=mask_t)

    if WRITE_LAST:
        if pid_k == n_chunks - 1:
            for n in tl.static_range(BLOCK_N):
                l_ok = lane0 & (n < dstate)
                l_off = chan * (dstate * NC) + n * NC
                tl.store(last_ptr + l_off + r * 0, hrs[n], mask=l_ok)
                if IS_COMPLEX:
                    tl.store(last_ptr + l_off + 1 + r * 0, his[n], mask=l_ok)


@triton.jit
def _gated_dout(dout_ptr, z_ptr, io, mask_t, z_row, HAS_Z: tl.constexpr):
    """A backward tile's output gradient and gate, fp32: (dout, z, sigmoid(z), dy = dout silu(z));
    without a gate z and sigmoid(z) are placeholders (unused) and dy = dout."""
    dout = tl.load(dout_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
    zl = tl.load(z_ptr + z_row + io, mask=mask_t, other=0.0) if HAS_Z else None
    return _gated_from(dout, zl, HAS_Z)


@triton.jit
def _gated_from(dout, zl, HAS_Z: tl.constexpr):
    """`_gated_dout` from dout (fp32) and z as loaded (None without a gate)."""
    if HAS_Z:
        z = zl.to(tl.float32)
        sig = tl.sigmoid(z)
        dy = dout * z * sig
    else:
        dy = dout
        z = dout
        sig = dout
    return dout, z, sig, dy


@triton.jit
def _position_grads(y, gBs, gAw, u, dt, raw, dout, dy, z, sig, Dv, io, mask_t, dz_row, dz_ptr, y_ptr, du_ptr,
                    ddelta_ptr, acc_dD, acc_dbias, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, WRITE_Y: tl.constexpr):
    """The backward's per-position work on one tile (any shape), from y = sum_n C h, gBs = Re sum_n
    g conj(B) and gAw = Re sum_n g conj(A w): dz, y itself (gated) with ``WRITE_Y``, du and d delta
    stored; the dD and d delta_bias accumulators returned."""
    if HAS_D:
        y += Dv * u  # unused (and compiled away) unless HAS_Z or WRITE_Y
    if HAS_Z:
        dz = dout * y * sig * (1.0 + z * (1.0 - sig))
        tl.store(dz_ptr + dz_row + io, dz.to(dz_ptr.dtype.element_ty), mask=mask_t)
    if WRITE_Y:
        if HAS_Z:
            y *= z * sig
        tl.store(y_ptr + io, y.to(y_ptr.dtype.element_ty), mask=mask_t)
    du = dt * gBs
    if HAS_D:
        du += Dv * dy
        acc_dD += tl.where(mask_t, dy * u, 0.0)
    tl.store(du_ptr + io, du.to(du_ptr.dtype.element_ty), mask=mask_t)
    ddt = u * gBs + gAw
    if SOFTPLUS:
        ddt = ddt * tl.sigmoid(raw)
    ddt = tl.where(mask_t, ddt, 0.0)  # padded positions carry adjoint but no delta
    tl.store(ddelta_ptr + io, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_t)
    if HAS_BIAS:
        acc_dbias += ddt
    return acc_dD, acc_dbias


# --------------------------------------------------------------------------------------------
# Backward in two passes per thread (version 5)
# --------------------------------------------------------------------------------------------
# The same [R, P] tile as the two-pass forward, but each per-position quantity is split into its
# P columns, [R] vectors of one register per thread (`_cols`; `_from_cols` joins them back for
# the stores): the passes inside a row are explicit loops over columns, in either direction.
# (``tl.associative_scan(reverse=True)`` reverses its operands across the warp even along an
# axis inside one thread: 80 shuffles per call at P = 4.) Per state index, a_t = exp(dt_t A)
# (complex scans: real and imaginary parts side by side, conj where the adjoint needs it):
#   h       as in the forward: each row from zero to its end state, the rows' (decay, end state)
#           pairs scanned across rows from the state saved entering the tile, each row again
#           from the state entering it (keeping w_t = a_t h_{t-1} and h_t);
#   adjoint g_t = q_t + conj(a_{t+1}) g_{t+1}, q_t = C_t dy_t (2 conj(C_t) dy_t complex), the same
#           way backwards. Across rows the carried quantity is V_r = conj(a) g at row r's first
#           position: V_r = conj(a_{r,0}) e_r + conj(row r's whole decay) V_{r+1}, e_r the row's
#           first adjoint from zero, so the row decays are the forward's. The rows are scanned in
#           reversed order (gathers reverse the operands; a forward scan), and one gather both
#           restores the order and moves V up by one row: row r < R - 1 receives V_{r+1}, the
#           adjoint arriving at its last position, and row R - 1 receives V_0 = conj(a_0) g_0, the
#           adjoint that enters the previous tile at its last position (kept for the next tile in
#           element n of an [N] vector).
# The state loop is a runtime loop: unrolled, the compiler interleaved the state indices and ran
# out of registers. Version 4 spends most of its backward on two ``tl.associative_scan`` over
# [T] vectors per state index (the reverse one with its reversals) and an exponential for the
# next position's decay.


@triton.jit
def _cols(x):
    """The columns of an [R, P] tile (P a power of two, at most 16) as a tuple of P [R] vectors:
    halving the columns into even and odd ones log2 P times (``tl.split``, no data movement when
    a row lives in one thread)."""
    R: tl.constexpr = x.shape[0]
    parts = (x,)
    for _lvl in tl.static_range(4):
        if parts[0].shape[1] > 1:
            evens = ()
            odds = ()
            for i in tl.static_range(len(parts)):
                e, o = tl.split(tl.reshape(parts[i], [R, parts[i].shape[1] // 2, 2]))
                evens = evens + (e,)
                odds = odds + (o,)
            parts = evens + odds
    out = ()
    for i in tl.static_range(len(parts)):
        out = out + (tl.reshape(parts[i], [R]),)
    return out


@triton.jit
def _from_cols(cols):
    """The [R, P] tile whose columns are the tuple ``cols`` (inverse of `_cols`)."""
    R: tl.constexpr = cols[0].shape[0]
    parts = ()
    for i in tl.static_range(len(cols)):
        parts = parts + (tl.reshape(cols[i], [R, 1]),)
    for _lvl in tl.static_range(4):
        if len(parts) > 1:
            joined = ()
            for i in tl.static_range(len(parts) // 2):
                pair = tl.join(parts[i], parts[i + len(parts) // 2])
                joined = joined + (tl.reshape(pair, [R, parts[i].shape[1] * 2]),)
            parts = joined
    return parts[0]


@triton.jit
def _cols_of(x, VAR: tl.constexpr, P: tl.constexpr):
    """The P columns of a row of B or C: `_cols` of an [R, P] tile (variable), or the scalar P
    times (constant)."""
    if VAR:
        out = _cols(x)
    else:
        out = ()
        for j in tl.static_range(P):
            out = out + (x,)
    return out


@triton.jit
def _cmul(ar, ai, br, bi, IS_COMPLEX: tl.constexpr, CONJ: tl.constexpr = False):
    """a b, or conj(a) b with CONJ, on real and imaginary parts (real scans: the real parts, the
    product returned twice)."""
    if IS_COMPLEX:
        if CONJ:
            return ar * br + ai * bi, ar * bi - ai * br
        return ar * br - ai * bi, ar * bi + ai * br
    else:
        pr = ar * br
        return pr, pr


@triton.jit
def _cfma(ar, ai, br, bi, cr, ci, IS_COMPLEX: tl.constexpr, CONJ: tl.constexpr = False):
    """a b + c, or conj(a) b + c with CONJ (as `_cmul`)."""
    if IS_COMPLEX:
        if CONJ:
            return ar * br + ai * bi + cr, ar * bi - ai * br + ci
        return ar * br - ai * bi + cr, ar * bi + ai * br + ci
    else:
        sr = ar * br + cr
        return sr, sr


@triton.jit
def _rows_carry(gr, gi, er, ei, idx, IS_COMPLEX: tl.constexpr):
    """Scan the rows' (decay, value) pairs ``[R]`` along the rows, then gather the result at rows
    ``idx``: the cross-row step of the two-pass backward, forwards (h) and on reversed rows (the
    adjoint)."""
    if IS_COMPLEX:
        _, _, er, ei = tl.associative_scan((gr, gi, er, ei), 0, _combine_complex)
        return tl.gather(er, idx, 0), tl.gather(ei, idx, 0)
    else:
        _, er = tl.associative_scan((gr, er), 0, _combine_real)
        er = tl.gather(er, idx, 0)
        return er, er


@triton.jit
def _bc_grad2(ptr, base, n, s2, s_ri, offs_t, mask, g_re, g_im, acc_re, acc_im, lanes,
              VAR: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """Add the gradient ``(g_re, g_im)`` (tuples of columns) of row ``n`` of B or C: atomic adds
    per position (variable), or the tile's sums into lane n of ``acc_re`` / ``acc_im`` (constant),
    returned."""
    if VAR:
        off = base + n * s2 + offs_t
        tl.atomic_add(ptr + off, _from_cols(g_re), mask=mask, sem="relaxed")
        if IS_COMPLEX:
            tl.atomic_add(ptr + off + s_ri, _from_cols(g_im), mask=mask, sem="relaxed")
    else:
        tot_re = g_re[0]
        tot_im = g_im[0]
        for j in tl.static_range(1, len(g_re)):
            tot_re += g_re[j]
            tot_im += g_im[j]
        acc_re = tl.where(lanes == n, acc_re + tl.sum(tot_re, axis=0), acc_re)
        if IS_COMPLEX:
            acc_im = tl.where(lanes == n, acc_im + tl.sum(tot_im, axis=0), acc_im)
    return acc_re, acc_im


@triton.jit
def _scan2_bwd_kernel(
    # pointers: inputs
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dout_ptr, hin_ptr, cin_ptr,
    # pointers: outputs (as _scan1_bwd_kernel)
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr, y_ptr,
    # dims; the batch strides of z and dz beyond dim * L
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c, n_slots, z_extra, dz_extra,
    # strides of B and C (planar layout; also of their fp32 gradient buffers when variable)
    sB0, sB1, sB2, sBri, sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    HAS_CIN: tl.constexpr, WRITE_DINIT: tl.constexpr, WRITE_Y: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, TILES: tl.constexpr, P: tl.constexpr, FAST_MATH: tl.constexpr,
):
    """Backward of one channel over one chunk, two passes per thread (section comment above);
    arguments and outputs as :func:`_scan1_bwd_kernel`. Complex scans as there: y = 2 Re(C h),
    adjoint q = 2 conj(C) dy, carried through conj(a)."""
    pid_k, d, pid_b, offs_n, _loc_t, mask_n, chan, row = _channel_program(dim, L, dstate, BLOCK_N,
                                                                          BLOCK_T)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    R: tl.constexpr = BLOCK_T // P
    r = tl.arange(0, R)
    loc = r[:, None] * P + tl.arange(0, P)[None, :]
    lane0 = r == 0
    last_row = r == R - 1
    rot = (r + R - 1) % R  # row r takes row r - 1
    flip = R - 1 - r
    # after a scan of reversed rows: row r takes reversed row R - 2 - r (row r + 1; row R - 1
    # takes row 0)
    unflip_up = (2 * R - 2 - r) % R
    bias = _scalar(bias_ptr, d, HAS_BIAS)
    Dv = _scalar(D_ptr, d, HAS_D)
    b_base = _bc_base(pid_b, d, sB0, sB1, group_b, VAR_B)
    c_base = _bc_base(pid_b, d, sC0, sC1, group_c, VAR_C)
    zero_r = tl.zeros([R], dtype=tl.float32)
    # Element n of these [N] vectors: state index n's adjoint entering the tile's last position,
    # and its sums over the chunk's positions (dA; dB / dC when constant), added to memory at the
    # end. A state index reads and writes its element with a gather (a shuffle) each.
    cr_vec, ci_vec = _state_vec(cin_ptr, chan * n_chunks + pid_k, dstate, offs_n, mask_n, HAS_CIN,
                                IS_COMPLEX)
    zero_n = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_dAr = zero_n
    acc_dAi = zero_n
    acc_dBr = zero_n
    acc_dBi = zero_n
    acc_dCr = zero_n
    acc_dCi = zero_n
    acc_dD = tl.zeros([R, P], dtype=tl.float32)
    acc_dbias = tl.zeros([R, P], dtype=tl.float32)

    for jj in range(0, TILES):
        tile = pid_k * TILES + (TILES - 1 - jj)
        offs_t = tile * BLOCK_T + loc
        mask_t = offs_t < L
        io = row + offs_t
        u = tl.load(u_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        dt, raw = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS)
        dout, z, sig, dy = _gated_dout(dout_ptr, z_ptr, io, mask_t, pid_b.to(tl.int64) * z_extra, HAS_Z)
        dts = tl.sum(dt, axis=1)
        dt_c = _cols(dt)
        dtu_c = _cols(dt * u)
        dy_c = _cols(dy)
        t_row = (chan * n_tiles + tile) * (dstate * NC)
        # sums over state indices, by column: C h (for dz and y), Re g conj(B), Re g conj(A w)
        y_c = ()
        gB_c = ()
        gAw_c = ()
        for j in tl.static_range(P):
            y_c = y_c + (zero_r,)
            gB_c = gB_c + (zero_r,)
            gAw_c = gAw_c + (zero_r,)
        for n in range(0, dstate):
            Ar = tl.load(A_ptr + (d * dstate + n) * NC)
            A2 = Ar * LOG2E
            Ai = 0.0
            if IS_COMPLEX:
                Ai = tl.load(A_ptr + (d * dstate + n) * NC + 1)
            Br, Bi, Cr, Ci = _bc_rows(B_ptr, C_ptr, b_base, c_base, n, sB2, sBri, sC2, sCri, offs_t,
                                      mask_t, n < dstate, VAR_B, VAR_C, IS_COMPLEX)
            Br_c = _cols_of(Br, VAR_B, P)
            Cr_c = _cols_of(Cr, VAR_C, P)
            Bi_c = Br_c
            Ci_c = Cr_c
            # each row's whole decay, and a_t = exp(dt_t A); x_t = dt_t u_t B_t
            gar = tl.exp2(dts * A2)
            gai = gar
            if IS_COMPLEX:
                Bi_c = _cols_of(Bi, VAR_B, P)
                Ci_c = _cols_of(Ci, VAR_C, P)
                cs, sn = _cos_sin(dts * Ai, FAST_MATH)
                gai = gar * sn
                gar = gar * cs
            ar_c = ()
            ai_c = ()
            xr_c = ()
            xi_c = ()
            for j in tl.static_range(P):
                mag = tl.exp2(dt_c[j] * A2)
                if IS_COMPLEX:
                    cs, sn = _cos_sin(dt_c[j] * Ai, FAST_MATH)
                    ar_c = ar_c + (mag * cs,)
                    ai_c = ai_c + (mag * sn,)
                    xi_c = xi_c + (dtu_c[j] * Bi_c[j],)
                else:
                    ar_c = ar_c + (mag,)
                    ai_c = ar_c
                xr_c = xr_c + (dtu_c[j] * Br_c[j],)
            if not IS_COMPLEX:
                xi_c = xr_c
            # h: each row from zero, the rows, each row from the state entering it
            er = xr_c[0]
            ei = xi_c[0]
            for j in tl.static_range(1, P):
                er, ei = _cfma(ar_c[j], ai_c[j], er, ei, xr_c[j], xi_c[j], IS_COMPLEX)
            h0r = zero_r
            h0i = zero_r
            if HAS_HIN:
                h_ok = tile < n_tiles
                h0r = zero_r + tl.load(hin_ptr + t_row + n * NC, mask=h_ok, other=0.0)
                if IS_COMPLEX:
                    h0i = zero_r + tl.load(hin_ptr + t_row + n * NC + 1, mask=h_ok, other=0.0)
            jr, ji = _cfma(gar, gai, h0r, h0i, er, ei, IS_COMPLEX)
            hr, hi = _rows_carry(gar, gai, tl.where(lane0, jr, er), tl.where(lane0, ji, ei), rot, IS_COMPLEX)
            hr = tl.where(lane0, h0r, hr)
            hi = tl.where(lane0, h0i, hi)
            hr_c = ()
            hi_c = ()
            wr_c = ()
            wi_c = ()
            for j in tl.static_range(P):
                wr, wi = _cmul(ar_c[j], ai_c[j], hr, hi, IS_COMPLEX)
                hr = wr + xr_c[j]
                hi = wi + xi_c[j]
                wr_c = wr_c + (wr,)
                wi_c = wi_c + (wi,)
                hr_c = hr_c + (hr,)
                hi_c = hi_c + (hi,)
            # adjoint: each row from zero (the tile's last position also takes the carried one),
            # the rows in reversed order, each row from the adjoint arriving at its end
            qr_c = ()
            qi_c = ()
            for j in tl.static_range(P):
                if IS_COMPLEX:
                    qr_c = qr_c + (2.0 * Cr_c[j] * dy_c[j],)
                    qi_c = qi_c + (-2.0 * Ci_c[j] * dy_c[j],)
                else:
                    qr_c = qr_c + (Cr_c[j] * dy_c[j],)
            if not IS_COMPLEX:
                qi_c = qr_c
            pick = r * 0 + n
            qr_last = tl.where(last_row, qr_c[P - 1] + tl.gather(cr_vec, pick, 0), qr_c[P - 1])
            qi_last = qr_last
            if IS_COMPLEX:
                qi_last = tl.where(last_row, qi_c[P - 1] + tl.gather(ci_vec, pick, 0), qi_c[P - 1])
            gr = qr_last
            gi = qi_last
            for k in tl.static_range(P - 1):  # columns P - 2 .. 0: g = q + conj(a_next) g
                gr, gi = _cfma(ar_c[P - 1 - k], ai_c[P - 1 - k], gr, gi, qr_c[P - 2 - k], qi_c[P - 2 - k],
                               IS_COMPLEX, True)
            vr, vi = _cmul(ar_c[0], ai_c[0], gr, gi, IS_COMPLEX, True)  # conj(a) g, rows' first
            fgi = gar
            fvi = vr
            if IS_COMPLEX:
                fgi = -tl.gather(gai, flip, 0)
                fvi = tl.gather(vi, flip, 0)
            vr, vi = _rows_carry(tl.gather(gar, flip, 0), fgi, tl.gather(vr, flip, 0), fvi, unflip_up,
                                 IS_COMPLEX)
            last = offs_n * 0 + (R - 1)
            cr_vec = tl.where(offs_n == n, tl.gather(vr, last, 0), cr_vec)
            if IS_COMPLEX:
                ci_vec = tl.where(offs_n == n, tl.gather(vi, last, 0), ci_vec)
            gr = tl.where(last_row, qr_last, qr_last + vr)
            gi = tl.where(last_row, qi_last, qi_last + vi)
            gr_c = (gr,)
            gi_c = (gi,)
            for k in tl.static_range(P - 1):
                gr, gi = _cfma(ar_c[P - 1 - k], ai_c[P - 1 - k], gr, gi, qr_c[P - 2 - k], qi_c[P - 2 - k],
                               IS_COMPLEX, True)
                gr_c = (gr,) + gr_c
                gi_c = (gi,) + gi_c
            dAr = zero_r
            dAi = zero_r
            dBr_c = ()
            dBi_c = ()
            dCr_c = ()
            dCi_c = ()
            for j in tl.static_range(P):
                if IS_COMPLEX:
                    y_c = _put(y_c, j, y_c[j] + 2.0 * (Cr_c[j] * hr_c[j] - Ci_c[j] * hi_c[j]))
                    gB_c = _put(gB_c, j, gB_c[j] + gr_c[j] * Br_c[j] + gi_c[j] * Bi_c[j])
                    # Re g conj(A w), and dA += dt conj(w) g
                    gAw_c = _put(gAw_c, j, gAw_c[j] + gr_c[j] * (Ar * wr_c[j] - Ai * wi_c[j])
                                 + gi_c[j] * (Ar * wi_c[j] + Ai * wr_c[j]))
                    dAr += dt_c[j] * (gr_c[j] * wr_c[j] + gi_c[j] * wi_c[j])
                    dAi += dt_c[j] * (gi_c[j] * wr_c[j] - gr_c[j] * wi_c[j])
                    dBi_c = dBi_c + (gi_c[j] * dtu_c[j],)
                    dCr_c = dCr_c + (2.0 * dy_c[j] * hr_c[j],)  # dC = 2 dy conj(h)
                    dCi_c = dCi_c + (-2.0 * dy_c[j] * hi_c[j],)
                else:
                    gw = gr_c[j] * wr_c[j]
                    y_c = _put(y_c, j, y_c[j] + Cr_c[j] * hr_c[j])
                    gB_c = _put(gB_c, j, gB_c[j] + gr_c[j] * Br_c[j])
                    gAw_c = _put(gAw_c, j, gAw_c[j] + Ar * gw)
                    dAr += dt_c[j] * gw
                    dCr_c = dCr_c + (dy_c[j] * hr_c[j],)  # dC = dy h
                dBr_c = dBr_c + (gr_c[j] * dtu_c[j],)  # dB = g dt u
            if not IS_COMPLEX:
                dBi_c = dBr_c
                dCi_c = dCr_c
            acc_dAr = tl.where(offs_n == n, acc_dAr + tl.sum(dAr, axis=0), acc_dAr)
            if IS_COMPLEX:
                acc_dAi = tl.where(offs_n == n, acc_dAi + tl.sum(dAi, axis=0), acc_dAi)
            acc_dBr, acc_dBi = _bc_grad2(dB_ptr, b_base, n, sB2, sBri, offs_t, mask_t, dBr_c, dBi_c,
                                         acc_dBr, acc_dBi, offs_n, VAR_B, IS_COMPLEX)
            acc_dCr, acc_dCi = _bc_grad2(dC_ptr, c_base, n, sC2, sCri, offs_t, mask_t, dCr_c, dCi_c,
                                         acc_dCr, acc_dCi, offs_n, VAR_C, IS_COMPLEX)

        # ---- per-position gradients ---------------------------------------------------------
        acc_dD, acc_dbias = _position_grads(
            _from_cols(y_c), _from_cols(gB_c), _from_cols(gAw_c), u, dt, raw, dout, dy, z, sig, Dv, io, mask_t,
            pid_b.to(tl.int64) * dz_extra, dz_ptr, y_ptr, du_ptr, ddelta_ptr, acc_dD, acc_dbias, HAS_D, HAS_Z,
            HAS_BIAS, SOFTPLUS, WRITE_Y)

    # Per-channel sums: one atomic add per program into partial row ``slot`` (torch sums rows).
    slot = (pid_b * n_chunks + pid_k) % n_slots
    p_off = (slot * dim + d).to(tl.int64) * (dstate * NC) + offs_n * NC
    tl.atomic_add(dA_ptr + p_off, acc_dAr, mask=mask_n, sem="relaxed")
    if IS_COMPLEX:
        tl.atomic_add(dA_ptr + p_off + 1, acc_dAi, mask=mask_n, sem="relaxed")
    if not VAR_B:
        tl.atomic_add(dB_ptr + p_off, acc_dBr, mask=mask_n, sem="relaxed")
        if IS_COMPLEX:
            tl.atomic_add(dB_ptr + p_off + 1, acc_dBi, mask=mask_n, sem="relaxed")
    if not VAR_C:
        tl.atomic_add(dC_ptr + p_off, acc_dCr, mask=mask_n, sem="relaxed")
        if IS_COMPLEX:
            tl.atomic_add(dC_ptr + p_off + 1, acc_dCi, mask=mask_n, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + slot * dim + d, tl.sum(tl.sum(acc_dD, axis=1), axis=0), sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + slot * dim + d, tl.sum(tl.sum(acc_dbias, axis=1), axis=0), sem="relaxed")
    if WRITE_DINIT:
        if pid_k == 0:
            i_off = chan * (dstate * NC) + offs_n * NC
            tl.store(dinit_ptr + i_off, cr_vec, mask=mask_n)
            if IS_COMPLEX:
                tl.store(dinit_ptr + i_off + 1, ci_vec, mask=mask_n)


@triton.jit
def _scan1_bwd_kernel(
    # pointers: inputs
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dout_ptr, hin_ptr, cin_ptr,
    # pointers: outputs (du, ddelta, dz, y in their input dtypes; the rest fp32 accumulators)
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr, y_ptr,
    # dims; the batch strides of z and dz beyond dim * L
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c, n_slots, z_extra, dz_extra,
    # strides of B and C (planar layout; also of their fp32 gradient buffers when variable)
    sB0, sB1, sB2, sBri, sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    HAS_CIN: tl.constexpr, WRITE_DINIT: tl.constexpr, WRITE_Y: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, TILES: tl.constexpr, N_UNROLL: tl.constexpr, PREFETCH: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    """Backward of one channel over one chunk, walking its tiles from last to first. Per tile and
    state index: recompute h from the saved state entering the tile, run the adjoint
    g_t = q_t + conj(a_{t+1}) g_{t+1} (reverse scan; the adjoint arriving from the next tile,
    conj(a_0) g_0 of that tile, enters at the last position), form the gradients. The adjoint
    entering the chunk's last tile from later chunks is ``cin[b, d, k]`` (or d last_state).
    With ``WRITE_Y`` it also writes the forward's output y (gated), which the recomputed h gives
    for one FMA per state index and a store per position."""
    pid_k, d, pid_b, offs_n, loc_t, mask_n, chan, row = _channel_program(dim, L, dstate, BLOCK_N, BLOCK_T)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    bias = _scalar(bias_ptr, d, HAS_BIAS)
    Dv = _scalar(D_ptr, d, HAS_D)
    b_base = _bc_base(pid_b, d, sB0, sB1, group_b, VAR_B)
    c_base = _bc_base(pid_b, d, sC0, sC1, group_c, VAR_C)
    first = loc_t == 0
    last = loc_t == BLOCK_T - 1
    zero_n = tl.zeros([BLOCK_N], dtype=tl.float32)
    cr_vec, ci_vec = _state_vec(cin_ptr, chan * n_chunks + pid_k, dstate, offs_n, mask_n, HAS_CIN,
                                IS_COMPLEX)
    # Sums over the chunk's positions, added to memory once at the end.
    acc_dAr = zero_n
    acc_dAi = zero_n
    acc_dBr = zero_n  # constant B / C: sums over positions
    acc_dBi = zero_n
    acc_dCr = zero_n
    acc_dCi = zero_n
    acc_dD = tl.zeros([BLOCK_T], dtype=tl.float32)
    acc_dbias = tl.zeros([BLOCK_T], dtype=tl.float32)

    for jj in range(0, TILES):
        tile = pid_k * TILES + (TILES - 1 - jj)
        offs_t = tile * BLOCK_T + loc_t
        mask_t = offs_t < L
        io = row + offs_t
        u = tl.load(u_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        dt, raw = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS)
        # Decay of the next position for the adjoint; the last position's is replaced by the
        # adjoint arriving from the next tile.
        mask_next = ((offs_t + 1) < L) & (loc_t < BLOCK_T - 1)
        dt_next, _ = _dt_row(delta_ptr, io + 1, mask_next, bias, HAS_BIAS, SOFTPLUS)
        dout, z, sig, dy = _gated_dout(dout_ptr, z_ptr, io, mask_t, pid_b.to(tl.int64) * z_extra, HAS_Z)
        dtu = dt * u
        t_row = (chan * n_tiles + tile) * (dstate * NC)
        y = tl.zeros([BLOCK_T], dtype=tl.float32)  # sum_n C h (for dz)
        gBs = tl.zeros([BLOCK_T], dtype=tl.float32)  # Re sum_n g conj(B)
        gAw = tl.zeros([BLOCK_T], dtype=tl.float32)  # Re sum_n g conj(A w)
        nBr, nBi, nCr, nCi = _bc_rows_first(B_ptr, C_ptr, b_base, c_base, dstate, sB2, sBri, sC2, sCri,
                                            offs_t, mask_t, VAR_B, VAR_C, IS_COMPLEX, PREFETCH)
        for n0 in range(0, dstate, N_UNROLL):
            for k in tl.static_range(N_UNROLL):
                n = n0 + k
                row_ok = n < dstate
                Ar = tl.load(A_ptr + (d * dstate + n) * NC, mask=row_ok, other=0.0)
                Br, Bi, Cr, Ci, nBr, nBi, nCr, nCi = _bc_rows_next(
                    B_ptr, C_ptr, b_base, c_base, n, dstate, sB2, sBri, sC2, sCri, offs_t, mask_t,
                    nBr, nBi, nCr, nCi, VAR_B, VAR_C, IS_COMPLEX, PREFETCH)
                h0r = 0.0
                h0i = 0.0
                if HAS_HIN:
                    h0_ok = row_ok & (tile < n_tiles)
                    h0r = tl.load(hin_ptr + t_row + n * NC, mask=h0_ok, other=0.0)
                    if IS_COMPLEX:
                        h0i = tl.load(hin_ptr + t_row + n * NC + 1, mask=h0_ok, other=0.0)
                c_r = _pick(cr_vec, offs_n, n)
                if IS_COMPLEX:
                    Ai = tl.load(A_ptr + (d * dstate + n) * NC + 1, mask=row_ok, other=0.0)
                    c_i = _pick(ci_vec, offs_n, n)
                    # recompute h; w_t = a_t h_{t-1} (gradients of A and delta)
                    mag = _decay(dt, Ar, not WRITE_Y)
                    cs, sn = _cos_sin(dt * Ai, FAST_MATH)
                    ar = mag * cs
                    ai = mag * sn
                    xr = dtu * Br
                    xi = dtu * Bi
                    w0r = ar * h0r - ai * h0i
                    w0i = ar * h0i + ai * h0r
                    hr, hi = _scan1(ar, ai, xr + tl.where(first, w0r, 0.0), xi + tl.where(first, w0i, 0.0),
                                    False, True)
                    wr = tl.where(first, w0r, hr - xr)
                    wi = tl.where(first, w0i, hi - xi)
                    y += 2.0 * (Cr * hr - Ci * hi)
                    # adjoint: q = 2 conj(C) dy, reverse scan with conj of the next decay
                    magn = _decay(dt_next, Ar, not WRITE_Y)
                    cs_n, sn_n = _cos_sin(dt_next * Ai, FAST_MATH)
                    anr = tl.where(last, 0.0, magn * cs_n)
                    ani = tl.where(last, 0.0, -magn * sn_n)
                    qr = 2.0 * Cr * dy + tl.where(last, c_r, 0.0)
                    qi = -2.0 * Ci * dy + tl.where(last, c_i, 0.0)
                    gr, gi = _scan1(anr, ani, qr, qi, True, True)
                    gBs += gr * Br + gi * Bi
                    gAw += gr * (Ar * wr - Ai * wi) + gi * (Ar * wi + Ai * wr)
                    sel = offs_n == n
                    acc_dAr = tl.where(sel, acc_dAr + tl.sum(dt * (gr * wr + gi * wi), axis=0), acc_dAr)
                    acc_dAi = tl.where(sel, acc_dAi + tl.sum(dt * (gi * wr - gr * wi), axis=0), acc_dAi)
                    dBr = gr * dtu
                    dBi = gi * dtu
                    dCr = 2.0 * dy * hr
                    dCi = -2.0 * dy * hi
                    # the adjoint reaching the state that entered this tile: conj(a_0) g_0
                    cr_vec = tl.where(offs_n == n, _at(ar * gr + ai * gi, loc_t, 0), cr_vec)
                    ci_vec = tl.where(offs_n == n, _at(ar * gi - ai * gr, loc_t, 0), ci_vec)
                else:
                    ar = _decay(dt, Ar, not WRITE_Y)
                    xr = dtu * Br
                    w0r = ar * h0r
                    hr, _ = _scan1(ar, ar, xr + tl.where(first, w0r, 0.0), xr, False, False)
                    wr = tl.where(first, w0r, hr - xr)
                    y += Cr * hr
                    anr = tl.where(last, 0.0, _decay(dt_next, Ar, not WRITE_Y))
                    qr = Cr * dy + tl.where(last, c_r, 0.0)
                    gr, _ = _scan1(anr, anr, qr, qr, True, False)
                    gBs += gr * Br
                    gw = gr * wr
                    gAw += Ar * gw
                    acc_dAr = tl.where(offs_n == n, acc_dAr + tl.sum(dt * gw, axis=0), acc_dAr)
                    dBr = gr * dtu
                    dBi = dBr
                    dCr = dy * hr
                    dCi = dCr
                    cr_vec = tl.where(offs_n == n, _at(ar * gr, loc_t, 0), cr_vec)
                # dB = g dt u, dC = dy h (2 dy conj(h) for complex)
                acc_dBr, acc_dBi = _bc_grad(dB_ptr, b_base, n, sB2, sBri, offs_t, mask_t & row_ok, dBr, dBi,
                                            acc_dBr, acc_dBi, VAR_B, IS_COMPLEX)
                acc_dCr, acc_dCi = _bc_grad(dC_ptr, c_base, n, sC2, sCri, offs_t, mask_t & row_ok, dCr, dCi,
                                            acc_dCr, acc_dCi, VAR_C, IS_COMPLEX)

        # ---- per-position gradients ---------------------------------------------------------
        acc_dD, acc_dbias = _position_grads(
            y, gBs, gAw, u, dt, raw, dout, dy, z, sig, Dv, io, mask_t, pid_b.to(tl.int64) * dz_extra, dz_ptr,
            y_ptr, du_ptr, ddelta_ptr, acc_dD, acc_dbias, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, WRITE_Y)

    # Per-channel sums: one atomic add per program into partial row ``slot`` (torch sums rows).
    slot = (pid_b * n_chunks + pid_k) % n_slots
    p_off = (slot * dim + d).to(tl.int64) * (dstate * NC) + offs_n * NC
    tl.atomic_add(dA_ptr + p_off, acc_dAr, mask=mask_n, sem="relaxed")
    if IS_COMPLEX:
        tl.atomic_add(dA_ptr + p_off + 1, acc_dAi, mask=mask_n, sem="relaxed")
    if not VAR_B:
        tl.atomic_add(dB_ptr + p_off, acc_dBr, mask=mask_n, sem="relaxed")
        if IS_COMPLEX:
            tl.atomic_add(dB_ptr + p_off + 1, acc_dBi, mask=mask_n, sem="relaxed")
    if not VAR_C:
        tl.atomic_add(dC_ptr + p_off, acc_dCr, mask=mask_n, sem="relaxed")
        if IS_COMPLEX:
            tl.atomic_add(dC_ptr + p_off + 1, acc_dCi, mask=mask_n, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + slot * dim + d, tl.sum(acc_dD, axis=0), sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + slot * dim + d, tl.sum(acc_dbias, axis=0), sem="relaxed")
    if WRITE_DINIT:
        if pid_k == 0:
            i_off = chan * (dstate * NC) + offs_n * NC
            tl.store(dinit_ptr + i_off, cr_vec, mask=mask_n)
            if IS_COMPLEX:
                tl.store(dinit_ptr + i_off + 1, ci_vec, mask=mask_n)


@triton.jit
def _chunk_state_kernel(
    # pointers
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, S_ptr, dtsum_ptr,
    # dims
    dim, L, n_chunks, dstate, group_b,
    # strides of B (planar layout)
    sB0, sB1, sB2, sBri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, TILES: tl.constexpr,
):
    """Forward pass 1, one channel per program: each chunk's end state started from zero,
    S_k = sum_t exp(A (T_k - c_t)) dt_t B_t u_t (c_t the inclusive cumulative dt, T_k its total),
    and T_k. Per tile the same sum, one exponential per element and no scan; tiles are combined
    in order, S <- exp(A T_tile) S + S_tile."""
    pid_k, d, pid_b, offs_n, loc_t, mask_n, chan, row = _channel_program(dim, L, dstate, BLOCK_N, BLOCK_T)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    a_off = (d * dstate + offs_n) * NC
    Ar_vec = tl.load(A_ptr + a_off, mask=mask_n, other=0.0)
    if IS_COMPLEX:
        Ai_vec = tl.load(A_ptr + a_off + 1, mask=mask_n, other=0.0)
    bias = _scalar(bias_ptr, d, HAS_BIAS)
    b_base = _bc_base(pid_b, d, sB0, sB1, group_b, VAR_B)
    Sr = tl.zeros([BLOCK_N], dtype=tl.float32)
    Si = tl.zeros([BLOCK_N], dtype=tl.float32)
    tot = 0.0
    for j in range(0, TILES):
        offs_t = (pid_k * TILES + j) * BLOCK_T + loc_t
        mask_t = offs_t < L
        io = row + offs_t
        u = tl.load(u_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        dt, _ = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        t_tile = tl.sum(dt, axis=0)
        rem = t_tile - tl.cumsum(dt, axis=0)  # sum of dt after t, >= 0
        sr = tl.zeros([BLOCK_N], dtype=tl.float32)
        si = tl.zeros([BLOCK_N], dtype=tl.float32)
        for n in range(0, dstate):
            sel = offs_n == n
            Ar = tl.load(A_ptr + (d * dstate + n) * NC)
            Br, Bi = _row(B_ptr, b_base, n, sB2, sBri, offs_t, mask_t, True, VAR_B, IS_COMPLEX)
            if IS_COMPLEX:
                Ai = tl.load(A_ptr + (d * dstate + n) * NC + 1)
                mag = tl.exp(rem * Ar) * dtu
                er = mag * tl.cos(rem * Ai)
                ei = mag * tl.sin(rem * Ai)
                sr = tl.where(sel, tl.sum(er * Br - ei * Bi, axis=0), sr)
                si = tl.where(sel, tl.sum(er * Bi + ei * Br, axis=0), si)
            else:
                sr = tl.where(sel, tl.sum(tl.exp(rem * Ar) * dtu * Br, axis=0), sr)
        # the tile's total decay carries the state so far across it
        mag = tl.exp(t_tile * Ar_vec)
        if IS_COMPLEX:
            pr = mag * tl.cos(t_tile * Ai_vec)
            pi = mag * tl.sin(t_tile * Ai_vec)
            Sr, Si = pr * Sr - pi * Si + sr, pr * Si + pi * Sr + si
        else:
            Sr = mag * Sr + sr
        tot += t_tile
    s_off = (chan * n_chunks + pid_k) * (dstate * NC) + offs_n * NC
    tl.store(S_ptr + s_off, Sr, mask=mask_n)
    if IS_COMPLEX:
        tl.store(S_ptr + s_off + 1, Si, mask=mask_n)
    tl.store(dtsum_ptr + chan * n_chunks + pid_k, tot)


@triton.jit
def _chunk_adjoint_kernel(
    # pointers
    delta_ptr, bias_ptr, A_ptr, C_ptr, z_ptr, dout_ptr, E_ptr, dtsum_ptr,
    # dims; z's batch stride beyond dim * L
    dim, L, n_chunks, dstate, group_c, z_extra,
    # strides of C (planar layout)
    sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_C: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, TILES: tl.constexpr,
):
    """Backward pass 1, one channel per program: the gradient reaching each chunk's incoming state
    from the chunk's own outputs alone, E_k = sum_t conj(exp(A c_t)) q_t (q_t = dL/dh_t through
    y_t, c_t the inclusive cumulative dt from the chunk's start); and the total T_k."""
    pid_k, d, pid_b, offs_n, loc_t, mask_n, chan, row = _channel_program(dim, L, dstate, BLOCK_N, BLOCK_T)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    bias = _scalar(bias_ptr, d, HAS_BIAS)
    c_base = _bc_base(pid_b, d, sC0, sC1, group_c, VAR_C)
    Er = tl.zeros([BLOCK_N], dtype=tl.float32)
    Ei = tl.zeros([BLOCK_N], dtype=tl.float32)
    tot = 0.0
    for j in range(0, TILES):
        offs_t = (pid_k * TILES + j) * BLOCK_T + loc_t
        mask_t = offs_t < L
        io = row + offs_t
        dt, _ = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS)
        dy = tl.load(dout_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + pid_b.to(tl.int64) * z_extra + io, mask=mask_t, other=0.0).to(tl.float32)
            dy *= z * tl.sigmoid(z)
        cum = tot + tl.cumsum(dt, axis=0)  # prod_{r<=t} a_r = exp(A cum)
        for n in range(0, dstate):
            sel = offs_n == n
            Ar = tl.load(A_ptr + (d * dstate + n) * NC)
            Cr, Ci = _row(C_ptr, c_base, n, sC2, sCri, offs_t, mask_t, True, VAR_C, IS_COMPLEX)
            if IS_COMPLEX:
                # q = 2 conj(C) dy; E += sum conj(e) q
                Ai = tl.load(A_ptr + (d * dstate + n) * NC + 1)
                mag = tl.exp(cum * Ar) * (2.0 * dy)
                er = mag * tl.cos(cum * Ai)
                ei = mag * tl.sin(cum * Ai)
                Er = tl.where(sel, Er + tl.sum(er * Cr - ei * Ci, axis=0), Er)
                Ei = tl.where(sel, Ei - tl.sum(er * Ci + ei * Cr, axis=0), Ei)
            else:
                Er = tl.where(sel, Er + tl.sum(tl.exp(cum * Ar) * Cr * dy, axis=0), Er)
        tot += tl.sum(dt, axis=0)
    s_off = (chan * n_chunks + pid_k) * (dstate * NC) + offs_n * NC
    tl.store(E_ptr + s_off, Er, mask=mask_n)
    if IS_COMPLEX:
        tl.store(E_ptr + s_off + 1, Ei, mask=mask_n)
    tl.store(dtsum_ptr + chan * n_chunks + pid_k, tot)


@triton.jit
def _load_in(ptr, mask, EVEN: tl.constexpr):
    """``tl.load`` with ``mask`` (0 where masked), or without when ``EVEN`` says every address is
    in range (a masked load first zeroes its registers)."""
    if EVEN:
        x = tl.load(ptr)
    else:
        x = tl.load(ptr, mask=mask, other=0)
    return x


@triton.jit
def _bc_cols(ptr, base, n, s2, t0, mask_d, L, Lw, held, VAR: tl.constexpr, P: tl.constexpr, WORDS: tl.constexpr,
             EVEN: tl.constexpr):
    """Row ``n`` of B or C at positions t0 .. t0 + P - 1 as P ``[BLOCK_D]`` fp32 columns:
    variable, from a ``[BLOCK_D, P]`` tile that each thread loads whole (rows of one group share
    their addresses); constant, the channel's value ``held`` P times. ``WORDS`` (bf16 rows, even
    offsets and L): read as 32-bit words, each two values unpacked with one shift and one mask
    (the compiler's own conversion spends a byte permute more on every high half); ``ptr`` is
    then an int32 view of the rows, ``base`` and ``s2`` count words and ``Lw`` is L / 2."""
    return _bc_unpack(_bc_raw(ptr, base, n, s2, t0, mask_d, L, Lw, held, VAR, P, WORDS, EVEN), VAR, P, WORDS)


@triton.jit
def _bc_raw(ptr, base, n, s2, t0, mask_d, L, Lw, held, VAR: tl.constexpr, P: tl.constexpr, WORDS: tl.constexpr,
            EVEN: tl.constexpr):
    """`_bc_cols` before unpacking: the loaded tile (variable rows: words or values), or ``held``."""
    if VAR:
        if WORDS:
            offs_w = tl.arange(0, P // 2)
            tw = tl.multiple_of(t0 // 2, P // 2)
            mask = mask_d[:, None] & (tw + offs_w < Lw)[None, :]
            raw = _load_in(ptr + (base[:, None] + (n * s2 + tw + offs_w)[None, :]), mask, EVEN)
        else:
            offs_t = t0 + tl.arange(0, P)
            mask = mask_d[:, None] & (offs_t < L)[None, :]
            raw = _load_in(ptr + (base[:, None] + (n * s2 + offs_t)[None, :]), mask, EVEN)
    else:
        raw = held
    return raw


@triton.jit
def _bc_next(ptr, base, n, s2, t0, mask_d, L, Lw, VAR: tl.constexpr, P: tl.constexpr, WORDS: tl.constexpr,
             EVEN: tl.constexpr):
    """`_bc_raw` of row ``n``, a constant row's value loaded here."""
    held = tl.load(ptr + base + n * s2, mask=mask_d, other=0.0) if not VAR else None
    return _bc_raw(ptr, base, n, s2, t0, mask_d, L, Lw, held, VAR, P, WORDS, EVEN)


@triton.jit
def _bc_unpack(raw, VAR: tl.constexpr, P: tl.constexpr, WORDS: tl.constexpr):
    """The P fp32 columns of a `_bc_raw` tile."""
    if VAR:
        if WORDS:
            lo = _cols((raw << 16).to(tl.float32, bitcast=True))
            hi = _cols((raw & -65536).to(tl.float32, bitcast=True))
            out = ()
            for i in tl.static_range(P // 2):
                out = out + (lo[i], hi[i])
        else:
            out = _cols(raw.to(tl.float32))
    else:
        out = _cols_of(raw, VAR, P)
    return out


@triton.jit
def _thread_program(dim, L, BLOCK_D: tl.constexpr, P: tl.constexpr):
    """The program of a one-channel-per-thread kernel: (chunk k, batch row, channels, their mask,
    P position offsets, channel ids, row offsets into ``[B, D, L]``, batch row as int64). The
    grid is (channel blocks, chunks, batch): the programs of one chunk run side by side, so the
    rows of B and C (and, in the backward, the lines of dB and dC the atomic adds go to) they
    share are fetched into L2 once (see `_thread_grid`)."""
    k = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    chan = (pid_b * dim + offs_d).to(tl.int64)
    return k, pid_b, offs_d, offs_d < dim, tl.arange(0, P), chan, chan * L, pid_b.to(tl.int64)


@triton.jit
def _thread_dt(delta_ptr, io, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               FAST_MATH: tl.constexpr, EVEN: tl.constexpr):
    """(dt, raw) as fp32 ``[BLOCK_D, P]``: raw = delta (+ bias), dt = raw (-> softplus), 0 past L
    (so that a = 1)."""
    return _dt_from(_load_in(delta_ptr + io, mask, EVEN).to(tl.float32), mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH,
                    EVEN)


@triton.jit
def _dt_from(raw, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr,
             EVEN: tl.constexpr):
    """`_thread_dt` from delta as loaded, in fp32."""
    if HAS_BIAS:
        raw += bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw, FAST_MATH)
    if not EVEN:
        dt = tl.where(mask, dt, 0.0)
    return dt, raw


@triton.jit
def _thread_fwd_kernel(
    # pointers (hin: states entering each chunk; S, dtsum: the state-only pass's outputs; hsave:
    # the states entering every tile of the backward)
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, hin_ptr, y_ptr, last_ptr, S_ptr, dtsum_ptr,
    hsave_ptr,
    # dims (Lw: L // 2); positions per chunk; channels per group of B and C; z's batch stride
    # beyond dim * L; positions per backward tile and their count
    dim, L, Lw, n_chunks, chunk, group_b, group_c, z_extra, tile, n_tiles,
    # strides of B and C (real planar layout: batch, group, state; positions contiguous)
    sB0, sB1, sB2, sC0, sC1, sC2,
    # meta
    N: tl.constexpr, BLOCK_D: tl.constexpr, P: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_HIN: tl.constexpr, WRITE_LAST: tl.constexpr, STATE_ONLY: tl.constexpr, FAST_MATH: tl.constexpr,
    WORDS: tl.constexpr, EVEN: tl.constexpr, WRITE_STATES: tl.constexpr,
):
    """The forward of a real scan with one channel per thread: BLOCK_D channels of batch
    row ``program_id(2)``, chunk ``program_id(1)``. A thread keeps its channel's N states in
    registers and walks the chunk's positions one after another, P at a time (one 16-byte load
    of u, delta and z per P positions): per state element one exponential and four multiplies
    or multiply-adds; no shuffles and no reduction across threads (y sums the N states inside
    the thread). ``STATE_ONLY``: the chunk's end state from zero and its sum of dt (the
    ``[B, D, K, N, 1]`` / ``[B, D, K]`` format `_carry_kernel` reads); else the scan from
    ``hin`` (or zero), writing y, and the last chunk writes last_state; ``WRITE_STATES``: also
    the state entering every tile of ``tile`` positions (a multiple of P), ``[B, D, n_tiles, N,
    1]``, for the backward."""
    k, pid_b, offs_d, mask_d, offs_p, chan, row, pb = _thread_program(dim, L, BLOCK_D, P)
    state = (chan * n_chunks + k) * N
    b_base = _bc_base(pid_b, offs_d, sB0, sB1, group_b, VAR_B)
    c_base = _bc_base(pid_b, offs_d, sC0, sC1, group_c, VAR_C)
    As = ()
    hs = ()
    Bs = ()  # constant B and C: the channel's N values
    Cs = ()
    for n in tl.static_range(N):
        As = As + (tl.load(A_ptr + offs_d * N + n, mask=mask_d, other=0.0) * LOG2E,)
        if HAS_HIN:
            hs = hs + (tl.load(hin_ptr + state + n, mask=mask_d, other=0.0),)
        else:
            hs = hs + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        if not VAR_B:
            Bs = Bs + (tl.load(B_ptr + b_base + n * sB2, mask=mask_d, other=0.0),)
        if not VAR_C:
            Cs = Cs + (tl.load(C_ptr + c_base + n * sC2, mask=mask_d, other=0.0),)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0) if HAS_BIAS else None
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)
    dtsum = tl.zeros([BLOCK_D], dtype=tl.float32)
    start = k * chunk
    for t0 in range(start, tl.minimum(start + chunk, L), P):
        if WRITE_STATES:
            if t0 % tile == 0:
                t_off = (chan * n_tiles + t0 // tile) * N
                for n in tl.static_range(N):
                    tl.store(hsave_ptr + t_off + n, hs[n], mask=mask_d)
        offs_t = t0 + offs_p
        mask = mask_d[:, None] & (offs_t < L)[None, :]
        io = row[:, None] + offs_t[None, :]
        u = _load_in(u_ptr + io, mask, EVEN).to(tl.float32)
        dt, _ = _thread_dt(delta_ptr, io, mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH, EVEN)  # past L: h stays
        dt_cols = _cols(dt)
        dtu_cols = _cols(dt * u)
        if STATE_ONLY:
            dtsum += tl.sum(dt, axis=1)
        ys = ()
        new_hs = ()
        for n in tl.static_range(N):
            b_cols = _bc_cols(B_ptr, b_base, n, sB2, t0, mask_d, L, Lw, Bs[n] if not VAR_B else None, VAR_B, P, WORDS,
                              EVEN)
            h = hs[n]
            if STATE_ONLY:
                for j in tl.static_range(P):
                    h = tl.exp2(dt_cols[j] * As[n]) * h + dtu_cols[j] * b_cols[j]
            else:
                c_cols = _bc_cols(C_ptr, c_base, n, sC2, t0, mask_d, L, Lw, Cs[n] if not VAR_C else None, VAR_C, P,
                                  WORDS, EVEN)
                ys_n = ()
                for j in tl.static_range(P):
                    h = tl.exp2(dt_cols[j] * As[n]) * h + dtu_cols[j] * b_cols[j]
                    if n == 0:  # y starts from the first state's term (no zeroed registers)
                        ys_n = ys_n + (c_cols[j] * h,)
                    else:
                        ys_n = ys_n + (ys[j] + c_cols[j] * h,)
                ys = ys_n
            new_hs = new_hs + (h,)
        hs = new_hs
        if not STATE_ONLY:
            y = _from_cols(ys)
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                zt = _load_in(z_ptr + (io + pb * z_extra), mask, EVEN).to(tl.float32)
                y = y * zt * tl.sigmoid(zt)
            # y is written once and read by a later operation: streaming stores (.cs, evict first).
            # Forward alone on an H100, ms: (1, 256, 16, 2^20) bf16 4.59-4.62 -> 4.44-4.49,
            # (8, 1536, 16, 16384) 2.87-2.88 -> 2.80-2.81, (8, 1536, 16, 4096) 0.78 -> 0.75-0.76
            if EVEN:
                tl.store(y_ptr + io, y.to(y_ptr.dtype.element_ty), cache_modifier=".cs")
            else:
                tl.store(y_ptr + io, y.to(y_ptr.dtype.element_ty), mask=mask, cache_modifier=".cs")
    if STATE_ONLY:
        for n in tl.static_range(N):
            tl.store(S_ptr + state + n, hs[n], mask=mask_d)
        tl.store(dtsum_ptr + chan * n_chunks + k, dtsum, mask=mask_d)
    if WRITE_LAST:
        last_ok = mask_d & (k == n_chunks - 1)
        for n in tl.static_range(N):
            tl.store(last_ptr + chan * N + n, hs[n], mask=last_ok)


@triton.jit
def _thread_adjoint_kernel(
    # pointers
    delta_ptr, bias_ptr, A_ptr, C_ptr, z_ptr, dout_ptr, E_ptr, dtsum_ptr,
    # dims (Lw: L // 2); positions per chunk; channels per group of C; z's batch stride beyond
    # dim * L
    dim, L, Lw, n_chunks, chunk, group_c, z_extra,
    # strides of C (real planar layout)
    sC0, sC1, sC2,
    # meta
    N: tl.constexpr, BLOCK_D: tl.constexpr, P: tl.constexpr, VAR_C: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr, WORDS: tl.constexpr,
    EVEN: tl.constexpr,
):
    """`_chunk_adjoint_kernel` of a real scan with one channel per thread (as
    `_thread_fwd_kernel`): E_k = sum_t exp(A c_t) C_t dy_t (c_t the inclusive cumulative dt from
    the chunk's start, dy the gated output gradient) and the chunk's total dt, walking the
    chunk's positions backwards: G <- a_t (C_t dy_t + G), one exponential per state element."""
    k, pid_b, offs_d, mask_d, offs_p, chan, row, pb = _thread_program(dim, L, BLOCK_D, P)
    c_base = _bc_base(pid_b, offs_d, sC0, sC1, group_c, VAR_C)
    As = ()
    Gs = ()
    Cs = ()
    for n in tl.static_range(N):
        As = As + (tl.load(A_ptr + offs_d * N + n, mask=mask_d, other=0.0) * LOG2E,)
        Gs = Gs + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        if not VAR_C:
            Cs = Cs + (tl.load(C_ptr + c_base + n * sC2, mask=mask_d, other=0.0),)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0) if HAS_BIAS else None
    dtsum = tl.zeros([BLOCK_D], dtype=tl.float32)
    start = k * chunk
    n_loads = tl.cdiv(tl.minimum(start + chunk, L) - start, P)
    for i in range(0, n_loads):
        t0 = start + (n_loads - 1 - i) * P
        offs_t = t0 + offs_p
        mask = mask_d[:, None] & (offs_t < L)[None, :]
        io = row[:, None] + offs_t[None, :]
        dt, _ = _thread_dt(delta_ptr, io, mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH, EVEN)  # past L: G stays
        dy = _load_in(dout_ptr + io, mask, EVEN).to(tl.float32)
        if HAS_Z:
            zt = _load_in(z_ptr + (io + pb * z_extra), mask, EVEN).to(tl.float32)
            dy = dy * zt * tl.sigmoid(zt)
        dtsum += tl.sum(dt, axis=1)
        dt_cols = _cols(dt)
        dy_cols = _cols(dy)
        new_Gs = ()
        for n in tl.static_range(N):
            c_cols = _bc_cols(C_ptr, c_base, n, sC2, t0, mask_d, L, Lw, Cs[n] if not VAR_C else None, VAR_C, P,
                              WORDS, EVEN)
            g = Gs[n]
            for j in tl.static_range(P):
                g = tl.exp2(dt_cols[P - 1 - j] * As[n]) * (c_cols[P - 1 - j] * dy_cols[P - 1 - j] + g)
            new_Gs = new_Gs + (g,)
        Gs = new_Gs
    state = (chan * n_chunks + k) * N
    for n in tl.static_range(N):
        tl.store(E_ptr + state + n, Gs[n], mask=mask_d)
    tl.store(dtsum_ptr + chan * n_chunks + k, dtsum, mask=mask_d)


@triton.jit
def _thread_bwd_raw(u_ptr, delta_ptr, dout_ptr, z_ptr, row, t0, offs_p, mask_d, L, z_row, HAS_Z: tl.constexpr,
                    EVEN: tl.constexpr):
    """A per-thread backward's per-position inputs at positions t0 .. t0 + P - 1 (``offs_p``) of
    rows ``row``, as loaded (`_thread_bwd_convert` makes them fp32): (u, delta, dout, z), without z
    when there is no gate (the tuple is carried through a loop, which a None cannot be)."""
    offs_t = t0 + offs_p
    io = row[:, None] + offs_t[None, :]
    mask = mask_d[:, None] & (offs_t < L)[None, :]
    raws = (_load_in(u_ptr + io, mask, EVEN), _load_in(delta_ptr + io, mask, EVEN),
            tl.load(dout_ptr + io, mask=mask, other=0.0))
    if HAS_Z:
        raws = raws + (tl.load(z_ptr + z_row + io, mask=mask, other=0.0),)
    return raws


@triton.jit
def _thread_bwd_convert(raws, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
                        FAST_MATH: tl.constexpr, EVEN: tl.constexpr):
    """A per-thread backward's per-position inputs on ``[BLOCK_D, P]`` from `_thread_bwd_raw`'s
    loads, fp32: (u, raw delta (+ bias), dt (0 past L: a = 1, no input), dout, z, sigmoid(z), dy)
    as `_gated_dout` gives them."""
    u = raws[0].to(tl.float32)
    dt, raw = _dt_from(raws[1].to(tl.float32), mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH, EVEN)
    dout, zt, sig, dy = _gated_from(raws[2].to(tl.float32), raws[3] if HAS_Z else None, HAS_Z)
    return u, raw, dt, dout, zt, sig, dy


@triton.jit
def _thread_bwd_state(h, g_next, dA, A_n, b_cols, c_cols, dt_cols, dtu_cols, dy_cols, ys, gBs, gAws,
                      NEED_Y: tl.constexpr, P: tl.constexpr):
    """One state index of a per-thread backward over P positions: h forward from the state
    entering them (keeping w = a h_prev and a), then the adjoint g_t = C_t dy_t + a_{t+1} g_{t+1}
    backward from ``g_next`` (the adjoint arriving from the positions after them). Returns the
    adjoint leaving the first position, dA + sum_t dt g w, the per-position sums over states so
    far (y's C h when ``NEED_Y``, g B, A g w with A in log2 units), and this index's dB and dC
    columns (g dt u, dy h) before their sums over channels."""
    a_s = ()
    ws = ()
    dC_cols = ()
    ys_n = ()
    for j in tl.static_range(P):
        a = tl.exp2(dt_cols[j] * A_n)
        w = a * h
        h = w + dtu_cols[j] * b_cols[j]
        a_s = a_s + (a,)
        ws = ws + (w,)
        dC_cols = dC_cols + (h * dy_cols[j],)
        if NEED_Y:
            ys_n = ys_n + (ys[j] + c_cols[j] * h,)
    if NEED_Y:
        ys = ys_n
    dB_cols = ()
    gBs_n = ()
    gAws_n = ()
    for j in tl.static_range(P - 1, -1, -1):
        g = c_cols[j] * dy_cols[j] + g_next
        dB_cols = (g * dtu_cols[j],) + dB_cols
        gw = g * ws[j]
        dA += dt_cols[j] * gw
        gBs_n = (gBs[j] + g * b_cols[j],) + gBs_n
        gAws_n = (gAws[j] + A_n * gw,) + gAws_n
        g_next = a_s[j] * g
    return g_next, dA, ys, gBs_n, gAws_n, dB_cols, dC_cols


@triton.jit
def _thread_bwd_loads(s_h, s_g, s_a, A_ptr, B_ptr, C_ptr, b_base, c_base, offs_d, mask_d, n, sB2, sC2, t0, L, Lw,
                      N: tl.constexpr, BLOCK_D: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
                      P: tl.constexpr, WORDS: tl.constexpr, EVEN: tl.constexpr):
    """What state index n of a per-thread backward's P positions reads: (the state entering
    them, the adjoint and the dA sum carried from the positions after them, A[:, n], the rows of B
    and C as loaded). `_thread_bwd_kernel` asks for them RING - 1 indices ahead. The adjoint and dA
    sums, read again at the next P positions, are loaded to be evicted last: measured on an H100,
    whole backward, GPU time, ms, one index ahead without -> with that policy -> two indices
    ahead: (1, 256, 16, 2^20) bf16 16.93 -> 15.95 -> 15.79-15.88 (its main kernel 14.83 -> 13.64
    -> 13.45-13.56), (8, 1536, 16, 16384) 10.97 -> 10.64 -> 10.36."""
    h = tl.load(s_h + n * BLOCK_D)
    g = tl.load(s_g + n * BLOCK_D, eviction_policy="evict_last")
    dA = tl.load(s_a + n * BLOCK_D, eviction_policy="evict_last")
    A_n = tl.load(A_ptr + offs_d * N + n, mask=mask_d, other=0.0)
    raw_b = _bc_next(B_ptr, b_base, n, sB2, t0, mask_d, L, Lw, VAR_B, P, WORDS, EVEN)
    raw_c = _bc_next(C_ptr, c_base, n, sC2, t0, mask_d, L, Lw, VAR_C, P, WORDS, EVEN)
    return h, g, dA, A_n, raw_b, raw_c


@triton.jit
def _lane_id(like):
    """The hardware lane of the thread holding each element of ``like`` (an int32 tensor)."""
    return tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [like], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _shfl_xor(x, off):
    """x of lane (own lane xor ``off``) for fp32 x (``shfl.sync.bfly``; the whole warp takes part)."""
    y = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, $2, 0x1f, 0xffffffff;", "=r,r,r",
                                  [x.to(tl.int32, bitcast=True), off], dtype=tl.int32, is_pure=True, pack=1)
    return y.to(tl.float32, bitcast=True)


@triton.jit
def _scatter_step(vals, lane, OFF: tl.constexpr, C: tl.constexpr):
    """One step of a reduce-scatter across a warp: of the C values a thread holds, the lanes with
    bit ``OFF`` set keep the upper half, the others the lower, each adding its partner's (lane xor
    OFF) copy of the half it keeps: C / 2 shuffles. With C < 2, the one value is summed with the
    partner's."""
    off = tl.full(lane.shape, OFF, tl.int32)
    if C >= 2:
        hi = (lane & OFF) != 0
        out = ()
        for i in tl.static_range(C // 2):
            a = vals[i]
            b = vals[C // 2 + i]
            out = out + (tl.where(hi, b, a) + _shfl_xor(tl.where(hi, a, b), off),)
    else:
        out = (vals[0] + _shfl_xor(vals[0], off),)
    return out


@triton.jit
def _reduce_scatter(vals, lane, V: tl.constexpr):
    """The sums over a warp's 32 lanes of V values per thread (V a power of two, at most 32):
    lane l ends with the sum of value l // (32 // V). 31 shuffles for 32 values where a sum per
    value (``tl.sum``) costs 5 each, and about half the instructions."""
    v = _scatter_step(vals, lane, 16, V)
    v = _scatter_step(v, lane, 8, V // 2)
    v = _scatter_step(v, lane, 4, V // 4)
    v = _scatter_step(v, lane, 2, V // 8)
    v = _scatter_step(v, lane, 1, V // 16)
    return v[0]


@triton.jit
def _thread_bc_grads(dB_cols, dC_cols, n, dB_ptr, dC_ptr, gb_base, gB2, gc_base, gC2, t0, offs_t, L, s_b, s_c,
                     lane, BLOCK_D: tl.constexpr, P: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
                     SHFL: tl.constexpr):
    """Add state index n's dB and dC columns of a per-thread backward: variable, summed over the
    program's channels (across the threads) and added to the gradient rows at ``offs_t``;
    constant, summed over the positions into the channel's scratch sums ``s_b`` / ``s_c``.
    ``SHFL`` (one-warp programs, compiled): the variable sums as one reduce-scatter across the
    warp (`_reduce_scatter`), then one atomic add per lane pair, in place of a ``tl.sum`` per
    value (5 shuffles and 5 adds each)."""
    if SHFL and (VAR_B or VAR_C):
        tl.static_assert(BLOCK_D == 32 and 32 % (2 * P) == 0, "the reduce-scatter needs one-warp programs")
        # the variable columns, dB's first: value i is position i % P of dB (i < P) or dC
        vals = (dB_cols if VAR_B else ()) + (dC_cols if VAR_C else ())
        V: tl.constexpr = (VAR_B + VAR_C) * P
        tot = _reduce_scatter(vals, lane, V)
        idx = lane // (32 // V)
        # state index n's gradient rows, formed after the reduce (earlier, the compiler schedules
        # the kernel differently)
        row_b = dB_ptr + gb_base + n * gB2
        row_c = dC_ptr + gc_base + n * gC2
        if VAR_B and VAR_C:
            t = t0 + idx % P
            ptr = tl.where(idx < P, row_b + t, row_c + t)
        else:
            t = t0 + idx
            ptr = (row_b if VAR_B else row_c) + t
        tl.atomic_add(ptr, tot, mask=(lane % (32 // V) == 0) & (t < L), sem="relaxed")
    else:
        row_b = dB_ptr + gb_base + n * gB2
        row_c = dC_ptr + gc_base + n * gC2
        if VAR_B:
            tl.atomic_add(row_b + offs_t, tl.sum(_from_cols(dB_cols), axis=0), mask=offs_t < L, sem="relaxed")
        if VAR_C:
            tl.atomic_add(row_c + offs_t, tl.sum(_from_cols(dC_cols), axis=0), mask=offs_t < L, sem="relaxed")
    if not VAR_B:
        tl.store(s_b + n * BLOCK_D, tl.load(s_b + n * BLOCK_D) + tl.sum(_from_cols(dB_cols), axis=1))
    if not VAR_C:
        tl.store(s_c + n * BLOCK_D, tl.load(s_c + n * BLOCK_D) + tl.sum(_from_cols(dC_cols), axis=1))


@triton.jit
def _thread_bwd_index(ld, m, dt_cols, dtu_cols, dy_cols, ys, gBs, gAws, s_g, s_a, s_b, s_c, dB_ptr, dC_ptr,
                      gb_base, gB2, gc_base, gC2, t0, offs_t, L, lane, NEED_Y: tl.constexpr, BLOCK_D: tl.constexpr,
                      P: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, WORDS: tl.constexpr,
                      SHFL: tl.constexpr):
    """State index m of a per-thread backward's P positions from what `_thread_bwd_loads` read
    for it (``ld``): `_thread_bwd_state`, the adjoint and dA sums back to the scratch, the dB and
    dC columns summed over the channels and added; returns the per-position sums over states."""
    h, g_next, dA, A_n, raw_b, raw_c = ld
    b_cols = _bc_unpack(raw_b, VAR_B, P, WORDS)
    c_cols = _bc_unpack(raw_c, VAR_C, P, WORDS)
    g_next, dA, ys, gBs, gAws, dB_cols, dC_cols = _thread_bwd_state(
        h, g_next, dA, A_n * LOG2E, b_cols, c_cols, dt_cols, dtu_cols, dy_cols, ys, gBs, gAws, NEED_Y, P)
    tl.store(s_g + m * BLOCK_D, g_next)
    tl.store(s_a + m * BLOCK_D, dA)
    _thread_bc_grads(dB_cols, dC_cols, m, dB_ptr, dC_ptr, gb_base, gB2, gc_base, gC2, t0, offs_t, L, s_b, s_c, lane,
                     BLOCK_D, P, VAR_B, VAR_C, SHFL)
    return ys, gBs, gAws


@triton.jit
def _thread_bwd_kernel(
    # pointers: inputs (hin: the states entering every tile, as the forward saved them; cin: the
    # adjoint entering each chunk's end); scratch: per program, the states entering every P
    # positions of its current tile, then the adjoints and dA sums carried from one P positions
    # to the previous
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dout_ptr, hin_ptr, cin_ptr, scratch_ptr,
    # pointers: outputs (du, ddelta, dz, y in their input dtypes; the rest fp32 accumulators)
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr, y_ptr,
    # dims (Lw: L // 2); positions per chunk and per tile, tiles per row; channels per group of B
    # and C; partial-sum rows; the batch strides of z and dz beyond dim * L
    dim, L, Lw, n_chunks, chunk, tile, n_tiles, group_b, group_c, n_slots, z_extra, dz_extra,
    # strides of B and C as read (in words with WORDS), and of their fp32 gradient buffers
    sB0, sB1, sB2, sC0, sC1, sC2, gB0, gB1, gB2, gC0, gC1, gC2,
    # meta
    N: tl.constexpr, BLOCK_D: tl.constexpr, P: tl.constexpr, VAR_B: tl.constexpr,
    VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr, HAS_CIN: tl.constexpr, WRITE_DINIT: tl.constexpr,
    WRITE_Y: tl.constexpr, FAST_MATH: tl.constexpr, WORDS: tl.constexpr, EVEN: tl.constexpr, SHFL: tl.constexpr,
    RING: tl.constexpr,
):
    """The backward of a real scan with one channel per thread (as `_thread_fwd_kernel`):
    BLOCK_D channels of batch row ``program_id(2)``, chunk ``program_id(1)``, its tiles from
    last to first. Per tile, a first walk from the saved state writes the state entering every P
    positions to the program's scratch; then per P positions, last first, and per state index (a
    runtime loop, `_thread_bwd_state`): h forward from its scratch state, the adjoint backward,
    the gradients. The adjoint and dA sums of each state index wait in the scratch between P
    positions. dB and dC at each position sum over the program's channels (``SHFL``: one
    reduce-scatter of shuffles per state index; else ``tl.sum`` across the threads) into one
    atomic add per position and program; the sums over N (du, d delta, y) stay inside the
    thread."""
    k, pid_b, offs_d, mask_d, offs_p, chan, row, pb = _thread_program(dim, L, BLOCK_D, P)
    b_base = _bc_base(pid_b, offs_d, sB0, sB1, group_b, VAR_B)
    c_base = _bc_base(pid_b, offs_d, sC0, sC1, group_c, VAR_C)
    # variable B / C: a program's channels share one group (see _bwd_per_thread)
    d0 = tl.program_id(0) * BLOCK_D
    gb_base = pb * gB0 + (d0 // group_b).to(tl.int64) * gB1
    gc_base = pb * gC0 + (d0 // group_c).to(tl.int64) * gC1
    lanes = tl.arange(0, BLOCK_D)
    lane = _lane_id(lanes) if SHFL else lanes
    prog = (pid_b * tl.num_programs(0) + tl.program_id(0)).to(tl.int64) * n_chunks + k
    # scratch per program: [tile / P, N, BLOCK_D] states, then [N, BLOCK_D] each of the adjoint,
    # dA and (constant B / C) dB and dC sums
    s_h = scratch_ptr + prog * (tile // P + 4) * (N * BLOCK_D) + lanes
    s_g = s_h + (tile // P) * (N * BLOCK_D)
    s_a = s_g + N * BLOCK_D
    s_b = s_a + N * BLOCK_D
    s_c = s_b + N * BLOCK_D
    zero = tl.zeros([BLOCK_D], dtype=tl.float32)
    for n in tl.static_range(N):
        g0 = zero
        if HAS_CIN:
            g0 = tl.load(cin_ptr + (chan * n_chunks + k) * N + n, mask=mask_d, other=0.0)
        tl.store(s_g + n * BLOCK_D, g0)
        tl.store(s_a + n * BLOCK_D, zero)
        tl.store(s_b + n * BLOCK_D, zero)
        tl.store(s_c + n * BLOCK_D, zero)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0) if HAS_BIAS else None
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)[:, None]
    acc_dD = zero
    acc_dbias = zero
    start = k * chunk
    n_t = tl.cdiv(tl.minimum(start + chunk, L) - start, tile)
    for it in range(0, n_t):
        tt = start // tile + n_t - 1 - it
        t_begin = tt * tile
        n_blk = tl.cdiv(tl.minimum(t_begin + tile, L) - t_begin, P)
        # the states entering every P positions of the tile, from the one entering it
        hs = ()
        As = ()
        for n in tl.static_range(N):
            As = As + (tl.load(A_ptr + offs_d * N + n, mask=mask_d, other=0.0) * LOG2E,)
            if HAS_HIN:
                hs = hs + (tl.load(hin_ptr + (chan * n_tiles + tt) * N + n, mask=mask_d, other=0.0),)
            else:
                hs = hs + (zero,)
        for bi in range(0, n_blk):
            for n in tl.static_range(N):
                tl.store(s_h + (bi * N + n) * BLOCK_D, hs[n])
            if bi < n_blk - 1:
                offs_t = t_begin + bi * P + offs_p
                mask = mask_d[:, None] & (offs_t < L)[None, :]
                io = row[:, None] + offs_t[None, :]
                u = _load_in(u_ptr + io, mask, EVEN).to(tl.float32)
                dt, _ = _thread_dt(delta_ptr, io, mask, bias, HAS_BIAS, SOFTPLUS, FAST_MATH, EVEN)
                dt_cols = _cols(dt)
                dtu_cols = _cols(dt * u)
                new_hs = ()
                for n in tl.static_range(N):
                    held = tl.load(B_ptr + b_base + n * sB2, mask=mask_d, other=0.0) if not VAR_B else None
                    b_cols = _bc_cols(B_ptr, b_base, n, sB2, t_begin + bi * P, mask_d, L, Lw, held, VAR_B, P, WORDS,
                                      EVEN)
                    h = hs[n]
                    for j in tl.static_range(P):
                        h = tl.exp2(dt_cols[j] * As[n]) * h + dtu_cols[j] * b_cols[j]
                    new_hs = new_hs + (h,)
                hs = new_hs
        # the tile's positions, P at a time, last first; each P positions' inputs are loaded
        # while the P positions after them are worked on
        nx_in = _thread_bwd_raw(u_ptr, delta_ptr, dout_ptr, z_ptr, row, t_begin + (n_blk - 1) * P, offs_p, mask_d,
                                L, pb * z_extra, HAS_Z, EVEN)
        for bj in range(0, n_blk):
            bi = n_blk - 1 - bj
            t0 = t_begin + bi * P
            offs_t = t0 + offs_p
            mask = mask_d[:, None] & (offs_t < L)[None, :]
            io = row[:, None] + offs_t[None, :]
            raws = nx_in
            # (the first P positions load themselves again, unused)
            nx_in = _thread_bwd_raw(u_ptr, delta_ptr, dout_ptr, z_ptr, row, t_begin + tl.maximum(bi - 1, 0) * P,
                                    offs_p, mask_d, L, pb * z_extra, HAS_Z, EVEN)
            u, raw, dt, dout, zt, sig, dy = _thread_bwd_convert(raws, mask, bias, HAS_BIAS, SOFTPLUS, HAS_Z,
                                                                FAST_MATH, EVEN)
            dt_cols = _cols(dt)
            dtu_cols = _cols(dt * u)
            dy_cols = _cols(dy)
            # per position: sum_n C h (for dz and y), sum_n g B, sum_n A g w (A in log2 units)
            ys = _cols(tl.zeros([BLOCK_D, P], dtype=tl.float32))
            gBs = ys
            gAws = ys
            # one state index at a time; what each index reads (its scratch values, A, the rows of
            # B and C) is loaded RING - 1 indices ahead (see _thread_bwd_loads), into a ring of
            # RING loads: each refilled as soon as its index is done, so nothing is copied between
            # registers at the loop's back edge
            s_hb = s_h + (bi * N) * BLOCK_D
            xs = ()
            for r in tl.static_range(RING):
                xs = xs + (_thread_bwd_loads(s_hb, s_g, s_a, A_ptr, B_ptr, C_ptr, b_base, c_base, offs_d, mask_d,
                                             tl.minimum(r, N - 1), sB2, sC2, t0, L, Lw, N, BLOCK_D, VAR_B, VAR_C, P,
                                             WORDS, EVEN),)
            for m in range(0, N - N % RING, RING):
                for r in tl.static_range(RING):
                    ys, gBs, gAws = _thread_bwd_index(
                        xs[0], m + r, dt_cols, dtu_cols, dy_cols, ys, gBs, gAws, s_g, s_a, s_b, s_c, dB_ptr, dC_ptr,
                        gb_base, gB2, gc_base, gC2, t0, offs_t, L, lane, HAS_Z or WRITE_Y, BLOCK_D, P, VAR_B,
                        VAR_C, WORDS, SHFL)
                    # (the last indices load what they have, unused)
                    xs = xs[1:] + (_thread_bwd_loads(s_hb, s_g, s_a, A_ptr, B_ptr, C_ptr, b_base, c_base, offs_d,
                                                     mask_d, tl.minimum(m + r + RING, N - 1), sB2, sC2, t0, L, Lw,
                                                     N, BLOCK_D, VAR_B, VAR_C, P, WORDS, EVEN),)
            # the last N % RING indices, which the ring holds in order now
            for r in tl.static_range(N % RING):
                ys, gBs, gAws = _thread_bwd_index(
                    xs[r], N - N % RING + r, dt_cols, dtu_cols, dy_cols, ys, gBs, gAws, s_g, s_a, s_b, s_c, dB_ptr,
                    dC_ptr, gb_base, gB2, gc_base, gC2, t0, offs_t, L, lane, HAS_Z or WRITE_Y, BLOCK_D, P, VAR_B,
                    VAR_C, WORDS, SHFL)
            y = 0.0
            if HAS_Z or WRITE_Y:
                y = _from_cols(ys)
            blk_dD, blk_dbias = _position_grads(
                y, _from_cols(gBs), _from_cols(gAws) * LN2, u, dt, raw, dout, dy, zt, sig, Dv, io, mask,
                pb * dz_extra, dz_ptr, y_ptr, du_ptr, ddelta_ptr, 0.0, 0.0, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS,
                WRITE_Y)
            if HAS_D:
                acc_dD += tl.sum(blk_dD, axis=1)
            if HAS_BIAS:
                acc_dbias += tl.sum(blk_dbias, axis=1)

    # per-channel sums: one atomic add per program into partial row ``slot`` (torch sums rows)
    slot = (pid_b * n_chunks + k) % n_slots
    p_off = (slot * dim + offs_d).to(tl.int64) * N
    for n in tl.static_range(N):
        tl.atomic_add(dA_ptr + p_off + n, tl.load(s_a + n * BLOCK_D), mask=mask_d, sem="relaxed")
        if not VAR_B:
            tl.atomic_add(dB_ptr + p_off + n, tl.load(s_b + n * BLOCK_D), mask=mask_d, sem="relaxed")
        if not VAR_C:
            tl.atomic_add(dC_ptr + p_off + n, tl.load(s_c + n * BLOCK_D), mask=mask_d, sem="relaxed")
        if WRITE_DINIT:
            tl.store(dinit_ptr + chan * N + n, tl.load(s_g + n * BLOCK_D), mask=mask_d & (k == 0))
    if HAS_D:
        tl.atomic_add(dD_ptr + slot * dim + offs_d, acc_dD, mask=mask_d, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + slot * dim + offs_d, acc_dbias, mask=mask_d, sem="relaxed")


# --------------------------------------------------------------------------------------------
# Host launchers
# --------------------------------------------------------------------------------------------

# Partial-sum rows for the gradients summed over batch and chunks (A, D, delta_bias, constant
# B/C): programs add into row (b * K + k) % _N_SLOTS, spreading atomic contention; torch sums rows.
_N_SLOTS = 32
# Scan kernels: one warp per program; positions per tile: 128 (4 per thread), and 256 (8 per
# thread) for a real forward alone with one chunk per row. Measured on an H100 (forward alone,
# no tile states, 256 / 128): real bf16 (8, 1536, 16, 4096) 1.44 / 1.63 ms, (8, 1536, 16, 16384)
# 4.81 / 5.76, (64, 512, 16, 1024) 0.85 / 1.04, real fp32 (16, 128, 16, 16000) 1.73 / 1.73;
# but complex (8, 1536, 16, 4096) 4.87 / 4.11, complex fp32 (16, 128, 16, 16000) 4.87 / 3.09 and
# the chunked (1, 256, 16, 2^20) 12.68 / 11.87. When a backward follows, 128 (the backward's
# registers fit it: 256 cost 5.81 against 4.22 ms of backward at the first shape). On the
# interpreter (CPU tests) tiles are 16 positions, so a test's chunks hold several.
_FWD_WARPS = 1
_BWD_WARPS = 1
_SCAN_TILE = {False: 256, True: 128}  # by "a backward follows" (256: one chunk per row, see _wide_tiles)
_SCAN_TILE_INTERPRETER = 16
# State indices per iteration of the loop over N: two in the forward (independent scans
# interleave: 1.77 -> 1.59 ms at the shape above), one in the backward (two cost registers).
_FWD_N_UNROLL = 2
_BWD_N_UNROLL = 1
# Real scans load the next state index's B and C rows while the current one is scanned
# (measured on an H100, forward / backward ms without -> with: (8, 1536, 16, 4096) bf16 1.36-1.54
# / 4.37-4.55 -> 1.28 / 4.14-4.27, (64, 512, 16, 1024) 0.95 / 2.75-2.79 -> 0.78 / 2.79-2.82, real
# fp32 (16, 128, 16, 16000) 1.61 / 2.79-2.89 -> 1.04-1.09 / 2.86-2.92, 2^20 chunked 11.6-11.9 /
# 24.6-24.8 -> 12.1-12.5 / 23.1-23.4). Complex scans do not: the held rows cost registers (160 ->
# 208 in the backward) and the complex bf16 backward went 10.9-11.1 -> 11.4-11.7 ms.
_PREFETCH = True
# A real training forward with one chunk per row runs on tiles of 2 x 128 positions, saving the
# state at each tile's middle too, so the backward keeps its 128-position tiles.
_FWD_SPLIT = True
# Scans with 16-bit inputs take the hardware approximations: cos / sin in complex scans (see
# _cos_sin), the log of softplus in the two-pass forward (see _softplus). The forward's cos / sin
# are the approximations for fp32 inputs too: there the scan's own float32 rounding dominates
# the error. Complex fp32 at (16, 128, 16, L) on an H100, max |x - x64| / max |x64| against a
# float64 scan at L = 4000, accurate -> approximate forward: y 2.2e-6 -> 2.3e-6, dA 4.0e-6 ->
# 3.9e-6, the other gradients within 0.1e-6 of their own; ms at L = 16000, whole calls: forward
# alone 3.09 -> 1.95-2.00 (on the wide tiles it allows), training forward 2.95 -> 2.32.
_FAST_MATH = True
# The forward alone of a real scan with 16-bit inputs over one chunk per row runs in two passes
# per thread (_scan2_fwd_kernel), capped at 96 registers; everything else on _scan1_fwd_kernel.
# Measured on an H100 under Nsight Compute's fixed clocks, forward alone, ms, scan1 / two-pass
# uncapped / capped at 96 / at 128: (8, 1536, 16, 4096) bf16 1.173 / 1.025 / 0.969 / 1.047;
# (8, 1536, 16, 16384) 4.50 / 3.92 / 3.65 / 3.99; (64, 512, 16, 1024) 0.693 / 0.594 / 0.623 /
# 0.624; real fp32 (16, 128, 16, 16000) 1.03 / 1.78 / 1.04 / 0.99 (its rows span two threads).
# "auto" applies that rule; True or False forces the choice (tests).
_FWD_TWO_PASS = "auto"
_FWD_MAXNREG = 96
# The backward runs in two passes per thread (_scan2_bwd_kernel) over one chunk per row, on
# _scan1_bwd_kernel when the rows are split into chunks. Measured on an H100, bwd column of
# benchmarks.selective_scan (training forward + backward minus forward alone, GPU time), version
# 4 -> two passes, two runs each: (8, 1536, 16, 4096) bf16 3.75-3.76 -> 3.37-3.39 ms;
# (8, 1536, 16, 16384) 14.97-14.98 -> 13.85-13.89; complex bf16 (8, 1536, 16, 4096) 7.99 -> 6.68;
# complex fp32 (16, 128, 16, 16000) 9.34-9.35 -> 5.46-5.48; real fp32 2.27 -> 2.11;
# (64, 512, 16, 1024) 2.46-2.47 -> 2.28-2.29; but chunked, (1, 256, 16, 2^20), 21.8-21.9 ->
# 26.5-26.9. "auto" applies that rule; True or False force it (tests).
_BWD_TWO_PASS = "auto"
_BWD_MAXNREG = None

# Real forwards (alone, or saving tile states for a backward) run with one channel per thread
# (_thread_fwd_kernel) for 16-bit inputs, and for fp32 ones when the rows are split into chunks;
# programs of _THREAD_WARPS warps.
# Rows stay whole while the grid has _THREAD_ONE_CHUNK warps per SM; else chunks (a state-only
# pass, the carry, the scan) are halved from the whole row until it has _THREAD_PER_SM warps per
# SM, down to _THREAD_MIN_CHUNK positions. Measured on an H100, forward alone, ms, the previous
# kernels -> one chunk / chunked for 24 warps per SM: (8, 1536, 16, 4096) bf16 (2.9 warps per SM
# with whole rows) 0.860 -> 0.948 / 0.761; (8, 1536, 16, 16384) 3.28 -> 3.82 / 2.88;
# (64, 512, 16, 1024) (7.8 warps per SM) 0.561 -> 0.324 / 0.505; (1, 256, 16, 2^20) 10.96 -> - /
# 4.58; but real fp32 (16, 128, 16, 16000) 0.918 -> 11.9 / 1.24 (0.99 at 8 warps per SM). Training
# steps (forward saving tile states + backward), ms: 4.24 -> 4.21, 17.11 -> 16.57, 2.79 -> 2.57 and
# 32.91 -> 26.93 at 2^20. "auto" applies that rule; True forces it wherever it applies (real
# scans with at most _THREAD_MAX_N states: they live in registers), False never.
_FWD_PER_THREAD = "auto"
_THREAD_WARPS = 2
_THREAD_ONE_CHUNK = 6
_THREAD_PER_SM = 24
_THREAD_MIN_CHUNK = 256
_THREAD_MAX_N = 16
# Chunks per row of the one-channel-per-thread kernels: the grid's second axis holds at most
# 65,535, and the backward's chunk adjoints run over chunks up to _THREAD_ADJ_FINE times finer.
_GRID_Y = 65535
_MAX_CHUNKS = _GRID_Y // 2
_THREAD_WORDS = True
# The backward of chunked rows starts from the adjoint entering each chunk's end. For real scans
# with 16-bit inputs and at most _THREAD_MAX_N states its first pass (each chunk's own part, E_k)
# runs with one channel per thread (_thread_adjoint_kernel) over chunks of the forward's length
# (finer than the backward's; the reverse carry runs over them and the backward reads every
# m-th). At (1, 256, 16, 2^20) bf16, one profiled backward: 4.36 ms (_chunk_adjoint_kernel) ->
# 2.35 + 0.22 ms of carry. "auto" applies that rule, True forces it for every real scan, False
# never; _THREAD_ADJ_SPLIT (tests) forces m.
_BWD_PER_THREAD_ADJOINT = "auto"
_THREAD_ADJ_SPLIT = None
# The per-thread backward runs its chunk adjoints over chunks _THREAD_ADJ_FINE times finer than
# its own (at least _THREAD_MIN_CHUNK positions each), the reverse carry over those: at (1, 256,
# 16, 2^20) bf16, 512 -> 1024 chunks, the adjoint pass 2.39 -> 2.04 ms, its carry 0.05 -> 0.11,
# the whole backward 18.44 -> 18.06-18.09 ms (4 times finer: 2.12 + 0.21, 18.24).
_THREAD_ADJ_FINE = 2
# The whole backward of a real scan with one channel per thread (_thread_bwd_kernel, programs of
# one warp, P positions per step, None: 16 bytes of the input dtype) for 16-bit inputs. Its
# variable dB / dC are summed over the warp's channels by a reduce-scatter of shuffles
# (_THREAD_BWD_SHFL; ``tl.sum`` per value without it, and on the interpreter). Measured on an
# H100, whole backward (chunk adjoints included), GPU time, ms, tile backward -> per-thread with
# tl.sum -> with the reduce-scatter: (1, 256, 16, 2^20) bf16 20.8 -> 23.3-23.4 -> 19.3;
# (8, 1536, 16, 4096) 3.68 -> 3.87-3.92 -> 3.20-3.24; (8, 1536, 16, 16384) 14.2 -> 14.3 -> 11.8;
# (64, 512, 16, 1024) 2.62 -> 2.60-2.75 -> 2.18-2.35; but real fp32 (16, 128, 16, 16000) 2.43 ->
# 5.48 -> 5.28-5.36, so fp32 keeps the tile backward. Earlier variants: the state loop unrolled
# (all per-state values in registers: 255 registers and spills) 21.2 -> 32.5 at 2^20; P = 4 about
# twice as slow as P = 8. "auto" applies that rule, True forces it wherever the groups allow,
# False never.
_BWD_PER_THREAD = "auto"
_THREAD_BWD_WARPS = 1
_THREAD_BWD_P = None
_THREAD_BWD_SHFL = True
# The per-thread backward's state loop takes RING state indices per iteration, each index's loads
# refilled into a ring of RING sets as soon as it is done: RING - 1 indices ahead with no register
# copy at the back edge (N % RING indices after the loop). Measured on an H100, whole backward,
# GPU time, ms, two ahead through a rotation of two sets (it compiled to a copy at each index's
# top, which waited on the loads) -> ring of 3 -> ring of 4: (1, 256, 16, 2^20) bf16 14.25-14.26 ->
# 13.40-13.53 -> 13.31 (the kernel 12.04 -> 11.20 -> 10.94), (8, 1536, 16, 16384) 10.18 -> 9.63
# -> 9.51, (8, 1536, 16, 4096) 2.72 -> 2.56 (ring of 3), (64, 512, 16, 1024) 1.52 -> 1.41 -> 1.39;
# 248 -> 255 registers, no spills.
_THREAD_BWD_RING = 4


def _two_pass(is_complex: bool, u: Tensor, write_states: bool, plan) -> bool:
    if _FWD_TWO_PASS != "auto":
        return bool(_FWD_TWO_PASS)
    return not is_complex and u.element_size() == 2 and not write_states and plan.n_chunks == 1


def _per_thread(is_complex: bool, u: Tensor, dstate: int, plan) -> bool:
    """Whether `_fwd` runs on `_thread_fwd_kernel` (see _FWD_PER_THREAD)."""
    if is_complex or dstate > _THREAD_MAX_N or _FWD_PER_THREAD is False:
        return False
    return _FWD_PER_THREAD is True or u.element_size() == 2 or plan.n_chunks > 1


def _bf16_words(rows, L: int, P: int) -> bool:
    """Whether the variable ones of ``rows`` (B / C as `_prep_bc` returns them) can be read as
    32-bit words of two bf16 values: bf16, even strides and L, at least two positions per load
    (constant B / C are fp32 and not read so)."""
    var_rows = [(t, st) for t, var, _, st in rows if var]
    return (_THREAD_WORDS and P >= 2 and L % 2 == 0 and bool(var_rows)
            and all(t.dtype == torch.bfloat16 and all(x % 2 == 0 for x in st[:3]) for t, st in var_rows))


def _thread_rows(rows, words: bool) -> list:
    """(tensor, its three strides) per B / C of ``rows`` as `_thread_fwd_kernel` and
    `_thread_adjoint_kernel` read them: with ``words``, int32 views of the variable rows and
    their strides in words."""
    out = []
    for t, var, _, st in rows:
        halve = words and var
        out.append((t.view(torch.int32) if halve else t, [x // 2 if halve else x for x in st[:3]]))
    return out


def _thread_grid(chunks: int, dblocks: int, batch: int) -> tuple:
    """The grid of a one-channel-per-thread kernel (see `_thread_program`): channel blocks first.
    Measured on an H100 against chunks first, GPU time, ms, (1, 256, 16, 2^20) bf16 (8 channel
    blocks, 512 chunks): backward 15.79 -> 14.46 (its main kernel 13.51 -> 12.25, the chunk
    adjoints 2.04 -> 1.97), forward 4.29 -> 4.19; (8, 1536, 16, 16384) and (8, 1536, 16, 4096)
    within 1%. (A flat grid of chunks x channel blocks, which has no limit on chunks, made the
    forwards slower: (64, 512, 16, 1024) 0.32 -> 0.51 ms, 2^20 4.16 -> 4.46.) `_thread_chunk`
    keeps the chunks within the grid's second axis (_MAX_CHUNKS)."""
    assert chunks <= _GRID_Y and batch <= _GRID_Y, (chunks, batch)
    return (dblocks, chunks, batch)


def _thread_chunk(batch: int, dim: int, L: int, P: int, chunk_len: int | None, dev: torch.device) -> int:
    """Positions per chunk of the one-channel-per-thread forward: ``chunk_len`` when given (at
    least P); else the whole row (rounded up to a power of two) when the grid has
    _THREAD_ONE_CHUNK warps per SM with it, or halved from there while it has fewer than
    _THREAD_PER_SM. At most _MAX_CHUNKS chunks per row (a given ``chunk_len`` is doubled until
    then)."""
    if chunk_len is not None:
        chunk = max(chunk_len, P)
        while _cdiv(L, chunk) > _MAX_CHUNKS:  # doubled: still a multiple of the tiles it was one of
            chunk *= 2
        return chunk
    warps = batch * _cdiv(dim, 32 * _THREAD_WARPS) * _THREAD_WARPS
    sms = _sm_count(dev)
    chunk = max(P, _next_pow2(L))
    if warps >= _THREAD_ONE_CHUNK * sms:
        return chunk
    while chunk // 2 >= max(P, _THREAD_MIN_CHUNK) and warps * _cdiv(L, chunk) < _THREAD_PER_SM * sms:
        chunk //= 2
    return chunk


def _adjoint_per_thread(is_complex: bool, u: Tensor, dstate: int) -> bool:
    """Whether `_bwd`'s chunk adjoints run on `_thread_adjoint_kernel` (see _BWD_PER_THREAD_ADJOINT)."""
    if is_complex or dstate > _THREAD_MAX_N or _BWD_PER_THREAD_ADJOINT is False:
        return False
    return _BWD_PER_THREAD_ADJOINT is True or u.element_size() == 2


def _bwd_per_thread(is_complex: bool, u: Tensor, dstate: int, Bp, Cp) -> bool:
    """Whether `_bwd` runs on `_thread_bwd_kernel` (see _BWD_PER_THREAD): real scans with at most
    _THREAD_MAX_N states (with "auto": 16-bit inputs) whose programs' channels share their group
    of B and C."""
    if is_complex or dstate > _THREAD_MAX_N or _BWD_PER_THREAD is False:
        return False
    if _BWD_PER_THREAD == "auto" and u.element_size() != 2:
        return False
    dim = u.shape[1]
    block_d = 32 * _THREAD_BWD_WARPS
    return not any(var and g > 1 and (dim // g) % block_d for _, var, g, _ in (Bp, Cp))


def _bwd_two_pass(plan) -> bool:
    if _BWD_TWO_PASS != "auto":
        return bool(_BWD_TWO_PASS)
    return plan.n_chunks == 1


def _rows_p(block_t: int, warps: int = 1) -> int:
    """Positions per row of the two-pass kernels: a row per thread of the program's ``warps``
    (at most 4 positions on the interpreter's small tiles). A tile keeps at least two rows, so
    that with double tiles the middle state (after row R / 2 - 1) exists."""
    if _interpreting():
        return min(4, max(1, block_t // 2))
    return max(1, block_t // (32 * warps))


def _reg_cap(cap: int | None) -> dict:
    """The launch option capping a kernel's registers (none under the interpreter, which has no
    compiler to pass it to)."""
    return {} if _interpreting() or cap is None else dict(maxnreg=cap)


def _fast_math(u: Tensor) -> bool:
    return _FAST_MATH and u.element_size() == 2 and not _interpreting()


# Sequence parallelism: one chunk per row while batch x dim gives at least _ONE_CHUNK_PER_SM
# programs per SM, else chunks enough for _MIN_PER_SM (the chunk pass costs about as much as a
# scan, so splitting only pays when the grid would otherwise leave SMs idle).
_ONE_CHUNK_PER_SM = 8
_MIN_PER_SM = 24
_CARRY_BLOCK_D = 4
# The carry walks the chunks one after another; each step's loads (S_k, T_k) do not depend on the
# carried state, so the loop is software-pipelined (tl.range num_stages: cp.async loads issued
# that many steps ahead) instead of paying a memory latency per chunk. At (1, 256, 16, 2^20) bf16
# (512 chunks) on an H100, one carry 0.21 -> 0.08 (4 stages) / 0.06 ms (8); forward alone
# 4.45 -> 4.29 ms. (The same pipelining of the per-thread scan kernels' position loops staged
# every load through shared memory and doubled their time: forward 4.39 -> 8.8-9.0 ms.)
_CARRY_STAGES = 8


# Triton chose interpreter or compiler for these kernels when they were decorated, at import; the
# launchers ask often, so the answer is read once (tests replace the function).
_INTERPRET = interpreting()


def _interpreting() -> bool:
    return _INTERPRET


def _cdiv(a: int, b: int) -> int:
    # triton.cdiv / next_power_of_2 are constexpr functions in Triton 3.6: called on the host
    # they go through a wrapper that unwraps every argument, a few microseconds per call.
    return -(-a // b)


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def _scan_tile(training: bool, is_complex: bool, one_chunk: bool) -> int:
    if _interpreting():
        return _SCAN_TILE_INTERPRETER
    wide = one_chunk and not training and _wide_tiles(is_complex)
    return _SCAN_TILE[False] if wide else _SCAN_TILE[True]


def _wide_tiles(is_complex: bool) -> bool:
    """Whether a forward over one chunk per row may run on 256-position tiles: real scans, and
    complex scans whose cos / sin are the hardware approximations (with libdevice's, a complex
    tile of 256 positions costs registers and was slower: 4.87 against 4.11 ms at
    (8, 1536, 16, 4096); with the approximations, 2.29-2.30 against 2.66-2.67 ms)."""
    return not is_complex or _FAST_MATH


_SM_COUNT: dict[int, int] = {}


def _sm_count(dev: torch.device) -> int:
    # The interpreter has no SMs (0: one chunk per row unless the caller sets chunk_len).
    if dev.type != "cuda":
        return 0
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _tiles_per_chunk(n_tiles: int, other_programs: int, min_programs: int) -> int:
    """Tiles per chunk: as many as keep at least ``min_programs`` programs in the grid (powers of
    two, at most enough for the whole sequence). Longer chunks mean fewer carried states and a
    shorter carry pass; one chunk per row skips the carry passes altogether."""
    tpc = 1
    while tpc < n_tiles and other_programs * _cdiv(n_tiles, 2 * tpc) >= min_programs:
        tpc *= 2
    return tpc


def _prep_bc(X: Tensor, is_complex: bool) -> tuple[Tensor, bool, int, tuple[int, int, int, int]]:
    """Normalise B or C to the layout the kernels read: returns (tensor, variable, groups, strides).

    Constant: (D, N) real or (D, N, 2) real/imaginary, strides (0, d, n, ri). Variable: planar
    (B, G, N, NC, L), real and imaginary parts as separate rows of L positions (positions
    contiguous, which lets the scan tiles load them as vectors), strides (b, g, n, ri).
    Always contiguous, so fp32 gradient buffers of the same shape share the strides.
    """
    if X.dim() == 2:
        if is_complex:
            X = torch.view_as_real(X.to(torch.complex64)).contiguous()
            return X, False, 1, (0, X.stride(0), 2, 1)
        X = X.to(torch.float32).contiguous()
        return X, False, 1, (0, X.stride(0), 1, 0)
    if not is_complex:  # the common case in one view: (B, [G,] N, L) -> (B, G, N, 1, L)
        X = X.contiguous()
        X = X.view(X.shape[0], 1 if X.dim() == 3 else X.shape[1], X.shape[-2], 1, X.shape[-1])
        st = X.stride()
        return X, True, X.shape[1], (st[0], st[1], st[2], st[3])
    if X.dim() == 3:
        X = X.unsqueeze(1)
    # (B, G, N, L) complex or (B, G, N, 2L) interleaved -> (B, G, N, 2, L)
    X = torch.view_as_real(X) if X.is_complex() else X.unflatten(-1, (-1, 2))
    X = X.transpose(-1, -2).contiguous()
    return X, True, X.shape[1], (X.stride(0), X.stride(1), X.stride(2), X.stride(3))


def _as_real_buffer(x: Tensor | None) -> Tensor | None:
    # Complex64 state tensors are read as interleaved fp32 pairs.
    if x is None:
        return None
    return (torch.view_as_real(x) if x.is_complex() else x).contiguous()


class _Plan:
    """Tiling of one call, shared by the forward and the backward: ``bt`` positions per scan
    tile, ``tpc`` tiles per chunk, ``n_tiles`` and ``n_chunks``; ``wide``: whether a forward over
    one chunk per row may run on 256-position tiles (`_wide_tiles`)."""

    def __init__(self, batch: int, dim: int, L: int, training: bool, is_complex: bool,
                 chunk_len: int | None, dev: torch.device):
        self.chunk_len = chunk_len
        sms = _sm_count(dev)
        one_chunk = chunk_len is None and batch * dim >= _ONE_CHUNK_PER_SM * sms
        self.wide = _wide_tiles(is_complex)
        self.bt = _scan_tile(training, is_complex, one_chunk)
        if chunk_len is not None:
            self.bt = min(self.bt, chunk_len)
        self.n_tiles = _cdiv(L, self.bt)
        if chunk_len is not None:
            self.tpc = chunk_len // self.bt
        elif one_chunk:
            self.tpc = self.n_tiles
        else:
            self.tpc = _tiles_per_chunk(self.n_tiles, batch * dim, _MIN_PER_SM * sms)
        self.n_chunks = _cdiv(self.n_tiles, self.tpc)


def _fwd(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, initial_state, plan, want_last,
         want_states):
    """Forward launcher. Returns (y, last_state or None, hsave): hsave holds the fp32 states
    entering every scan tile ``[B, D, n_tiles, N, NC]`` when ``want_states`` (what the backward
    reads; the initial state, or None, when there is a single tile)."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    is_complex = A.is_complex()
    if _per_thread(is_complex, u, dstate, plan):
        return _fwd_per_thread(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, initial_state, plan,
                               want_last, want_states)
    nc = 2 if is_complex else 1
    (Bt, var_b, gb, sB), (Ct, var_c, gc, sC) = Bp, Cp
    A_r = _as_real_buffer(A)
    dev = u.device
    bn = _next_pow2(dstate)
    init = _as_real_buffer(initial_state)

    hin = None  # states entering every chunk
    if plan.n_chunks > 1:
        K = plan.n_chunks
        S = torch.empty(batch, dim, K, dstate, nc, device=dev, dtype=torch.float32)
        dtsum = torch.empty(batch, dim, K, device=dev, dtype=torch.float32)
        _chunk_state_kernel[(K, dim, batch)](
            u, delta, delta_bias, A_r, Bt, S, dtsum,
            dim, L, K, dstate, dim // gb, *sB,
            IS_COMPLEX=is_complex, VAR_B=var_b, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, BLOCK_N=bn, BLOCK_T=plan.bt, TILES=plan.tpc, num_warps=1,
        )
        hin = torch.empty_like(S)
        _carry(S, dtsum, A_r, init, hin, bn, is_complex, reverse=False)
    elif init is not None:
        hin = init.view(batch, dim, 1, dstate, nc)
    write_states = want_states and plan.n_tiles > 1
    if write_states:
        hsave = torch.empty(batch, dim, plan.n_tiles, dstate, nc, device=dev, dtype=torch.float32)
    else:
        hsave = hin if plan.n_tiles == 1 else None

    y = torch.empty(batch, dim, L, device=dev, dtype=u.dtype)
    last = torch.empty(batch, dim, dstate, nc, device=dev, dtype=torch.float32) if want_last else None
    # A forward over one chunk per row saving states runs on tiles of two backward tiles.
    split = 2 if _FWD_SPLIT and write_states and plan.wide and plan.n_chunks == 1 else 1
    args = (u, delta, delta_bias, A_r, Bt, Ct, D, z, hin, y, last, hsave,
            dim, L, plan.n_chunks, plan.n_tiles, dstate, dim // gb, dim // gc, _extra(z), *sB, *sC)
    meta = dict(IS_COMPLEX=is_complex, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None, HAS_Z=z is not None,
                HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hin is not None,
                WRITE_LAST=want_last, WRITE_STATES=write_states, BLOCK_N=bn, BLOCK_T=plan.bt * split,
                TILES=_cdiv(plan.tpc, split), SPLIT=split, num_warps=_FWD_WARPS)
    grid = (plan.n_chunks, dim, batch)
    if _two_pass(is_complex, u, write_states, plan):
        _scan2_fwd_kernel[grid](*args, **meta, P=_rows_p(plan.bt * split, _FWD_WARPS), FAST_MATH=_fast_math(u),
                                **_reg_cap(_FWD_MAXNREG))
    else:
        # FAST_MATH here is only the cos / sin of complex scans
        _scan1_fwd_kernel[grid](*args, **meta, N_UNROLL=_FWD_N_UNROLL, PREFETCH=_PREFETCH and not is_complex,
                                FAST_MATH=_FAST_MATH and not _interpreting())
    if last is not None:
        last = torch.view_as_complex(last) if is_complex else last.squeeze(-1)
    return y, last, hsave


def _fwd_per_thread(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, initial_state, plan, want_last,
                    want_states):
    """`_fwd` of a real scan with one channel per thread (see _thread_fwd_kernel): the
    chunks' end states from zero, the carry across chunks, then the scan. Returns
    (y, last_state or None, hsave) as `_fwd` does."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    (_, var_b, gb, _), (_, var_c, gc, _) = Bp, Cp
    dev = u.device
    chunk = _thread_chunk(batch, dim, L, 16 // u.element_size(), plan.chunk_len, dev)
    write_states = want_states and plan.n_tiles > 1
    # P positions per load, at most the chunk and, when the states are saved, the backward's tile
    P = min(16 // u.element_size(), chunk, plan.bt if write_states else chunk)
    K = _cdiv(L, chunk)
    block_d = 32 * _THREAD_WARPS
    y = torch.empty(batch, dim, L, device=dev, dtype=u.dtype)
    last = torch.empty(batch, dim, dstate, device=dev, dtype=torch.float32) if want_last else None
    init = _contig(initial_state)
    if write_states:
        hsave = torch.empty(batch, dim, plan.n_tiles, dstate, 1, device=dev, dtype=torch.float32)
    else:
        hsave = init.view(batch, dim, 1, dstate, 1) if init is not None and plan.n_tiles == 1 else None
    meta = dict(N=dstate, BLOCK_D=block_d, P=P, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None,
                HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
                FAST_MATH=_fast_math(u), WORDS=_bf16_words((Bp, Cp), L, P),
                EVEN=L % P == 0 and dim % block_d == 0, num_warps=_THREAD_WARPS)
    assert not write_states or plan.bt % P == 0, (plan.bt, P)  # tiles start where a load of P positions does

    (Bt, sB3), (Ct, sC3) = _thread_rows((Bp, Cp), meta["WORDS"])

    def launch(n_programs, hin, S, dtsum, **flags):
        _thread_fwd_kernel[_thread_grid(n_programs, _cdiv(dim, block_d), batch)](
            u, delta, delta_bias, A, Bt, Ct, D, z, hin, y, last, S, dtsum, hsave if write_states else None,
            dim, L, L // 2, K, chunk, dim // gb, dim // gc, _extra(z), plan.bt, plan.n_tiles, *sB3, *sC3, **flags,
            **meta)

    hin = init
    if K > 1:
        S = torch.empty(batch, dim, K, dstate, 1, device=dev, dtype=torch.float32)
        dtsum = torch.empty(batch, dim, K, device=dev, dtype=torch.float32)
        # the last chunk's end state is never carried: K - 1 programs along the rows
        launch(K - 1, None, S, dtsum, HAS_HIN=False, WRITE_LAST=False, STATE_ONLY=True, WRITE_STATES=False)
        hin = torch.empty_like(S)
        _carry(S, dtsum, A, init, hin, _next_pow2(dstate), False, reverse=False)
    launch(K, hin, None, None, HAS_HIN=hin is not None, WRITE_LAST=want_last, STATE_ONLY=False,
           WRITE_STATES=write_states)
    return y, last, hsave


def _zeroed_pieces(device: torch.device, *shapes: tuple[int, ...] | None) -> list[Tensor | None]:
    """Contiguous float32 zeros of each shape (None for None), cut from one zeroed buffer; each
    piece starts on a 128-byte boundary, as a tensor of its own would (the kernels are
    specialised on their pointers' alignment)."""
    sizes = [-(-math.prod(s) // 32) * 32 if s is not None else 0 for s in shapes]
    flat = torch.zeros(sum(sizes), device=device, dtype=torch.float32)
    pieces, start = [], 0
    for shape, size in zip(shapes, sizes):
        pieces.append(flat[start:start + math.prod(shape)].view(shape) if shape is not None else None)
        start += size
    return pieces


def _bwd(dout, dlast, u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, hsave, plan,
         want_dinit, y_out=None, dz_out=None):
    """Backward launcher. Returns fp32 / complex gradients
    (du, ddelta, dA, dB_buf, dC_buf, dD, dz, dbias, dinit); du, ddelta, dz in input dtypes.
    ``y_out`` (like u), when given, receives the forward's output y, recomputed on the way;
    ``dz_out`` (positions and channels laid out as in z, see `_rows`), when given, receives dz."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    is_complex = A.is_complex()
    nc = 2 if is_complex else 1
    (Bt, var_b, gb, sB), (Ct, var_c, gc, sC) = Bp, Cp
    A_r = _as_real_buffer(A)
    bn = _next_pow2(dstate)
    K = plan.n_chunks
    dev = u.device
    f32 = {"device": dev, "dtype": torch.float32}
    dlast_r = _as_real_buffer(dlast)

    if _bwd_per_thread(is_complex, u, dstate, Bp, Cp):
        return _bwd_thread(dout, dlast_r, u, delta, A_r, Bp, Cp, D, z, delta_bias, delta_softplus, hsave, plan,
                           want_dinit, y_out, dz_out)
    cin = None  # adjoint entering every chunk's end from later chunks
    C = plan.bt * plan.tpc
    F = None  # the per-thread chunk adjoints' chunk, where they run
    if K > 1 and _adjoint_per_thread(is_complex, u, dstate):
        F = min(C, _thread_chunk(batch, dim, L, 16 // u.element_size(), None, dev))
        if _THREAD_ADJ_SPLIT:
            F = max(1, C // _THREAD_ADJ_SPLIT)
        if _cdiv(L, F) > _GRID_Y:  # more chunks than their grid holds: the tile kernel below
            F = None
    if F is not None:
        cin = _every_mth(_chunk_adjoints_per_thread(u, delta, delta_bias, A_r, Cp, z, dout, dlast_r, delta_softplus,
                                                    F), C // F, K)
    elif K > 1:
        E = torch.empty(batch, dim, K, dstate, nc, **f32)
        dtsum = torch.empty(batch, dim, K, **f32)
        _chunk_adjoint_kernel[(K, dim, batch)](
            delta, delta_bias, A_r, Ct, z, dout, E, dtsum,
            dim, L, K, dstate, dim // gc, _extra(z), *sC,
            IS_COMPLEX=is_complex, VAR_C=var_c, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, BLOCK_N=bn, BLOCK_T=plan.bt, TILES=plan.tpc, num_warps=1,
        )
        cin = torch.empty_like(E)
        _carry(E, dtsum, A_r, dlast_r, cin, bn, is_complex, reverse=True)
    elif dlast_r is not None:
        cin = dlast_r.view(batch, dim, 1, dstate, nc)

    n_slots = min(_N_SLOTS, batch * K)
    du, ddelta, dz, dA, dB, dC, dD, dbias, dinit = _bwd_buffers(u, delta, z, dz_out, D, delta_bias, Bp, Cp, dstate,
                                                                nc, n_slots, want_dinit)
    args = (u, delta, delta_bias, A_r, Bt, Ct, D, z, dout, hsave, cin,
            du, ddelta, dz, dA, dB, dC, dD, dbias, dinit, y_out,
            dim, L, K, plan.n_tiles, dstate, dim // gb, dim // gc, n_slots, _extra(z), _extra(dz), *sB, *sC)
    meta = dict(IS_COMPLEX=is_complex, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None, HAS_Z=z is not None,
                HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hsave is not None,
                HAS_CIN=cin is not None, WRITE_DINIT=want_dinit, WRITE_Y=y_out is not None, BLOCK_N=bn,
                BLOCK_T=plan.bt, TILES=plan.tpc, FAST_MATH=_fast_math(u), num_warps=_BWD_WARPS)
    if _bwd_two_pass(plan):
        _scan2_bwd_kernel[(K, dim, batch)](*args, **meta, P=_rows_p(plan.bt, _BWD_WARPS), **_reg_cap(_BWD_MAXNREG))
    else:
        _scan1_bwd_kernel[(K, dim, batch)](*args, **meta, N_UNROLL=_BWD_N_UNROLL,
                                           PREFETCH=_PREFETCH and not is_complex)
    return _bwd_outputs(du, ddelta, dA, dB, dC, dD, dz, dbias, dinit, is_complex, var_b, var_c)


def _bwd_buffers(u, delta, z, dz_out, D, delta_bias, Bp, Cp, dstate: int, nc: int, n_slots: int,
                 want_dinit: bool) -> tuple:
    """The backward launchers' outputs: du, ddelta and dz (dz_out when given) in their inputs'
    dtypes; dA, dB, dC, dD, dbias as zeroed fp32 accumulators (partial-sum rows, whole buffers
    for variable B / C); dinit ``[B, D, N, nc]`` when wanted."""
    batch, dim, _ = u.shape
    (Bt, var_b, _, _), (Ct, var_c, _, _) = Bp, Cp
    dz = None if z is None else dz_out if dz_out is not None else torch.empty_like(u, dtype=z.dtype)
    # Accumulators start at zero (atomics add into them): one zeroed buffer, cut into contiguous
    # pieces (one fill instead of five; the launcher's CPU time counts at L = 1024).
    sums = _zeroed_pieces(
        u.device, (n_slots, dim, dstate, nc), Bt.shape if var_b else (n_slots, *Bt.shape),
        Ct.shape if var_c else (n_slots, *Ct.shape), (n_slots, dim) if D is not None else None,
        (n_slots, dim) if delta_bias is not None else None)
    dinit = torch.empty(batch, dim, dstate, nc, device=u.device, dtype=torch.float32) if want_dinit else None
    return (torch.empty_like(u), torch.empty_like(delta), dz, *sums, dinit)


def _bwd_outputs(du, ddelta, dA, dB, dC, dD, dz, dbias, dinit, is_complex: bool, var_b: bool, var_c: bool):
    """What the backward launchers return, from their buffers: partial-sum rows summed (variable
    B / C gradients are whole buffers already), complex gradients as complex tensors."""
    dA = dA.sum(0)
    dA = torch.view_as_complex(dA) if is_complex else dA.squeeze(-1)
    if not var_b:
        dB = dB.sum(0)
    if not var_c:
        dC = dC.sum(0)
    dD = dD.sum(0) if dD is not None else None
    dbias = dbias.sum(0) if dbias is not None else None
    if dinit is not None:
        dinit = torch.view_as_complex(dinit) if is_complex else dinit.squeeze(-1)
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dinit


def _bwd_thread(dout, dlast, u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, hsave, plan, want_dinit,
                y_out, dz_out):
    """`_bwd` of a real scan with one channel per thread (see _thread_bwd_kernel): the chunk
    adjoints (`_chunk_adjoints_per_thread`), then the backward over chunks of the per-thread
    forward's length (at least a tile). ``dlast`` and ``A`` as fp32 buffers."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    (_, var_b, gb, sB), (_, var_c, gc, sC) = Bp, Cp
    dev = u.device
    P = min(_THREAD_BWD_P or 16 // u.element_size(), plan.bt)
    chunk = max(_thread_chunk(batch, dim, L, P, plan.chunk_len, dev), plan.bt)
    K = _cdiv(L, chunk)
    if K > 1:
        m = _THREAD_ADJ_SPLIT or max(1, min(_THREAD_ADJ_FINE, chunk // max(P, _THREAD_MIN_CHUNK)))
        if chunk % (m * P):
            m = 1
        cin = _every_mth(_chunk_adjoints_per_thread(u, delta, delta_bias, A, Cp, z, dout, dlast, delta_softplus,
                                                    chunk // m), m, K)
    else:
        cin = None if dlast is None else dlast.view(batch, dim, 1, dstate, 1)
    block_d = 32 * _THREAD_BWD_WARPS
    n_dblk = _cdiv(dim, block_d)
    n_slots = min(_N_SLOTS, batch * K)
    du, ddelta, dz, dA, dB, dC, dD, dbias, dinit = _bwd_buffers(u, delta, z, dz_out, D, delta_bias, Bp, Cp, dstate,
                                                                1, n_slots, want_dinit)
    # per program: the states entering every P positions of one tile, and four [N, BLOCK_D] sums
    scratch = torch.empty(batch * n_dblk * K * (plan.bt // P + 4) * dstate * block_d, device=dev,
                          dtype=torch.float32)
    words = _bf16_words((Bp, Cp), L, P)
    (Bw, sB3), (Cw, sC3) = _thread_rows((Bp, Cp), words)
    _thread_bwd_kernel[_thread_grid(K, n_dblk, batch)](
        u, delta, delta_bias, A, Bw, Cw, D, z, dout, hsave, cin, scratch,
        du, ddelta, dz, dA, dB, dC, dD, dbias, dinit, y_out,
        dim, L, L // 2, K, chunk, plan.bt, plan.n_tiles, dim // gb, dim // gc, n_slots, _extra(z), _extra(dz),
        *sB3, *sC3, *sB[:3], *sC[:3],
        N=dstate, BLOCK_D=block_d, P=P, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None,
        HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hsave is not None,
        HAS_CIN=cin is not None, WRITE_DINIT=want_dinit, WRITE_Y=y_out is not None, FAST_MATH=_fast_math(u),
        WORDS=words, EVEN=L % P == 0 and dim % block_d == 0,
        SHFL=_THREAD_BWD_SHFL and block_d == 32 and not _interpreting(), RING=_THREAD_BWD_RING,
        num_warps=_THREAD_BWD_WARPS)
    return _bwd_outputs(du, ddelta, dA, dB, dC, dD, dz, dbias, dinit, False, var_b, var_c)


def _chunk_adjoints_per_thread(u, delta, delta_bias, A, Cp, z, dout, dlast, delta_softplus, F: int):
    """The adjoint entering the end of each chunk of F positions from the chunks after it,
    ``[B, D, K, N, 1]`` (real scans): `_thread_adjoint_kernel` over the chunks, then the reverse
    carry."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    _, var_c, gc, _ = Cp
    dev = u.device
    P = min(16 // u.element_size(), F)
    K_f = _cdiv(L, F)
    block_d = 32 * _THREAD_WARPS
    words = _bf16_words((Cp,), L, P)
    ((Ct, sC3),) = _thread_rows((Cp,), words)
    E = torch.empty(batch, dim, K_f, dstate, 1, device=dev, dtype=torch.float32)
    dtsum = torch.empty(batch, dim, K_f, device=dev, dtype=torch.float32)
    _thread_adjoint_kernel[_thread_grid(K_f, _cdiv(dim, block_d), batch)](
        delta, delta_bias, A, Ct, z, dout, E, dtsum, dim, L, L // 2, K_f, F, dim // gc, _extra(z), *sC3,
        N=dstate, BLOCK_D=block_d, P=P, VAR_C=var_c, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus, FAST_MATH=_fast_math(u), WORDS=words, EVEN=L % P == 0 and dim % block_d == 0,
        num_warps=_THREAD_WARPS)
    cin = torch.empty_like(E)
    _carry(E, dtsum, A, dlast, cin, _next_pow2(dstate), False, reverse=True)
    return cin


def _carry(S: Tensor, dtsum: Tensor, A: Tensor, init: Tensor | None, out: Tensor, block_n: int, is_complex: bool,
           reverse: bool) -> None:
    """`_carry_kernel` over the chunks of ``S`` ``[B, D, K, N, NC]`` into ``out``."""
    batch, dim, n_chunks, dstate = S.shape[:4]
    _carry_kernel[(_cdiv(dim, _CARRY_BLOCK_D), batch)](
        S, dtsum, A, init, out, dim, n_chunks, dstate, IS_COMPLEX=is_complex, REVERSE=reverse,
        HAS_INIT=init is not None, BLOCK_D=_CARRY_BLOCK_D, BLOCK_N=block_n, STAGES=_CARRY_STAGES, num_warps=2)


def _every_mth(cin: Tensor, m: int, K: int) -> Tensor:
    """The adjoints entering K chunks of m fine chunks each, from those entering the fine ones:
    chunk k ends where fine chunk (k + 1) m - 1 does (the last one: at L)."""
    if m == 1:
        return cin
    ends = torch.arange(1, K + 1, device=cin.device) * m - 1
    return cin.index_select(2, ends.clamp_(max=cin.shape[2] - 1))


def _grad_like(buf: Tensor, like: Tensor, is_complex: bool) -> Tensor:
    """Turn a B/C gradient buffer from `_prep_bc`'s layout back into the shape and dtype of the
    argument it belongs to."""
    if like.dim() == 2:
        if is_complex:
            g = torch.view_as_complex(buf)
            return g if like.is_complex() else g.real.to(like.dtype)
        return buf.to(like.dtype)
    # planar (B, G, N, NC, L) -> (B, G, N, L, NC)
    buf = buf.transpose(-1, -2)
    if like.dim() == 3:
        buf = buf.squeeze(1)
    if like.is_complex():
        return torch.view_as_complex(buf.contiguous())
    return buf.flatten(-2).to(like.dtype)  # real: NC = 1; complex interleaved: (.., 2L)


def _contig(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.contiguous()


def _rows(z: Tensor | None) -> Tensor | None:
    """z ``[B, D, L]`` as the kernels read it: channels L apart and positions contiguous, with any
    batch stride of at least D * L (one half of the mixer's in_proj output ``[B, 2D, L]`` is
    read in place); copied otherwise."""
    if z is None:
        return None
    batch, dim, L = z.shape
    if z.stride(2) == 1 and z.stride(1) == L and (batch == 1 or z.stride(0) >= dim * L):
        return z
    return z.contiguous()


def _extra(z: Tensor | None) -> int:
    """The batch stride of a `_rows` tensor beyond D * L (0 when contiguous or absent)."""
    if z is None or z.shape[0] == 1:
        return 0
    return z.stride(0) - z.shape[1] * z.shape[2]


# --------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------


def _input_grads(raw, A, B_like, C_like, D, delta_bias) -> tuple:
    """``_bwd``'s (du, ddelta, dA, dB_buf, dC_buf, dD, dz, dbias) in the shapes and dtypes of
    the arguments u, delta, A, B, C, D, z, delta_bias."""
    du, ddelta, dA, dB, dC, dD, dz, dbias = raw
    is_complex = A.is_complex()
    return (
        du, ddelta, dA.to(A.dtype),
        _grad_like(dB, B_like, is_complex), _grad_like(dC, C_like, is_complex),
        dD.to(D.dtype) if dD is not None else None,
        dz,
        dbias.to(delta_bias.dtype) if dbias is not None else None,
    )


def _prepare(u, delta, A, B, C, D, z, delta_bias, training, chunk_len):
    """The inputs in the kernels' layouts, ``(u, delta, A, Bp, Cp, D, z, delta_bias)`` (Bp / Cp from
    `_prep_bc`), and the call's tile plan (``training``: tile states will be saved)."""
    u, delta, z, D, delta_bias = _contig(u), _contig(delta), _rows(z), _contig(D), _contig(delta_bias)
    is_complex = A.is_complex()
    A = A.contiguous()
    Bp, Cp = _prep_bc(B, is_complex), _prep_bc(C, is_complex)
    plan = _Plan(u.shape[0], u.shape[1], u.shape[2], training, is_complex, chunk_len, u.device)
    return (u, delta, A, Bp, Cp, D, z, delta_bias), plan


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, return_last_state,
                  chunk_len, want_states):
    """The forward of one call: `_prepare`, then the launches.
    Returns (y, last, hsave, (u, delta, A, Bp, Cp, D, z, delta_bias), plan)."""
    inputs, plan = _prepare(u, delta, A, B, C, D, z, delta_bias, want_states, chunk_len)
    y, last, hsave = _fwd(*inputs, delta_softplus, initial_state, plan, return_last_state, want_states)
    return y, last, hsave, inputs, plan


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                return_last_state, chunk_len, grad_enabled):
        # Tile states are saved only when a gradient can be asked for: grad mode on at the call
        # (``grad_enabled``; inside forward it is always off) and an input that requires grad.
        want_states = grad_enabled and any(ctx.needs_input_grad)
        y, last, hsave, (u, delta, A, Bp, Cp, D, z, delta_bias), plan = _scan_forward(
            u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, return_last_state, chunk_len,
            want_states)
        ctx.save_for_backward(u, delta, A, Bp[0], Cp[0], D, z, delta_bias, hsave)
        # Only shapes and dtypes of the original B, C and initial_state are needed later.
        ctx.meta = (Bp[1:], Cp[1:], _Like(B), _Like(C), delta_softplus, plan,
                    initial_state.dtype if initial_state is not None else None)
        ctx.set_materialize_grads(False)
        return (y, last) if return_last_state else y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy, *rest):
        u, delta, A, Bt, Ct, D, z, delta_bias, hsave = ctx.saved_tensors
        b_meta, c_meta, B_like, C_like, delta_softplus, plan, init_dtype = ctx.meta
        dlast = rest[0] if rest else None
        if dy is None:  # only last_state was used
            dy = torch.zeros_like(u)
        *raw, dinit = _bwd(
            dy.contiguous(), dlast, u, delta, A, (Bt, *b_meta), (Ct, *c_meta), D, z, delta_bias,
            delta_softplus, hsave, plan, init_dtype is not None and ctx.needs_input_grad[8],
        )
        grads = (
            *_input_grads(raw, A, B_like, C_like, D, delta_bias),
            dinit.to(init_dtype) if dinit is not None else None,
        )
        needs = ctx.needs_input_grad
        return (*(g if needs[i] else None for i, g in enumerate(grads)), None, None, None, None)


class _SelectiveScanLinearTriton(torch.autograd.Function):
    """The scan followed by a bias-free linear map over its channels, for one block under
    activation checkpointing (``torch.utils.checkpoint``, non-reentrant), where the block's
    forward runs twice: once when the loss is computed, again in the backward to rebuild what
    the backward saves.

    - ``first`` pass: the scan runs with tile states, as in training. The states are kept on the
      autograd node itself, which checkpointing leaves alone (it only discards and later
      recomputes ``save_for_backward``'s tensors).
    - ``recompute`` pass: only the inputs are saved; the scan is not run and the output is zeros
      (inside a checkpointed block nothing reads it: the residual add saves nothing).
    - backward of the first pass's node: the scan's backward starts from the kept states and
      writes the scan's output y on the way (it recomputes h anyway), which the weight's gradient
      needs. The scan's forward therefore runs once per training step instead of twice.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, weight, delta_softplus, recompute):
        (u, delta, A, Bp, Cp, D, z, delta_bias), plan = _prepare(u, delta, A, B, C, D, z, delta_bias, True, None)
        batch, _, L = u.shape
        ctx.save_for_backward(u, delta, A, Bp[0], Cp[0], D, z, delta_bias, weight)
        ctx.meta = (Bp[1:], Cp[1:], _Like(B), _Like(C), delta_softplus, plan)
        if recompute:
            return u.new_zeros(batch, L, weight.shape[0], dtype=weight.dtype)
        y, _, hsave = _fwd(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, None, plan, False, True)
        ctx.kept = (hsave,)
        return torch.bmm(y.transpose(1, 2).to(weight.dtype), weight.t().expand(batch, *weight.t().shape))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dout):
        kept = getattr(ctx, "kept", None)
        if kept is None:
            raise RuntimeError(
                "selective_scan_linear: backward of a 'recompute' pass, or a second backward through a "
                "'first' pass (its tile states are freed after the first backward)"
            )
        ctx.kept = None
        (hsave,) = kept
        u, delta, A, Bt, Ct, D, z, delta_bias, weight = ctx.saved_tensors
        b_meta, c_meta, B_like, C_like, delta_softplus, plan = ctx.meta
        batch = u.shape[0]
        dout = dout.to(weight.dtype)
        dy = torch.bmm(weight.t().expand(batch, *weight.t().shape), dout.transpose(1, 2))  # [B, E, L]
        y = torch.empty_like(u)
        *raw, _ = _bwd(
            dy.to(u.dtype).contiguous(), None, u, delta, A, (Bt, *b_meta), (Ct, *c_meta), D, z, delta_bias,
            delta_softplus, hsave, plan, False, y_out=y,
        )
        dw = None
        if ctx.needs_input_grad[8]:
            dw = torch.bmm(dout.transpose(1, 2), y.transpose(1, 2).to(weight.dtype)).sum(0)  # [O, E]
        grads = (
            *_input_grads(raw, A, B_like, C_like, D, delta_bias),
            dw.to(weight.dtype) if dw is not None else None,
        )
        needs = ctx.needs_input_grad
        return (*(g if needs[i] else None for i, g in enumerate(grads)), None, None)


class _Like:
    """Shape / dtype / rank of a tensor without holding its storage."""

    def __init__(self, t: Tensor):
        self.shape, self.dtype = t.shape, t.dtype

    def dim(self) -> int:
        return len(self.shape)

    def is_complex(self) -> bool:
        return self.dtype.is_complex


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


@torch.compiler.disable
def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
    chunk_len: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused Triton selective scan (forward and backward), sequence-parallel over chunks of L.

    Arguments are validated by the caller (``seqmodels.kernels.selective_scan``); semantics and
    shapes are those of ``selective_scan_ref``:

    - u, delta, z: ``[B, D, L]`` fp32 / bf16 / fp16; y has u's dtype, arithmetic is fp32.
    - A: ``[D, N]`` float32 (real scan) or complex64 (complex scan).
    - B, C: constant ``[D, N]``, variable ``[B, N, L]`` or grouped ``[B, G, N, L]``; for a complex
      scan variable B/C are complex64, or real with real/imag interleaved (``[..., 2L]``).
    - D, delta_bias: ``[D]``; initial_state: ``[B, D, N]`` float32 / complex64.
    - chunk_len: positions per chunk (rounded up to a power of two, at least 2), the unit of
      sequence parallelism; a chunk is scanned as tiles of min(chunk_len, 128) positions (64 for
      complex; 16 under the interpreter), one after another, forward and backward.
      Default: the longest chunk that still gives about eight programs per SM (one chunk per row
      when batch x D is large); real forwards with at most 16 states, which run one channel per
      thread, take their own default (`_thread_chunk`).

    Returns y ``[B, D, L]``, or (y, last_state ``[B, D, N]``) when ``return_last_state``.
    Differentiable in every tensor argument, including through last_state. Gradients of A, D,
    delta_bias and of B/C are accumulated with fp32 atomics, so they are not bitwise
    deterministic. Under ``torch.autocast`` the kernels take the inputs as given (no casting).

    torch.compile: a deliberate graph break (``torch.compiler.disable``); the kernels run eagerly
    between compiled regions.
    """
    if chunk_len is not None:
        chunk_len = max(2, _next_pow2(int(chunk_len)))
    grad_enabled = torch.is_grad_enabled()
    if not grad_enabled or not any(t is not None and t.requires_grad
                                   for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)):
        # Nothing to differentiate: the forward alone, without the autograd Function's overhead
        # (tens of microseconds of host time per call, which an idle GPU waits for).
        y, last, *_ = _scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                                    return_last_state, chunk_len, False)
        return (y, last) if return_last_state else y
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                      delta_softplus, return_last_state, chunk_len, grad_enabled)


@torch.compiler.disable
def selective_scan_linear_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    weight: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    recompute: bool = False,
) -> Tensor:
    """``selective_scan_triton(...)`` ``[B, E, L]`` then ``weight [O, E]`` over the channels:
    ``[B, L, O]``, for one pass of a checkpointed block (see ``_SelectiveScanLinearTriton``):
    ``recompute=False`` for the pass that computes the loss, ``True`` for checkpointing's
    recomputation. Arguments are validated by the caller."""
    return _SelectiveScanLinearTriton.apply(u, delta, A, B, C, D, z, delta_bias, weight, delta_softplus, recompute)
