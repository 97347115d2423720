"""Fused Triton selective scan: forward and backward, real and complex, sequence-parallel.

Layers, top to bottom: ``@triton.jit`` helpers and kernels; host launchers; the autograd
Function; the public :func:`selective_scan_triton`. The math (chunking, the carry pass, the
adjoint) is in README.md, section "The fused Triton kernels".

Shapes use one alphabet: ``B`` batch, ``D`` channels, ``L`` length, ``N`` state, ``G`` groups,
``K`` chunks of one or more tiles of ``T`` positions. A forward program owns ``BLOCK_D`` channels
of one batch row and one chunk, which it walks tile by tile; its state lives in registers as
``[BLOCK_D, BLOCK_N, BLOCK_T]`` tiles (real and imaginary parts as two fp32 tiles for a complex
scan) and is never written to memory; only the states at tile boundaries ``[B, D, L / T, N]``
are. The backward works one tile at a time, a program looping over up to 32 channels in blocks
of ``BLOCK_D``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _softplus(x):
    # torch's softplus (threshold 20) with a log1p that keeps small exp(x) exact: for
    # dt ~ 1e-3 a plain log(1 + e) loses four digits.
    e = tl.exp(tl.minimum(x, 20.0))
    v = 1.0 + e
    log1p = tl.where(v == 1.0, e, tl.log(v) * e / (v - 1.0))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_dt(delta_ptr, bias_ptr, io_off, offs_d, mask_d, mask, HAS_BIAS: tl.constexpr,
             SOFTPLUS: tl.constexpr):
    """delta (+ bias) (-> softplus) as fp32 ``[BLOCK_D, BLOCK_T]``; zero where masked, so padded
    positions decay by exp(0) = 1 and add nothing. Also returns the pre-softplus value."""
    raw = tl.load(delta_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _load_bc(ptr, pid_b, grp, offs_d, offs_n, offs_t, mask_d, mask_n, mask_t, s0, s1, s2, s_ri,
             VAR: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """B or C as fp32 tiles broadcastable to ``[BLOCK_D, BLOCK_N, BLOCK_T]`` (chunk passes).

    Variable (planar ``[B, G, N, NC, L]``): ``ptr[b, g, n, (ri,) t]`` -> ``[1, BLOCK_N, BLOCK_T]``;
    constant: ``ptr[d * s1 + n * s2 (+ s_ri imag)]`` -> ``[BLOCK_D, BLOCK_N, 1]``. Imaginary part
    is 0 for real.
    """
    if VAR:
        base = pid_b.to(tl.int64) * s0 + grp.to(tl.int64) * s1
        off = base + offs_n[:, None].to(tl.int64) * s2 + offs_t[None, :]
        m = mask_n[:, None] & mask_t[None, :]
        re = tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)[None, :, :]
        if IS_COMPLEX:
            im = tl.load(ptr + off + s_ri, mask=m, other=0.0).to(tl.float32)[None, :, :]
        else:
            im = tl.zeros_like(re)
    else:
        off = offs_d[:, None].to(tl.int64) * s1 + offs_n[None, :] * s2
        m = mask_d[:, None] & mask_n[None, :]
        re = tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)[:, :, None]
        if IS_COMPLEX:
            im = tl.load(ptr + off + s_ri, mask=m, other=0.0).to(tl.float32)[:, :, None]
        else:
            im = tl.zeros_like(re)
    return re, im


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
def _decay(dt, Ar, Ai, IS_COMPLEX: tl.constexpr):
    """exp(dt * A) for dt ``[BLOCK_D, 1|BLOCK_T]``-shaped (pre-broadcast) and A ``[BLOCK_D, BLOCK_N]``.
    Returns real and imaginary ``[BLOCK_D, BLOCK_N, BLOCK_T]`` tiles (imaginary 0 for real)."""
    mag = tl.exp(dt[:, None, :] * Ar[:, :, None])
    if IS_COMPLEX:
        ang = dt[:, None, :] * Ai[:, :, None]
        return mag * tl.cos(ang), mag * tl.sin(ang)
    else:
        return mag, tl.zeros_like(mag)


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
def _fwd_chunk_state_kernel(
    # pointers
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, S_ptr, dtsum_ptr,
    # dims
    dim, L, n_chunks, dstate, group_b,
    # strides of B
    sB0, sB1, sB2, sB3,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, TILES: tl.constexpr,
):
    """Pass 1: each chunk's end state started from zero, S_k = sum_t exp(A (T_k - S_t)) dt_t B_t u_t
    (S_t = inclusive cumsum of dt, T_k its total), and T_k itself (the chunk's log decay / A).
    A chunk is ``TILES`` tiles of ``BLOCK_T`` positions: per tile the same sum, then
    S <- exp(A T_tile) S + S_tile carries the partial state across tiles in registers."""
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    a_off = offs_d[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
    Ar, Ai = _load_pair(A_ptr, a_off, mask_dn, IS_COMPLEX)
    row = (pid_b * dim + offs_d).to(tl.int64)[:, None] * L  # [BD, 1]

    hr = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    hi = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    tot = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j in range(0, TILES):
        offs_t = (pid_k * TILES + j) * BLOCK_T + tl.arange(0, BLOCK_T)
        mask_t = offs_t < L
        mask = mask_d[:, None] & mask_t[None, :]
        io_off = row + offs_t[None, :]  # [BD, BT]
        u = tl.load(u_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _load_dt(delta_ptr, bias_ptr, io_off, offs_d, mask_d, mask, HAS_BIAS, SOFTPLUS)
        Br, Bi = _load_bc(B_ptr, pid_b, (pid_d * BLOCK_D) // group_b, offs_d, offs_n, offs_t, mask_d,
                          mask_n, mask_t, sB0, sB1, sB2, sB3, VAR_B, IS_COMPLEX)

        tot_j = tl.sum(dt, axis=1)  # [BD]
        rem = tot_j[:, None] - tl.cumsum(dt, axis=1)  # [BD, BT]: sum of dt after t, >= 0
        er, ei = _decay(rem, Ar, Ai, IS_COMPLEX)  # [BD, BN, BT]
        dtu = (dt * u)[:, None, :]
        # x = dt u B; tile end state = sum_t decay_t * x_t
        sr = tl.sum(er * (dtu * Br) - ei * (dtu * Bi), axis=2)  # [BD, BN]
        mag = tl.exp(tot_j[:, None] * Ar)  # the tile's total decay
        if IS_COMPLEX:
            si = tl.sum(er * (dtu * Bi) + ei * (dtu * Br), axis=2)
            pr = mag * tl.cos(tot_j[:, None] * Ai)
            pi = mag * tl.sin(tot_j[:, None] * Ai)
            hr, hi = pr * hr - pi * hi + sr, pr * hi + pi * hr + si
        else:
            hr = mag * hr + sr
        tot += tot_j
    s_off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, pid_k, dstate, NC)
    tl.store(S_ptr + s_off, hr, mask=mask_dn)
    if IS_COMPLEX:
        tl.store(S_ptr + s_off + 1, hi, mask=mask_dn)
    tl.store(dtsum_ptr + (pid_b * dim + offs_d).to(tl.int64) * n_chunks + pid_k, tot, mask=mask_d)


@triton.jit
def _carry_kernel(
    # pointers
    S_ptr, dtsum_ptr, A_ptr, init_ptr, out_ptr,
    # dims
    dim, n_chunks, dstate,
    # meta
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr, HAS_INIT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Pass 2: the carry entering each chunk, out[k] = P_{k-1} out[k-1] + S_{k-1}, out[0] = init,
    with P_k = exp(A T_k). REVERSE runs the adjoint version: out[k] = conj(P_{k+1}) out[k+1] +
    S_{k+1}, out[K-1] = init. ``init`` is ``[B, D, N, NC]``; S and out are ``[B, D, K, N, NC]``."""
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
    for i in range(0, n_chunks):
        if REVERSE:
            k = n_chunks - 1 - i
        else:
            k = i
        off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, k, dstate, NC)
        tl.store(out_ptr + off, cr, mask=mask)
        if IS_COMPLEX:
            tl.store(out_ptr + off + 1, ci, mask=mask)
        tot = tl.load(dtsum_ptr + dts_row + k, mask=mask_d, other=0.0)
        mag = tl.exp(tot[:, None] * Ar)
        sr = tl.load(S_ptr + off, mask=mask, other=0.0)
        if IS_COMPLEX:
            pr = mag * tl.cos(tot[:, None] * Ai)
            pi = mag * tl.sin(tot[:, None] * Ai)
            si = tl.load(S_ptr + off + 1, mask=mask, other=0.0)
            cr, ci = pr * cr - pi * ci + sr, pr * ci + pi * cr + si
        else:
            cr = mag * cr + sr


