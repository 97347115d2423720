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
def _load_bc(ptr, pid_b, grp, offs_d, offs_n, offs_t, mask_d, mask_n, mask_t, s0, s1, s2, s3,
             VAR: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """B or C as fp32 tiles broadcastable to ``[BLOCK_D, BLOCK_N, BLOCK_T]``.

    Variable: ``ptr[b, g, n, t * s3 (+1 imag)]`` -> ``[1, BLOCK_N, BLOCK_T]``; constant:
    ``ptr[d * s1 + n * s2 (+1 imag)]`` -> ``[BLOCK_D, BLOCK_N, 1]``. Imaginary part is 0 for real.
    """
    if VAR:
        base = pid_b.to(tl.int64) * s0 + grp.to(tl.int64) * s1
        off = base + offs_n[:, None].to(tl.int64) * s2 + offs_t[None, :].to(tl.int64) * s3
        m = mask_n[:, None] & mask_t[None, :]
        re = tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)[None, :, :]
        if IS_COMPLEX:
            im = tl.load(ptr + off + 1, mask=m, other=0.0).to(tl.float32)[None, :, :]
        else:
            im = tl.zeros_like(re)
    else:
        off = offs_d[:, None].to(tl.int64) * s1 + offs_n[None, :] * s2
        m = mask_d[:, None] & mask_n[None, :]
        re = tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)[:, :, None]
        if IS_COMPLEX:
            im = tl.load(ptr + off + 1, mask=m, other=0.0).to(tl.float32)[:, :, None]
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
def _linear_scan(ar, ai, br, bi, REVERSE: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """h_t = a_t h_{t-1} + b_t along axis 2 (or h_t = a_t h_{t+1} + b_t when REVERSE)."""
    if IS_COMPLEX:
        _, _, hr, hi = tl.associative_scan((ar, ai, br, bi), 2, _combine_complex, reverse=REVERSE)
    else:
        _, hr = tl.associative_scan((ar, br), 2, _combine_real, reverse=REVERSE)
        hi = hr
    return hr, hi


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


@triton.jit
def _fwd_scan_kernel(
    # pointers
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, hin_ptr, y_ptr, last_ptr,
    hsave_ptr,
    # dims
    dim, L, n_chunks, n_tiles, dstate, group_b, group_c,
    # strides of B and C
    sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    WRITE_LAST: tl.constexpr, WRITE_STATES: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, TILES: tl.constexpr,
):
    """Pass 3: rescan each chunk from its carried-in state and write y (and the final state).
    The chunk's ``TILES`` tiles are scanned in order, the state carried between them in
    registers; with ``WRITE_STATES`` the state entering every tile is saved ``[B, D, n_tiles, N]``
    for the backward, which works one tile at a time."""
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    loc_t = tl.arange(0, BLOCK_T)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    row = (pid_b * dim + offs_d).to(tl.int64)[:, None] * L  # [BD, 1]
    a_off = offs_d[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
    Ar, Ai = _load_pair(A_ptr, a_off, mask_dn, IS_COMPLEX)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    first = (loc_t == 0)[None, None, :]
    last = (loc_t == BLOCK_T - 1)[None, None, :]

    # The state entering the chunk, [BD, BN]; zero unless carried in.
    if HAS_HIN:
        s_off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, pid_k, dstate, NC)
        h0r, h0i = _load_pair(hin_ptr, s_off, mask_dn, IS_COMPLEX)
    else:
        h0r = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        h0i = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)

    for j in range(0, TILES):
        tile = pid_k * TILES + j
        offs_t = tile * BLOCK_T + loc_t
        mask_t = offs_t < L
        mask = mask_d[:, None] & mask_t[None, :]
        io_off = row + offs_t[None, :]  # [BD, BT]
        if WRITE_STATES:
            t_off = _state_off(pid_b, offs_d, offs_n, dim, n_tiles, tile, dstate, NC)
            t_mask = mask_dn & (tile < n_tiles)
            tl.store(hsave_ptr + t_off, h0r, mask=t_mask)
            if IS_COMPLEX:
                tl.store(hsave_ptr + t_off + 1, h0i, mask=t_mask)

        u = tl.load(u_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _load_dt(delta_ptr, bias_ptr, io_off, offs_d, mask_d, mask, HAS_BIAS, SOFTPLUS)
        Br, Bi = _load_bc(B_ptr, pid_b, (pid_d * BLOCK_D) // group_b, offs_d, offs_n, offs_t, mask_d,
                          mask_n, mask_t, sB0, sB1, sB2, sB3, VAR_B, IS_COMPLEX)
        Cr, Ci = _load_bc(C_ptr, pid_b, (pid_d * BLOCK_D) // group_c, offs_d, offs_n, offs_t, mask_d,
                          mask_n, mask_t, sC0, sC1, sC2, sC3, VAR_C, IS_COMPLEX)

        ar, ai = _decay(dt, Ar, Ai, IS_COMPLEX)  # [BD, BN, BT]
        dtu = (dt * u)[:, None, :]
        xr = dtu * Br
        xi = dtu * Bi
        # The carried-in state enters as an extra input at the tile's first position.
        if IS_COMPLEX:
            xr += tl.where(first, ar * h0r[:, :, None] - ai * h0i[:, :, None], 0.0)
            xi += tl.where(first, ar * h0i[:, :, None] + ai * h0r[:, :, None], 0.0)
        else:
            xr += tl.where(first, ar * h0r[:, :, None], 0.0)
        hr, hi = _linear_scan(ar, ai, xr, xi, False, IS_COMPLEX)  # [BD, BN, BT]

        if IS_COMPLEX:
            y = 2.0 * tl.sum(Cr * hr - Ci * hi, axis=1)  # [BD, BT]
        else:
            y = tl.sum(Cr * hr, axis=1)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            z = tl.load(z_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + io_off, y.to(y_ptr.dtype.element_ty), mask=mask)

        # Padded positions past L keep the state unchanged, so the tile's last column is the
        # state leaving it (h_{L-1} for the last tile).
        h0r = tl.sum(tl.where(last, hr, 0.0), axis=2)
        if IS_COMPLEX:
            h0i = tl.sum(tl.where(last, hi, 0.0), axis=2)

    if WRITE_LAST:
        if pid_k == n_chunks - 1:
            l_off = _state_off(pid_b, offs_d, offs_n, dim, 1, 0, dstate, NC)
            tl.store(last_ptr + l_off, h0r, mask=mask_dn)
            if IS_COMPLEX:
                tl.store(last_ptr + l_off + 1, h0i, mask=mask_dn)


@triton.jit
def _bwd_chunk_adjoint_kernel(
    # pointers
    delta_ptr, bias_ptr, A_ptr, C_ptr, z_ptr, dout_ptr, E_ptr, dtsum_ptr,
    # dims
    dim, L, n_chunks, dstate, group_c,
    # strides of C
    sC0, sC1, sC2, sC3,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_C: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Backward pass 1: the gradient reaching each chunk's incoming state from its own outputs
    alone, E_k = sum_t conj(exp(A S_t)) q_t with q_t = dL/dh_t through y_t; and T_k."""
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = pid_k * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_t = offs_t < L
    mask = mask_d[:, None] & mask_t[None, :]
    mask_dn = mask_d[:, None] & mask_n[None, :]
    io_off = (pid_b * dim + offs_d).to(tl.int64)[:, None] * L + offs_t[None, :]

    dt, _ = _load_dt(delta_ptr, bias_ptr, io_off, offs_d, mask_d, mask, HAS_BIAS, SOFTPLUS)
    dy = tl.load(dout_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
        dy *= z * tl.sigmoid(z)
    a_off = offs_d[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
    Ar, Ai = _load_pair(A_ptr, a_off, mask_dn, IS_COMPLEX)
    Cr, Ci = _load_bc(C_ptr, pid_b, (pid_d * BLOCK_D) // group_c, offs_d, offs_n, offs_t, mask_d,
                      mask_n, mask_t, sC0, sC1, sC2, sC3, VAR_C, IS_COMPLEX)

    er, ei = _decay(tl.cumsum(dt, axis=1), Ar, Ai, IS_COMPLEX)  # prod_{r<=t} a_r
    dyb = dy[:, None, :]
    s_off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, pid_k, dstate, NC)
    if IS_COMPLEX:
        # q = 2 conj(C) dy; E = sum conj(e) q
        qr = 2.0 * Cr * dyb
        qi = -2.0 * Ci * dyb
        tl.store(E_ptr + s_off, tl.sum(er * qr + ei * qi, axis=2), mask=mask_dn)
        tl.store(E_ptr + s_off + 1, tl.sum(er * qi - ei * qr, axis=2), mask=mask_dn)
    else:
        tl.store(E_ptr + s_off, tl.sum(er * (Cr * dyb), axis=2), mask=mask_dn)
    tl.store(dtsum_ptr + (pid_b * dim + offs_d).to(tl.int64) * n_chunks + pid_k, tl.sum(dt, axis=1),
             mask=mask_d)


@triton.jit
def _bwd_scan_kernel(
    # pointers: inputs
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dout_ptr, hin_ptr, cin_ptr,
    # pointers: outputs (du, ddelta, dz in their input dtypes; the rest fp32 accumulators)
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dinit_ptr,
    # dims
    dim, L, n_chunks, dstate, group_b, group_c, n_slots,
    # strides of B and C (also of their fp32 gradient buffers when variable)
    sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3,
    # meta
    IS_COMPLEX: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_HIN: tl.constexpr,
    HAS_CIN: tl.constexpr, WRITE_DINIT: tl.constexpr,
    BLOCK_D: tl.constexpr, SUB_BLOCKS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Backward pass 3: recompute h over the chunk (forward scan from the carried-in state), run
    the adjoint g_t = q_t + conj(a_{t+1}) g_{t+1} (reverse scan from the carried-in adjoint), and
    form every gradient. Sums over batch and chunks go to ``n_slots`` fp32 partial rows by atomics.

    A program owns ``SUB_BLOCKS`` consecutive blocks of ``BLOCK_D`` channels, all in one B/C
    group, and walks them one register tile at a time; the gradients of variable B/C are summed
    over all its channels in registers and added to memory once per program."""
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    NC: tl.constexpr = 2 if IS_COMPLEX else 1
    d_start = pid_d * (BLOCK_D * SUB_BLOCKS)
    offs_n = tl.arange(0, BLOCK_N)
    loc_t = tl.arange(0, BLOCK_T)
    offs_t = pid_k * BLOCK_T + loc_t
    mask_n = offs_n < dstate
    mask_t = offs_t < L
    grp_b = d_start // group_b
    grp_c = d_start // group_c
    slot = (pid_b * n_chunks + pid_k) % n_slots
    first = (loc_t == 0)[None, None, :]
    last = (loc_t == BLOCK_T - 1)[None, None, :]
    bc_mask = mask_n[:, None] & mask_t[None, :]

    # Variable B/C are shared by every channel of the program: load them once.
    offs_d0 = d_start + tl.arange(0, BLOCK_D)
    mask_d0 = offs_d0 < dim
    if VAR_B:
        Br_v, Bi_v = _load_bc(B_ptr, pid_b, grp_b, offs_d0, offs_n, offs_t, mask_d0, mask_n, mask_t,
                              sB0, sB1, sB2, sB3, VAR_B, IS_COMPLEX)
    if VAR_C:
        Cr_v, Ci_v = _load_bc(C_ptr, pid_b, grp_c, offs_d0, offs_n, offs_t, mask_d0, mask_n, mask_t,
                              sC0, sC1, sC2, sC3, VAR_C, IS_COMPLEX)
    # Channel sums of the variable B/C gradients over the program's blocks.  # [BN, BT]
    acc_dBr = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
    acc_dBi = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
    acc_dCr = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
    acc_dCi = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)

    for sub in range(0, SUB_BLOCKS):
        offs_d = d_start + sub * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < dim
        mask = mask_d[:, None] & mask_t[None, :]
        mask_dn = mask_d[:, None] & mask_n[None, :]
        io_off = (pid_b * dim + offs_d).to(tl.int64)[:, None] * L + offs_t[None, :]

        u = tl.load(u_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
        dt, raw = _load_dt(delta_ptr, bias_ptr, io_off, offs_d, mask_d, mask, HAS_BIAS, SOFTPLUS)
        # Decay of the next position, for the adjoint; positions past the chunk are masked to
        # dt = 0 (their factor is replaced by the carried-in adjoint below).
        mask_next = mask_d[:, None] & ((offs_t + 1) < L)[None, :] & (loc_t < BLOCK_T - 1)[None, :]
        dt_next, _ = _load_dt(delta_ptr, bias_ptr, io_off + 1, offs_d, mask_d, mask_next, HAS_BIAS,
                              SOFTPLUS)
        dout = tl.load(dout_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
        a_off = offs_d[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
        Ar, Ai = _load_pair(A_ptr, a_off, mask_dn, IS_COMPLEX)
        if VAR_B:
            Br = Br_v
            Bi = Bi_v
        else:
            Br, Bi = _load_bc(B_ptr, pid_b, grp_b, offs_d, offs_n, offs_t, mask_d, mask_n, mask_t,
                              sB0, sB1, sB2, sB3, VAR_B, IS_COMPLEX)
        if VAR_C:
            Cr = Cr_v
            Ci = Ci_v
        else:
            Cr, Ci = _load_bc(C_ptr, pid_b, grp_c, offs_d, offs_n, offs_t, mask_d, mask_n, mask_t,
                              sC0, sC1, sC2, sC3, VAR_C, IS_COMPLEX)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]

        # ---- recompute the forward states h_t of this chunk -----------------------------------
        ar, ai = _decay(dt, Ar, Ai, IS_COMPLEX)
        dtu = (dt * u)[:, None, :]
        xr = dtu * Br
        xi = dtu * Bi
        s_off = _state_off(pid_b, offs_d, offs_n, dim, n_chunks, pid_k, dstate, NC)
        if HAS_HIN:
            h0r, h0i = _load_pair(hin_ptr, s_off, mask_dn, IS_COMPLEX)
            h0r = h0r[:, :, None]
            h0i = h0i[:, :, None]
        else:
            h0r = tl.zeros([BLOCK_D, BLOCK_N, 1], dtype=tl.float32)
            h0i = tl.zeros([BLOCK_D, BLOCK_N, 1], dtype=tl.float32)
        # w_t = a_t h_{t-1}: the decayed previous state, needed for the gradients of A and delta.
        w0r = ar * h0r - ai * h0i
        w0i = ar * h0i + ai * h0r
        hr, hi = _linear_scan(ar, ai, xr + tl.where(first, w0r, 0.0), xi + tl.where(first, w0i, 0.0),
                              False, IS_COMPLEX)
        wr = tl.where(first, w0r, hr - xr)
        wi = tl.where(first, w0i, hi - xi)

        # ---- output gradient ------------------------------------------------------------------
        if HAS_Z:
            z = tl.load(z_ptr + io_off, mask=mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(z)
            if IS_COMPLEX:
                y = 2.0 * tl.sum(Cr * hr - Ci * hi, axis=1)
            else:
                y = tl.sum(Cr * hr, axis=1)
            if HAS_D:
                y += Dv * u
            dz = dout * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + io_off, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dout * z * sig
        else:
            dy = dout
        dyb = dy[:, None, :]
        if IS_COMPLEX:
            qr = 2.0 * Cr * dyb
            qi = -2.0 * Ci * dyb
        else:
            qr = Cr * dyb
            qi = qr

        # ---- adjoint: reverse scan with the next position's decay -----------------------------
        anr, ani = _decay(dt_next, Ar, Ai, IS_COMPLEX)
        if HAS_CIN:
            c_r, c_i = _load_pair(cin_ptr, s_off, mask_dn, IS_COMPLEX)
            qr += tl.where(last, c_r[:, :, None], 0.0)
            if IS_COMPLEX:
                qi += tl.where(last, c_i[:, :, None], 0.0)
        gr, gi = _linear_scan(tl.where(last, 0.0, anr), tl.where(last, 0.0, -ani), qr, qi,
                              True, IS_COMPLEX)

        # ---- gradients --------------------------------------------------------------------------
        dtb = dt[:, None, :]
        ub = u[:, None, :]
        if IS_COMPLEX:
            gB = gr * Br + gi * Bi  # Re(g conj(B))
            gAw = gr * (Ar[:, :, None] * wr - Ai[:, :, None] * wi) \
                + gi * (Ar[:, :, None] * wi + Ai[:, :, None] * wr)
            dA_r = tl.sum(dtb * (gr * wr + gi * wi), axis=2)
            dA_i = tl.sum(dtb * (gi * wr - gr * wi), axis=2)
        else:
            gB = gr * Br
            gAw = gr * (Ar[:, :, None] * wr)
            dA_r = tl.sum(dtb * gr * wr, axis=2)
        gBs = tl.sum(gB, axis=1)  # [BD, BT]
        du = dt * gBs
        if HAS_D:
            du += Dv * dy
            dD = tl.sum(tl.where(mask, dy * u, 0.0), axis=1)
            tl.atomic_add(dD_ptr + slot * dim + offs_d, dD, mask=mask_d)
        tl.store(du_ptr + io_off, du.to(du_ptr.dtype.element_ty), mask=mask)
        ddt = u * gBs + tl.sum(gAw, axis=1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)  # padded positions carry adjoint but no delta
        tl.store(ddelta_ptr + io_off, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + slot * dim + offs_d, tl.sum(ddt, axis=1), mask=mask_d)

        # Per-channel sums (A, D, bias, constant B/C) have one address per channel, so they gain
        # nothing from the channel loop and are added per block.
        p_off = (slot * dim + offs_d).to(tl.int64)[:, None] * (dstate * NC) + (offs_n * NC)[None, :]
        tl.atomic_add(dA_ptr + p_off, dA_r, mask=mask_dn)
        if IS_COMPLEX:
            tl.atomic_add(dA_ptr + p_off + 1, dA_i, mask=mask_dn)

        # dB = g dt u, dC = dy h (2 dy conj(h) for complex); variable ones sum over the program's
        # channels (all in one group), constant ones over positions.
        gdu = dtb * ub
        if IS_COMPLEX:
            dCr = 2.0 * dyb * hr
            dCi = -2.0 * dyb * hi
        else:
            dCr = dyb * hr
            dCi = dCr
        if VAR_B:
            acc_dBr += tl.sum(gr * gdu, axis=0)
            if IS_COMPLEX:
                acc_dBi += tl.sum(gi * gdu, axis=0)
        else:
            tl.atomic_add(dB_ptr + p_off, tl.sum(gr * gdu, axis=2), mask=mask_dn)
            if IS_COMPLEX:
                tl.atomic_add(dB_ptr + p_off + 1, tl.sum(gi * gdu, axis=2), mask=mask_dn)
        if VAR_C:
            acc_dCr += tl.sum(dCr, axis=0)
            if IS_COMPLEX:
                acc_dCi += tl.sum(dCi, axis=0)
        else:
            tl.atomic_add(dC_ptr + p_off, tl.sum(dCr, axis=2), mask=mask_dn)
            if IS_COMPLEX:
                tl.atomic_add(dC_ptr + p_off + 1, tl.sum(dCi, axis=2), mask=mask_dn)

        if WRITE_DINIT:
            if pid_k == 0:
                # dL/dh_in = conj(a_0) g_0
                i_off = _state_off(pid_b, offs_d, offs_n, dim, 1, 0, dstate, NC)
                if IS_COMPLEX:
                    dr = tl.sum(tl.where(first, ar * gr + ai * gi, 0.0), axis=2)
                    di = tl.sum(tl.where(first, ar * gi - ai * gr, 0.0), axis=2)
                    tl.store(dinit_ptr + i_off + 1, di, mask=mask_dn)
                else:
                    dr = tl.sum(tl.where(first, ar * gr, 0.0), axis=2)
                tl.store(dinit_ptr + i_off, dr, mask=mask_dn)

    # One atomic add per B/C element per program (the other programs of the group add theirs).
    if VAR_B:
        off = pid_b.to(tl.int64) * sB0 + grp_b.to(tl.int64) * sB1 \
            + offs_n[:, None].to(tl.int64) * sB2 + offs_t[None, :].to(tl.int64) * sB3
        tl.atomic_add(dB_ptr + off, acc_dBr, mask=bc_mask)
        if IS_COMPLEX:
            tl.atomic_add(dB_ptr + off + 1, acc_dBi, mask=bc_mask)
    if VAR_C:
        off = pid_b.to(tl.int64) * sC0 + grp_c.to(tl.int64) * sC1 \
            + offs_n[:, None].to(tl.int64) * sC2 + offs_t[None, :].to(tl.int64) * sC3
        tl.atomic_add(dC_ptr + off, acc_dCr, mask=bc_mask)
        if IS_COMPLEX:
            tl.atomic_add(dC_ptr + off + 1, acc_dCi, mask=bc_mask)


# --------------------------------------------------------------------------------------------
# Host launchers
# --------------------------------------------------------------------------------------------

# Partial-sum rows for the gradients summed over batch and chunks (A, D, delta_bias, constant
# B/C): programs add into row (b * K + k) % _N_SLOTS, spreading atomic contention; torch sums rows.
_N_SLOTS = 32
# Most channels one backward program walks through (in blocks of BLOCK_D).
_MAX_BWD_CHANNELS = 32


def _tile_len(is_complex: bool) -> int:
    # A register tile is BLOCK_D x BLOCK_N x T; 4 channels x 32 positions was the best tile of
    # the associative-scan forward on an H100 (see DESIGN.md); complex needs twice the registers
    # per element, hence half the positions.
    return 16 if is_complex else 32


def _block_d(dim: int, group_sizes: list[int]) -> int:
    # A program's channels must lie in one group of B and of C (their gradients are summed over
    # the block before one atomic add): the block size divides every group size that is < dim.
    bd = 4
    for gs in group_sizes:
        if gs < dim:
            while gs % bd:
                bd //= 2
    return bd


def _bwd_sub_blocks(dim: int, group_sizes: list[int], block_d: int, other_programs: int,
                    min_programs: int) -> int:
    """Blocks of ``block_d`` channels per backward program. Variable B/C gradients are summed over
    a program's channels in registers, so each program adds once per B/C element: more channels per
    program means fewer atomics (dim 1536, one group: 384 -> 48 adds per element at 32 channels).
    The program's channels must lie in one group (their count divides every group size), and the
    grid keeps at least ``min_programs`` programs so the GPU stays full."""
    best = 1
    for k in range(1, _MAX_BWD_CHANNELS // block_d + 1):
        if all(gs % (block_d * k) == 0 for gs in group_sizes):
            if other_programs * triton.cdiv(dim, block_d * k) >= min_programs or k == 1:
                best = k
    return best


def _min_programs(dev: torch.device) -> int:
    # About four programs per SM (132 on an H100) keep every SM busy through the tail; the
    # interpreter has no SMs, so CPU runs use the largest channel count (and test its loop).
    if dev.type != "cuda":
        return 0
    return 4 * torch.cuda.get_device_properties(dev).multi_processor_count


def _prep_bc(X: Tensor, is_complex: bool) -> tuple[Tensor, bool, int, tuple[int, int, int, int]]:
    """Normalise B or C to one layout the kernels read: returns (tensor, variable, groups, strides).

    Constant: (D, N) real, or (D, N, 2) real/imag for a complex scan; strides (0, d, n, 0).
    Variable: (B, G, N, L * NC) with real/imag interleaved along the last axis; strides
    (b, g, n, NC). Always contiguous, so fp32 gradient buffers of the same shape share the strides.
    """
    if X.dim() == 2:
        if is_complex:
            X = torch.view_as_real(X.to(torch.complex64)).contiguous()
            return X, False, 1, (0, X.stride(0), 2, 0)
        X = X.to(torch.float32).contiguous()
        return X, False, 1, (0, X.stride(0), 1, 0)
    if X.dim() == 3:
        X = X.unsqueeze(1)
    if X.is_complex():
        X = torch.view_as_real(X).flatten(-2)  # (B, G, N, L, 2) -> (B, G, N, 2L)
    X = X.contiguous()
    return X, True, X.shape[1], (X.stride(0), X.stride(1), X.stride(2), 2 if is_complex else 1)


def _as_real_buffer(x: Tensor | None) -> Tensor | None:
    # Complex64 state tensors are read as interleaved fp32 pairs.
    if x is None:
        return None
    return (torch.view_as_real(x) if x.is_complex() else x).contiguous()


def _launch_cfg(block_d: int, block_n: int, block_t: int, live_tiles: int = 4,
                maxnreg: int | None = None) -> dict:
    # Warps scale with the registers a program needs (tile size x tiles alive at once; the
    # backward keeps about 20 alive); the interpreter ignores this. Not tuned yet.
    per_thread = block_d * block_n * block_t * live_tiles // 32
    warps = 1
    while warps < 8 and per_thread // warps > 128:
        warps *= 2
    cfg = {"num_warps": max(warps, 2)}
    if maxnreg is not None:
        cfg["maxnreg"] = maxnreg
    return cfg


# Register caps for the looping kernels. A loop over tiles or channel blocks keeps more values
# alive than one tile did: compiled for sm_90 (ptxas of triton 3.6, N = 16), the real backward
# went from 128 to 180 registers a thread at 8 warps (one program per SM instead of two), the
# real forward scan from 96 to 168 at 2 warps. Capped at 128, ptxas spills 16 bytes (backward)
# and nothing (forward). The complex forward (239 registers) would spill 224 bytes at 128 and is
# left alone. Unmeasured on the GPU: None turns a cap off.
_BWD_MAXNREG: int | None = 128
_FWD_MAXNREG: int | None = 128


def _fwd_tiles_per_chunk(n_tiles: int, other_programs: int, min_programs: int) -> int:
    """Tiles per forward chunk: as many as keep at least ``min_programs`` programs in the grid
    (powers of two, at most enough for the whole sequence). Longer chunks mean fewer chunk-boundary
    states and a shorter carry pass; one chunk per row skips passes 1 and 2."""
    tpc = 1
    while tpc < n_tiles and other_programs * triton.cdiv(n_tiles, 2 * tpc) >= min_programs:
        tpc *= 2
    return tpc


def _fwd(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, initial_state, chunk_len, want_last):
    """Forward launcher. ``chunk_len`` is positions per chunk (None: chosen here); a chunk is one
    or more tiles of ``bt = min(chunk_len, default)`` positions. Returns (y, last_state or None,
    hin, bt) with hin the fp32 states entering every tile ``[B, D, ceil(L / bt), N(, 2)]`` (None
    when there is one tile and no initial state), what the backward reads."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    is_complex = A.is_complex()
    nc = 2 if is_complex else 1
    (Bt, var_b, gb, sB), (Ct, var_c, gc, sC) = Bp, Cp
    A_r = _as_real_buffer(A)
    dev = u.device
    bd = _block_d(dim, [dim // gb, dim // gc])
    bn = triton.next_power_of_2(dstate)
    bt = _tile_len(is_complex)
    if chunk_len is not None:
        bt = min(bt, chunk_len)
    n_tiles = triton.cdiv(L, bt)
    if chunk_len is None:
        tpc = _fwd_tiles_per_chunk(n_tiles, batch * triton.cdiv(dim, bd), _min_programs(dev))
    else:
        tpc = chunk_len // bt
    n_chunks = triton.cdiv(n_tiles, tpc)
    cfg = _launch_cfg(bd, bn, bt)
    grid = (n_chunks, triton.cdiv(dim, bd), batch)
    init = _as_real_buffer(initial_state)

    hin = None  # states entering every chunk
    if n_chunks > 1:
        S = torch.empty(batch, dim, n_chunks, dstate, nc, device=dev, dtype=torch.float32)
        dtsum = torch.empty(batch, dim, n_chunks, device=dev, dtype=torch.float32)
        _fwd_chunk_state_kernel[grid](
            u, delta, delta_bias, A_r, Bt, S, dtsum,
            dim, L, n_chunks, dstate, dim // gb, *sB,
            IS_COMPLEX=is_complex, VAR_B=var_b, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, BLOCK_D=bd, BLOCK_N=bn, BLOCK_T=bt, TILES=tpc, **cfg,
        )
        hin = torch.empty_like(S)
        _carry_kernel[(triton.cdiv(dim, bd), batch)](
            S, dtsum, A_r, init, hin, dim, n_chunks, dstate,
            IS_COMPLEX=is_complex, REVERSE=False, HAS_INIT=init is not None,
            BLOCK_D=bd, BLOCK_N=bn, **cfg,
        )
    elif init is not None:
        hin = init.view(batch, dim, 1, dstate, nc)
    # With one tile per chunk the chunk states are the tile states; otherwise pass 3 saves them.
    write_states = tpc > 1 and n_tiles > 1
    hsave = torch.empty(batch, dim, n_tiles, dstate, nc, device=dev, dtype=torch.float32) \
        if write_states else hin

    y = torch.empty(batch, dim, L, device=dev, dtype=u.dtype)
    last = torch.empty(batch, dim, dstate, nc, device=dev, dtype=torch.float32) if want_last else None
    _fwd_scan_kernel[grid](
        u, delta, delta_bias, A_r, Bt, Ct, D, z, hin, y, last, hsave,
        dim, L, n_chunks, n_tiles, dstate, dim // gb, dim // gc, *sB, *sC,
        IS_COMPLEX=is_complex, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hin is not None,
        WRITE_LAST=want_last, WRITE_STATES=write_states, BLOCK_D=bd, BLOCK_N=bn, BLOCK_T=bt,
        TILES=tpc,
        **_launch_cfg(bd, bn, bt, maxnreg=_FWD_MAXNREG if tpc > 1 and not is_complex else None),
    )
    if last is not None:
        last = torch.view_as_complex(last) if is_complex else last.squeeze(-1)
    return y, last, hsave, bt


def _bwd(dout, dlast, u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus, hin, chunk_len,
         want_dinit):
    """Backward launcher. Returns fp32 / complex gradients
    (du, ddelta, dA, dB_buf, dC_buf, dD, dz, dbias, dinit); du, ddelta, dz in input dtypes."""
    batch, dim, L = u.shape
    dstate = A.shape[1]
    is_complex = A.is_complex()
    nc = 2 if is_complex else 1
    (Bt, var_b, gb, sB), (Ct, var_c, gc, sC) = Bp, Cp
    A_r = _as_real_buffer(A)
    bt = chunk_len
    n_chunks = triton.cdiv(L, bt)
    bd = _block_d(dim, [dim // gb, dim // gc])
    bn = triton.next_power_of_2(dstate)
    cfg = _launch_cfg(bd, bn, bt)
    grid = (n_chunks, triton.cdiv(dim, bd), batch)
    dev = u.device
    f32 = {"device": dev, "dtype": torch.float32}
    dlast_r = _as_real_buffer(dlast)

    cin = None
    if n_chunks > 1:
        E = torch.empty(batch, dim, n_chunks, dstate, nc, **f32)
        dtsum = torch.empty(batch, dim, n_chunks, **f32)
        _bwd_chunk_adjoint_kernel[grid](
            delta, delta_bias, A_r, Ct, z, dout, E, dtsum,
            dim, L, n_chunks, dstate, dim // gc, *sC,
            IS_COMPLEX=is_complex, VAR_C=var_c, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus, BLOCK_D=bd, BLOCK_N=bn, BLOCK_T=bt, **cfg,
        )
        cin = torch.empty_like(E)
        _carry_kernel[(triton.cdiv(dim, bd), batch)](
            E, dtsum, A_r, dlast_r, cin, dim, n_chunks, dstate,
            IS_COMPLEX=is_complex, REVERSE=True, HAS_INIT=dlast_r is not None,
            BLOCK_D=bd, BLOCK_N=bn, **cfg,
        )
    elif dlast_r is not None:
        cin = dlast_r.view(batch, dim, 1, dstate, nc)

    n_slots = min(_N_SLOTS, batch * n_chunks)
    n_sub = _bwd_sub_blocks(dim, [dim // gb, dim // gc], bd, batch * n_chunks, _min_programs(dev))
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
    _bwd_scan_kernel[(n_chunks, triton.cdiv(dim, bd * n_sub), batch)](
        u, delta, delta_bias, A_r, Bt, Ct, D, z, dout, hin, cin,
        du, ddelta, dz, dA, dB, dC, dD, dbias, dinit,
        dim, L, n_chunks, dstate, dim // gb, dim // gc, n_slots, *sB, *sC,
        IS_COMPLEX=is_complex, VAR_B=var_b, VAR_C=var_c, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_HIN=hin is not None,
        HAS_CIN=cin is not None, WRITE_DINIT=want_dinit,
        BLOCK_D=bd, SUB_BLOCKS=n_sub, BLOCK_N=bn, BLOCK_T=bt,
        **_launch_cfg(bd, bn, bt, 20 if is_complex else 12, _BWD_MAXNREG if n_sub > 1 else None),
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
    if like.dim() == 3:
        buf = buf.squeeze(1)
    if like.is_complex():
        return torch.view_as_complex(buf.unflatten(-1, (-1, 2)).contiguous())
    return buf.to(like.dtype)


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
        y, last, hin, tile_len = _fwd(u, delta, A, Bp, Cp, D, z, delta_bias, delta_softplus,
                                      initial_state, chunk_len, return_last_state)
        ctx.save_for_backward(u, delta, A, Bp[0], Cp[0], D, z, delta_bias, hin)
        # Only shapes and dtypes of the original B, C and initial_state are needed later.
        # The backward works one tile at a time (its chunks are the forward's tiles).
        ctx.meta = (Bp[1:], Cp[1:], _Like(B), _Like(C), delta_softplus, tile_len,
                    initial_state.dtype if initial_state is not None else None)
        ctx.set_materialize_grads(False)
        return (y, last) if return_last_state else y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy, *rest):
        u, delta, A, Bt, Ct, D, z, delta_bias, hin = ctx.saved_tensors
        b_meta, c_meta, B_like, C_like, delta_softplus, chunk_len, init_dtype = ctx.meta
        dlast = rest[0] if rest else None
        if dy is None:  # only last_state was used
            dy = torch.zeros_like(u)
        is_complex = A.is_complex()
        du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = _bwd(
            dy.contiguous(), dlast, u, delta, A, (Bt, *b_meta), (Ct, *c_meta), D, z, delta_bias,
            delta_softplus, hin, chunk_len, init_dtype is not None and ctx.needs_input_grad[8],
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
    - chunk_len: positions per forward chunk (rounded up to a power of two, at least 2); a chunk
      is scanned as tiles of min(chunk_len, 32) positions (16 for complex), one after another.
      Default: the longest chunk that still gives about four programs per SM (one chunk per row
      when batch x D is large). The backward always works one tile at a time.

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