# --------------------------------------------------------------------------------------------
# Per-channel 2-D tiles (version 3)
# --------------------------------------------------------------------------------------------
# A program of the scan kernels owns ONE channel of one batch row and walks its chunk in tiles
# of ``[BLOCK_N, BLOCK_T]``: state index along rows, positions along columns. B and C are loaded
# as such tiles straight from memory (positions contiguous), so Triton gives the tile a layout in
# which every thread holds several consecutive positions of a row: ``tl.associative_scan`` then
# runs sequentially inside a thread and needs shuffles only between threads (a [channels, N, T]
# tile built by broadcasting got one position per thread and a full shuffle tree per element).
# Per-position sequences (u, delta, z, dout) are [BLOCK_T] vectors, the sums over N reductions.


@triton.jit
def _load_bc2(ptr, pid_b, grp, d, offs_n, offs_t, mask_n, mask_t, s0, s1, s2, s_ri,
              VAR: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """B or C of channel ``d`` as fp32 tiles broadcastable to ``[BLOCK_N, BLOCK_T]``.

    Variable (planar layout ``[B, G, N, NC, L]``): ``ptr[b, g, n, (ri,) t]`` -> ``[BLOCK_N, BLOCK_T]``;
    constant (``[D, N, NC]``): ``ptr[d, n, (ri)]`` -> ``[BLOCK_N, 1]``. Imaginary part 0 for real."""
    if VAR:
        off = (pid_b.to(tl.int64) * s0 + grp.to(tl.int64) * s1
               + offs_n[:, None].to(tl.int64) * s2 + offs_t[None, :])
        m = mask_n[:, None] & mask_t[None, :]
    else:
        off = (d * s1 + offs_n * s2)[:, None]
        m = mask_n[:, None]
    re = tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)
    if IS_COMPLEX:
        im = tl.load(ptr + off + s_ri, mask=m, other=0.0).to(tl.float32)
    else:
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _decay2(dt, Ar, Ai, IS_COMPLEX: tl.constexpr):
    """exp(dt A) for dt ``[BLOCK_T]`` and A ``[BLOCK_N]``: real and imaginary ``[BLOCK_N, BLOCK_T]``."""
    mag = tl.exp(dt[None, :] * Ar[:, None])
    if IS_COMPLEX:
        ang = dt[None, :] * Ai[:, None]
        return mag * tl.cos(ang), mag * tl.sin(ang)
    else:
        return mag, tl.zeros_like(mag)


@triton.jit
def _scan_t(ar, ai, br, bi, REVERSE: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """h_t = a_t h_{t-1} + b_t along axis 1 (h_t = a_t h_{t+1} + b_t when REVERSE)."""
    if IS_COMPLEX:
        _, _, hr, hi = tl.associative_scan((ar, ai, br, bi), 1, _combine_complex, reverse=REVERSE)
    else:
        _, hr = tl.associative_scan((ar, br), 1, _combine_real, reverse=REVERSE)
        hi = hr
    return hr, hi


@triton.jit
def _dt_row(delta_ptr, off, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta (+ bias) (-> softplus) as fp32 ``[BLOCK_T]``, 0 where masked; and the raw value."""
    raw = tl.load(delta_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += bias
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _scan2_fwd_kernel(
    # pointers
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, hin_ptr, y_ptr, last_ptr,
    hsave_ptr,
    # dims
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c,
    # strides of B and C (planar layout, see _load_bc2)
    sB0, sB1, sB2, sBri, sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    WRITE_LAST: tl.constexpr, WRITE_STATES: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, TILES: tl.constexpr,
):
    """Forward scan of one channel over one chunk of ``TILES`` tiles, from the state carried into
    the chunk (``hin[b, d, k]``, or zero): writes y, optionally the state entering every tile
    (``hsave [B, D, n_tiles, N]``, for the backward) and the final state."""
    pid_k = tl.program_id(0)
    d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_n = tl.arange(0, BLOCK_N)
    loc_t = tl.arange(0, BLOCK_T)
    mask_n = offs_n < dstate
    chan = (pid_b * dim + d).to(tl.int64)
    row = chan * L
    a_off = (d * dstate + offs_n) * NC
    Ar = tl.load(A_ptr + a_off, mask=mask_n, other=0.0)
    if IS_COMPLEX:
        Ai = tl.load(A_ptr + a_off + 1, mask=mask_n, other=0.0)
    else:
        Ai = Ar
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d).to(tl.float32)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d).to(tl.float32)
    grp_b = d // group_b
    grp_c = d // group_c
    first = (loc_t == 0)[None, :]
    last = (loc_t == BLOCK_T - 1)[None, :]
    st_row = chan * n_chunks  # rows of [B, D, K, N, NC] buffers
    if HAS_HIN:
        s_off = (st_row + pid_k) * (dstate * NC) + offs_n * NC
        h0r = tl.load(hin_ptr + s_off, mask=mask_n, other=0.0)
        if IS_COMPLEX:
            h0i = tl.load(hin_ptr + s_off + 1, mask=mask_n, other=0.0)
        else:
            h0i = tl.zeros([BLOCK_N], dtype=tl.float32)
    else:
        h0r = tl.zeros([BLOCK_N], dtype=tl.float32)
        h0i = tl.zeros([BLOCK_N], dtype=tl.float32)

    for j in range(0, TILES):
        tile = pid_k * TILES + j
        offs_t = tile * BLOCK_T + loc_t
        mask_t = offs_t < L
        io = row + offs_t
        if WRITE_STATES:
            t_off = (chan * n_tiles + tile) * (dstate * NC) + offs_n * NC
            t_mask = mask_n & (tile < n_tiles)
            tl.store(hsave_ptr + t_off, h0r, mask=t_mask)
            if IS_COMPLEX:
                tl.store(hsave_ptr + t_off + 1, h0i, mask=t_mask)
        u = tl.load(u_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        dt, _ = _dt_row(delta_ptr, io, mask_t, bias, HAS_BIAS, SOFTPLUS)
        Br, Bi = _load_bc2(B_ptr, pid_b, grp_b, d, offs_n, offs_t, mask_n, mask_t, sB0, sB1, sB2,
                           sBri, VAR_B, IS_COMPLEX)
        Cr, Ci = _load_bc2(C_ptr, pid_b, grp_c, d, offs_n, offs_t, mask_n, mask_t, sC0, sC1, sC2,
                           sCri, VAR_C, IS_COMPLEX)
        ar, ai = _decay2(dt, Ar, Ai, IS_COMPLEX)  # [BN, BT]
        dtu = (dt * u)[None, :]
        xr = dtu * Br
        # The carried-in state enters as an extra input at the tile's first position.
        if IS_COMPLEX:
            xi = dtu * Bi
            xr += tl.where(first, ar * h0r[:, None] - ai * h0i[:, None], 0.0)
            xi += tl.where(first, ar * h0i[:, None] + ai * h0r[:, None], 0.0)
        else:
            xi = xr
            xr += tl.where(first, ar * h0r[:, None], 0.0)
        hr, hi = _scan_t(ar, ai, xr, xi, False, IS_COMPLEX)
        if IS_COMPLEX:
            y = 2.0 * tl.sum(Cr * hr - Ci * hi, axis=0)  # [BT]
        else:
            y = tl.sum(Cr * hr, axis=0)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            z = tl.load(z_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + io, y.to(y_ptr.dtype.element_ty), mask=mask_t)
        # Positions past L keep the state (dt = 0), so the last column leaves the tile.
        h0r = tl.sum(tl.where(last, hr, 0.0), axis=1)
        if IS_COMPLEX:
            h0i = tl.sum(tl.where(last, hi, 0.0), axis=1)

    if WRITE_LAST:
        if pid_k == n_chunks - 1:
            l_off = chan * (dstate * NC) + offs_n * NC
            tl.store(last_ptr + l_off, h0r, mask=mask_n)
            if IS_COMPLEX:
                tl.store(last_ptr + l_off + 1, h0i, mask=mask_n)


@triton.jit
def _scan2_bwd_kernel(
    # pointers: inputs
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dout_ptr, hin_ptr, cin_ptr,
    # pointers: outputs (du, ddelta, dz in their input dtypes; the rest fp32 accumulators)
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    # dims
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c, n_slots,
    # strides of B and C (planar layout; also of their fp32 gradient buffers when variable)
    sB0, sB1, sB2, sBri, sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    HAS_CIN: tl.constexpr, WRITE_DINIT: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, TILES: tl.constexpr,
):
    """Backward of one channel over one chunk, walking its tiles from last to first. Per tile:
    recompute h from the saved state entering the tile, run the adjoint
    g_t = q_t + conj(a_{t+1}) g_{t+1} (reverse scan; the adjoint arriving from the next tile,
    conj(a_0) g_0 of that tile, enters at the last position), form every gradient. The adjoint
    entering the chunk's last tile from later chunks is ``cin[b, d, k]`` (or d last_state)."""
    pid_k = tl.program_id(0)
    d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_n = tl.arange(0, BLOCK_N)
    loc_t = tl.arange(0, BLOCK_T)
    mask_n = offs_n < dstate
    chan = (pid_b * dim + d).to(tl.int64)
    row = chan * L
    a_off = (d * dstate + offs_n) * NC
    Ar = tl.load(A_ptr + a_off, mask=mask_n, other=0.0)
    if IS_COMPLEX:
        Ai = tl.load(A_ptr + a_off + 1, mask=mask_n, other=0.0)
    else:
        Ai = Ar
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d).to(tl.float32)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d).to(tl.float32)
    grp_b = d // group_b
    grp_c = d // group_c
    first = (loc_t == 0)[None, :]
    last = (loc_t == BLOCK_T - 1)[None, :]
    zero_n = tl.zeros([BLOCK_N], dtype=tl.float32)

    if HAS_CIN:
        c_off = (chan * n_chunks + pid_k) * (dstate * NC) + offs_n * NC
        cr = tl.load(cin_ptr + c_off, mask=mask_n, other=0.0)
        if IS_COMPLEX:
            ci = tl.load(cin_ptr + c_off + 1, mask=mask_n, other=0.0)
        else:
            ci = zero_n
    else:
        cr = zero_n
        ci = zero_n
    # Sums over the chunk's positions, added to memory once at the end.
    acc_dAr = zero_n
    acc_dAi = zero_n
    acc_dBr = zero_n  # constant B: sum over positions
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
        # Decay of the next position for the adjoint; the last column's is replaced by the
        # adjoint arriving from the next tile.
        mask_next = ((offs_t + 1) < L) & (loc_t < BLOCK_T - 1)
        dt_next, _ = _dt_row(delta_ptr, io + 1, mask_next, bias, HAS_BIAS, SOFTPLUS)
        dout = tl.load(dout_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
        Br, Bi = _load_bc2(B_ptr, pid_b, grp_b, d, offs_n, offs_t, mask_n, mask_t, sB0, sB1, sB2,
                           sBri, VAR_B, IS_COMPLEX)
        Cr, Ci = _load_bc2(C_ptr, pid_b, grp_c, d, offs_n, offs_t, mask_n, mask_t, sC0, sC1, sC2,
                           sCri, VAR_C, IS_COMPLEX)

        # ---- recompute the forward states h_t of this tile -----------------------------------
        if HAS_HIN:
            t_off = (chan * n_tiles + tile) * (dstate * NC) + offs_n * NC
            t_mask = mask_n & (tile < n_tiles)
            h0r = tl.load(hin_ptr + t_off, mask=t_mask, other=0.0)[:, None]
            if IS_COMPLEX:
                h0i = tl.load(hin_ptr + t_off + 1, mask=t_mask, other=0.0)[:, None]
            else:
                h0i = h0r
        else:
            h0r = zero_n[:, None]
            h0i = zero_n[:, None]
        ar, ai = _decay2(dt, Ar, Ai, IS_COMPLEX)
        dtu = (dt * u)[None, :]
        xr = dtu * Br
        if IS_COMPLEX:
            xi = dtu * Bi
            w0r = ar * h0r - ai * h0i
            w0i = ar * h0i + ai * h0r
        else:
            xi = xr
            w0r = ar * h0r
            w0i = w0r
        # w_t = a_t h_{t-1}: the decayed previous state (gradients of A and delta).
        hr, hi = _scan_t(ar, ai, xr + tl.where(first, w0r, 0.0), xi + tl.where(first, w0i, 0.0),
                         False, IS_COMPLEX)
        wr = tl.where(first, w0r, hr - xr)
        if IS_COMPLEX:
            wi = tl.where(first, w0i, hi - xi)

        # ---- output gradient ------------------------------------------------------------------
        if HAS_Z:
            z = tl.load(z_ptr + io, mask=mask_t, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            if IS_COMPLEX:
                y = 2.0 * tl.sum(Cr * hr - Ci * hi, axis=0)
            else:
                y = tl.sum(Cr * hr, axis=0)
            if HAS_D:
                y += Dv * u
            dz = dout * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + io, dz.to(dz_ptr.dtype.element_ty), mask=mask_t)
            dy = dout * z * sig
        else:
            dy = dout
        dyb = dy[None, :]
        if IS_COMPLEX:
            qr = 2.0 * Cr * dyb + tl.where(last, cr[:, None], 0.0)
            qi = -2.0 * Ci * dyb + tl.where(last, ci[:, None], 0.0)
        else:
            qr = Cr * dyb + tl.where(last, cr[:, None], 0.0)
            qi = qr

        # ---- adjoint: reverse scan with the next position's decay -----------------------------
        anr, ani = _decay2(dt_next, Ar, Ai, IS_COMPLEX)
        gr, gi = _scan_t(tl.where(last, 0.0, anr), tl.where(last, 0.0, -ani), qr, qi, True,
                         IS_COMPLEX)

        # ---- gradients --------------------------------------------------------------------------
        dtb = dt[None, :]
        if IS_COMPLEX:
            gBs = tl.sum(gr * Br + gi * Bi, axis=0)  # Re(sum_n g conj(B)), [BT]
            gAw = tl.sum(gr * (Ar[:, None] * wr - Ai[:, None] * wi)
                         + gi * (Ar[:, None] * wi + Ai[:, None] * wr), axis=0)
            acc_dAr += tl.sum(dtb * (gr * wr + gi * wi), axis=1)
            acc_dAi += tl.sum(dtb * (gi * wr - gr * wi), axis=1)
        else:
            gBs = tl.sum(gr * Br, axis=0)
            gAw = tl.sum(gr * (Ar[:, None] * wr), axis=0)
            acc_dAr += tl.sum(dtb * gr * wr, axis=1)
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

        # dB = g dt u, dC = dy h (2 dy conj(h) for complex): per position for variable B/C (one
        # atomic add per element and channel), summed over positions for constant ones.
        gdu = dtu
        m2 = mask_n[:, None] & mask_t[None, :]
        if VAR_B:
            off = (pid_b.to(tl.int64) * sB0 + grp_b.to(tl.int64) * sB1
                   + offs_n[:, None].to(tl.int64) * sB2 + offs_t[None, :])
            tl.atomic_add(dB_ptr + off, gr * gdu, mask=m2, sem="relaxed")
            if IS_COMPLEX:
                tl.atomic_add(dB_ptr + off + sBri, gi * gdu, mask=m2, sem="relaxed")
        else:
            acc_dBr += tl.sum(gr * gdu, axis=1)
            if IS_COMPLEX:
                acc_dBi += tl.sum(gi * gdu, axis=1)
        if IS_COMPLEX:
            dCr = 2.0 * dyb * hr
            dCi = -2.0 * dyb * hi
        else:
            dCr = dyb * hr
            dCi = dCr
        if VAR_C:
            off = (pid_b.to(tl.int64) * sC0 + grp_c.to(tl.int64) * sC1
                   + offs_n[:, None].to(tl.int64) * sC2 + offs_t[None, :])
            tl.atomic_add(dC_ptr + off, dCr, mask=m2, sem="relaxed")
            if IS_COMPLEX:
                tl.atomic_add(dC_ptr + off + sCri, dCi, mask=m2, sem="relaxed")
        else:
            acc_dCr += tl.sum(dCr, axis=1)
            if IS_COMPLEX:
                acc_dCi += tl.sum(dCi, axis=1)

        # The adjoint reaching the state that entered this tile: conj(a_0) g_0.
        if IS_COMPLEX:
            cr = tl.sum(tl.where(first, ar * gr + ai * gi, 0.0), axis=1)
            ci = tl.sum(tl.where(first, ar * gi - ai * gr, 0.0), axis=1)
        else:
            cr = tl.sum(tl.where(first, ar * gr, 0.0), axis=1)

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
            tl.store(dinit_ptr + i_off, cr, mask=mask_n)
            if IS_COMPLEX:
                tl.store(dinit_ptr + i_off + 1, ci, mask=mask_n)


@triton.jit
def _bwd_chunk_adjoint_kernel(
    # pointers
    delta_ptr, bias_ptr, A_ptr, C_ptr, z_ptr, dout_ptr, E_ptr, dtsum_ptr,
    # dims
    dim, L, n_chunks, dstate, group_c,
    # strides of C (planar layout)
    sC0, sC1, sC2, sCri,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_C: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
    TILES: tl.constexpr,
):
    """Backward pass 1: the gradient reaching each chunk's incoming state from the chunk's own
    outputs alone, E_k = sum_t conj(exp(A c_t)) q_t (q_t = dL/dh_t through y_t, c_t the inclusive
    cumulative dt from the chunk's start, at most the chunk's total); and the total T_k. The
    chunk's ``TILES`` tiles are summed in order, c_t running on across them."""
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    a_off = offs_d[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
    Ar, Ai = _load_pair(A_ptr, a_off, mask_dn, IS_COMPLEX)
    row = (pid_b * dim + offs_d).to(tl.int64)[:, None] * L

    Er = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    Ei = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    tot = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j in range(0, TILES):
        offs_t = (pid_k * TILES + j) * BLOCK_T + tl.arange(0, BLOCK_T)
        mask_t = offs_t < L
        mask = mask_d[:, None] & mask_t[None, :]
        io_off = row + offs_t[None, :]
        dt, _ = _load_dt(delta_ptr, bias_ptr, io_off, offs_d, mask_d, mask, HAS_BIAS, SOFTPLUS)
        dy = tl.load(dout_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
            dy *= z * tl.sigmoid(z)
        Cr, Ci = _load_bc(C_ptr, pid_b, (pid_d * BLOCK_D) // group_c, offs_d, offs_n, offs_t, mask_d,
                          mask_n, mask_t, sC0, sC1, sC2, sCri, VAR_C, IS_COMPLEX)
        er, ei = _decay(tot[:, None] + tl.cumsum(dt, axis=1), Ar, Ai, IS_COMPLEX)  # prod_{r<=t} a_r
        dyb = dy[:, None, :]
        if IS_COMPLEX:
            # q = 2 conj(C) dy; E += sum conj(e) q
            qr = 2.0 * Cr * dyb
            qi = -2.0 * Ci * dyb
            Er += tl.sum(er * qr + ei * qi, axis=2)
            Ei += tl.sum(er * qi - ei * qr, axis=2)
        else:
            Er += tl.sum(er * (Cr * dyb), axis=2)
        tot += tl.sum(dt, axis=1)
    s_off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, pid_k, dstate, NC)
    tl.store(E_ptr + s_off, Er, mask=mask_dn)
    if IS_COMPLEX:
        tl.store(E_ptr + s_off + 1, Ei, mask=mask_dn)
    tl.store(dtsum_ptr + (pid_b * dim + offs_d).to(tl.int64) * n_chunks + pid_k, tot, mask=mask_d)


# --------------------------------------------------------------------------------------------
# Host launchers
# --------------------------------------------------------------------------------------------

# Partial-sum rows for the gradients summed over batch and chunks (A, D, delta_bias, constant
# B/C): programs add into row (b * K + k) % _N_SLOTS, spreading atomic contention; torch sums rows.
_N_SLOTS = 32
# Scan kernels (per-channel 2-D tiles): positions per tile and warps per program, real / complex.
# On the interpreter (CPU tests) tiles are short, so a test's chunks hold several of them.
_SCAN_TILE = {False: 128, True: 64}
_SCAN_TILE_INTERPRETER = 16
_FWD_WARPS = {False: 4, True: 4}
_BWD_WARPS = {False: 4, True: 8}
# Chunk passes (carry of the sequence-parallel forward and backward): [BLOCK_D, N, T] tiles.
_PASS_BLOCK_D = 4
_PASS_TILE = {False: 32, True: 16}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _scan_tile(is_complex: bool) -> int:
    return _SCAN_TILE_INTERPRETER if _interpreting() else _SCAN_TILE[is_complex]


def _block_d(dim: int, group_sizes: list[int]) -> int:
    # A chunk-pass program's channels must lie in one group of B and of C: the block size
    # divides every group size that is < dim.
    bd = _PASS_BLOCK_D
    for gs in group_sizes:
        if gs < dim:
            while gs % bd:
                bd //= 2
    return bd


def _min_programs(dev: torch.device) -> int:
    # About eight programs per SM (132 on an H100) keep every SM busy through the tail; the
    # interpreter has no SMs (0: one chunk per row unless the caller sets chunk_len).
    if dev.type != "cuda":
        return 0
    return 8 * torch.cuda.get_device_properties(dev).multi_processor_count


def _tiles_per_chunk(n_tiles: int, other_programs: int, min_programs: int) -> int:
    """Tiles per chunk: as many as keep at least ``min_programs`` programs in the grid (powers of
    two, at most enough for the whole sequence). Longer chunks mean fewer carried states and a
    shorter carry pass; one chunk per row skips the carry passes altogether."""
    tpc = 1
    while tpc < n_tiles and other_programs * triton.cdiv(n_tiles, 2 * tpc) >= min_programs:
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
    if X.dim() == 3:
        X = X.unsqueeze(1)
    if is_complex:
        # (B, G, N, L) complex or (B, G, N, 2L) interleaved -> (B, G, N, 2, L)
        X = torch.view_as_real(X) if X.is_complex() else X.unflatten(-1, (-1, 2))
        X = X.transpose(-1, -2)
    else:
        X = X.unsqueeze(-2)
    X = X.contiguous()
    return X, True, X.shape[1], (X.stride(0), X.stride(1), X.stride(2), X.stride(3))


def _as_real_buffer(x: Tensor | None) -> Tensor | None:
    # Complex64 state tensors are read as interleaved fp32 pairs.
    if x is None:
        return None
    return (torch.view_as_real(x) if x.is_complex() else x).contiguous()


def _pass_cfg(block_d: int, block_n: int, block_t: int) -> dict:
    # Warps of the chunk passes: about 128 tile elements per thread and live tile.
    per_thread = block_d * block_n * block_t * 4 // 32
    warps = 1
    while warps < 8 and per_thread // warps > 128:
        warps *= 2
    return {"num_warps": max(warps, 2)}


class _Plan:
    """Tiling of one call, shared by the forward and the backward: ``bt`` positions per scan
    tile, ``tpc`` tiles per chunk, ``n_tiles`` and ``n_chunks``; the chunk passes use tiles of
    ``pass_bt`` positions (a divisor of the chunk) and blocks of ``bd`` channels."""

    def __init__(self, batch: int, dim: int, L: int, is_complex: bool, groups: list[int],
                 chunk_len: int | None, dev: torch.device):
        self.bt = _scan_tile(is_complex)
        if chunk_len is not None:
            self.bt = min(self.bt, chunk_len)
        self.n_tiles = triton.cdiv(L, self.bt)
        if chunk_len is None:
            self.tpc = _tiles_per_chunk(self.n_tiles, batch * dim, _min_programs(dev))
        else:
            self.tpc = chunk_len // self.bt
        self.n_chunks = triton.cdiv(self.n_tiles, self.tpc)
        chunk = self.tpc * self.bt
        self.pass_bt = min(_PASS_TILE[is_complex], chunk)
        self.pass_tiles = chunk // self.pass_bt
        self.bd = _block_d(dim, groups)


def _fwd(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, initial_state, plan, want_last,
         want_states):
    """Forward launcher. Returns (y, last_state or None, hsave): hsave holds the fp32 states
    entering every scan tile ``[B, D, n_tiles, N, NC]`` when ``want_states`` (what the backward
    reads; the initial state, or None, when there is a single tile)."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    is_complex = A.is_complex()
    nc = 2 if is_complex else 1
    (Bt, var_b, gb, sB), (Ct, var_c, gc, sC) = Bp, Cp
    A_r = _as_real_buffer(A)
    dev = u.device
    bn = triton.next_power_of_2(dstate)
    init = _as_real_buffer(initial_state)

    hin = None  # states entering every chunk
    if plan.n_chunks > 1:
        K = plan.n_chunks
        S = torch.empty(batch, dim, K, dstate, nc, device=dev, dtype=torch.float32)
        dtsum = torch.empty(batch, dim, K, device=dev, dtype=torch.float32)
        cfg = _pass_cfg(plan.bd, bn, plan.pass_bt)
        _fwd_chunk_state_kernel[(K, triton.cdiv(dim, plan.bd), batch)](
            u, delta, delta_bias, A_r, Bt, S, dtsum,
            dim, L, K, dstate, dim // gb, *sB,
            IS_COMPLEX=is_complex, VAR_B=var_b, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, BLOCK_D=plan.bd, BLOCK_N=bn, BLOCK_T=plan.pass_bt,
            TILES=plan.pass_tiles, **cfg,
        )
        hin = torch.empty_like(S)
        _carry_kernel[(triton.cdiv(dim, plan.bd), batch)](
            S, dtsum, A_r, init, hin, dim, K, dstate,
            IS_COMPLEX=is_complex, REVERSE=False, HAS_INIT=init is not None,
            BLOCK_D=plan.bd, BLOCK_N=bn, **cfg,
        )
    elif init is not None:
        hin = init.view(batch, dim, 1, dstate, nc)
    write_states = want_states and plan.n_tiles > 1
    if write_states:
        hsave = torch.empty(batch, dim, plan.n_tiles, dstate, nc, device=dev, dtype=torch.float32)
    else:
        hsave = hin if plan.n_tiles == 1 else None

    y = torch.empty(batch, dim, L, device=dev, dtype=u.dtype)
    last = torch.empty(batch, dim, dstate, nc, device=dev, dtype=torch.float32) if want_last else None
    _scan2_fwd_kernel[(plan.n_chunks, dim, batch)](
        u, delta, delta_bias, A_r, Bt, Ct, D, z, hin, y, last, hsave,
        dim, L, plan.n_chunks, plan.n_tiles, dstate, dim // gb, dim // gc, *sB, *sC,
        IS_COMPLEX=is_complex, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hin is not None,
        WRITE_LAST=want_last, WRITE_STATES=write_states, BLOCK_N=bn, BLOCK_T=plan.bt,
        TILES=plan.tpc, num_warps=_FWD_WARPS[is_complex],
    )
    if last is not None:
        last = torch.view_as_complex(last) if is_complex else last.squeeze(-1)
    return y, last, hsave


def _bwd(dout, dlast, u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, hsave, plan,
         want_dinit):
    """Backward launcher. Returns fp32 / complex gradients
    (du, ddelta, dA, dB_buf, dC_buf, dD, dz, dbias, dinit); du, ddelta, dz in input dtypes."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    is_complex = A.is_complex()
    nc = 2 if is_complex else 1
    (Bt, var_b, gb, sB), (Ct, var_c, gc, sC) = Bp, Cp
    A_r = _as_real_buffer(A)
    bn = triton.next_power_of_2(dstate)
    K = plan.n_chunks
    dev = u.device
    f32 = {"device": dev, "dtype": torch.float32}
    dlast_r = _as_real_buffer(dlast)

    cin = None  # adjoint entering every chunk's end from later chunks
    if K > 1:
        E = torch.empty(batch, dim, K, dstate, nc, **f32)
        dtsum = torch.empty(batch, dim, K, **f32)
        cfg = _pass_cfg(plan.bd, bn, plan.pass_bt)
        _bwd_chunk_adjoint_kernel[(K, triton.cdiv(dim, plan.bd), batch)](
            delta, delta_bias, A_r, Ct, z, dout, E, dtsum,
            dim, L, K, dstate, dim // gc, *sC,
            IS_COMPLEX=is_complex, VAR_C=var_c, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, BLOCK_D=plan.bd, BLOCK_N=bn, BLOCK_T=plan.pass_bt,
            TILES=plan.pass_tiles, **cfg,
        )
        cin = torch.empty_like(E)
        _carry_kernel[(triton.cdiv(dim, plan.bd), batch)](
            E, dtsum, A_r, dlast_r, cin, dim, K, dstate,
            IS_COMPLEX=is_complex, REVERSE=True, HAS_INIT=dlast_r is not None,
            BLOCK_D=plan.bd, BLOCK_N=bn, **cfg,
        )
    elif dlast_r is not None:
        cin = dlast_r.view(batch, dim, 1, dstate, nc)

    n_slots = min(_N_SLOTS, batch * K)
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    # Accumulators start at zero (atomics add into them).
    dA = torch.zeros(n_slots, dim, dstate, nc, **f32)
    dB = torch.zeros(Bt.shape if var_b else (n_slots, *Bt.shape), **f32)
    dC = torch.zeros(Ct.shape if var_c else (n_slots, *Ct.shape), **f32)
    dD = torch.zeros(n_slots, dim, **f32) if D is not None else None
    dbias = torch.zeros(n_slots, dim, **f32) if delta_bias is not None else None
    dinit = torch.empty(batch, dim, dstate, nc, **f32) if want_dinit else None
    _scan2_bwd_kernel[(K, dim, batch)](
        u, delta, delta_bias, A_r, Bt, Ct, D, z, dout, hsave, cin,
        du, ddelta, dz, dA, dB, dC, dD, dbias, dinit,
        dim, L, K, plan.n_tiles, dstate, dim // gb, dim // gc, n_slots, *sB, *sC,
        IS_COMPLEX=is_complex, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hsave is not None,
        HAS_CIN=cin is not None, WRITE_DINIT=want_dinit, BLOCK_N=bn, BLOCK_T=plan.bt,
        TILES=plan.tpc, num_warps=_BWD_WARPS[is_complex],
    )
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


# --------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                return_last_state, chunk_len):
        u, delta, z, D, delta_bias = _contig(u), _contig(delta), _contig(z), _contig(D), _contig(delta_bias)
        is_complex = A.is_complex()
        A = A.contiguous()
        Bp, Cp = _prep_bc(B, is_complex), _prep_bc(C, is_complex)
        plan = _Plan(u.shape[0], u.shape[1], u.shape[2], is_complex,
                     [u.shape[1] // Bp[2], u.shape[1] // Cp[2]], chunk_len, u.device)
        # Tile states are saved only when a gradient will be asked for.
        want_states = any(ctx.needs_input_grad)
        y, last, hsave = _fwd(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, initial_state,
                              plan, return_last_state, want_states)
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
        is_complex = A.is_complex()
        du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = _bwd(
            dy.contiguous(), dlast, u, delta, A, (Bt, *b_meta), (Ct, *c_meta), D, z, delta_bias,
            delta_softplus, hsave, plan, init_dtype is not None and ctx.needs_input_grad[8],
        )
        grads = (
            du, ddelta, dA.to(A.dtype),
            _grad_like(dB, B_like, is_complex), _grad_like(dC, C_like, is_complex),
            dD.to(D.dtype) if dD is not None else None,
            dz,
            dbias.to(delta_bias.dtype) if dbias is not None else None,
            dinit.to(init_dtype) if dinit is not None else None,
        )
        needs = ctx.needs_input_grad
        return (*(g if needs[i] else None for i, g in enumerate(grads)), None, None, None)


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
      when batch x D is large).

    Returns y ``[B, D, L]``, or (y, last_state ``[B, D, N]``) when ``return_last_state``.
    Differentiable in every tensor argument, including through last_state. Gradients of A, D,
    delta_bias and of B/C are accumulated with fp32 atomics, so they are not bitwise
    deterministic. Under ``torch.autocast`` the kernels take the inputs as given (no casting).

    torch.compile: a deliberate graph break (``torch.compiler.disable``); the kernels run eagerly
    between compiled regions.
    """
    if chunk_len is not None:
        chunk_len = max(2, triton.next_power_of_2(int(chunk_len)))
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                      delta_softplus, return_last_state, chunk_len)
