"""Fused decode step of a stage of Mamba blocks in Triton: n blocks of one width advance by one
position.

Two ways to lay the work out (README.md has the math and the measurements):

* Split mode (the default): per block, two launches over (batch, E / BLOCK_E) programs, each
  program owning BLOCK_E inner channels of one row. The first computes the residual (the
  previous block's plus its out_proj shares), RMSNorm, in_proj, the conv update and SiLU for its
  channels and writes its share of x_proj; the second sums the x_proj shares, then applies
  dt_proj, the SSM update, the gate and its share of out_proj. A last launch adds the shares of
  the last block. 2n + 1 launches per stage, many programs each: the stage runs on many SMs.
* One program per row: one launch walks all n blocks, the residual stream in registers; per
  block one pass over the channels when BLOCK_E covers them all, else two passes in slices of
  BLOCK_E with u, z and the new conv window passed through a small scratch buffer.

Every tile is [rows, BLOCK_E] with the channels along the contiguous axis, so all tiles share one
register layout and per-channel vectors move between them without shared-memory round trips.
Arithmetic is float32 with broadcast-multiply-and-sum matvecs (a row per program: no tensor-core
tile is full), so results match the PyTorch reference up to summation order.

Launch parameters are chosen by hand, not autotuned: the kernels update the states in place, and
autotuning would run them several times on the same state. The launcher allocates only the output
and small buffers and never syncs with the host, so a decode loop built on it can be captured in a
CUDA graph.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._triton_env import interpreting
from .ref import MambaStageWeights


@triton.jit
def _load_input(x_ptr, codes_ptr, skip_ptr, pid_b, offs_d, stride_x_b, stride_skip_b,
                D_MODEL: tl.constexpr, EMBED: tl.constexpr, HAS_SKIP: tl.constexpr):
    """The stream entering the stage for row ``pid_b``: x's row (with EMBED, the row of the table
    at ``x_ptr`` that the row's code picks), plus the skip row."""
    mask_d = offs_d < D_MODEL
    if EMBED:
        code = tl.load(codes_ptr + pid_b)
        r = tl.load(x_ptr + code * D_MODEL + offs_d, mask=mask_d, other=0.0)
    else:
        r = tl.load(x_ptr + pid_b * stride_x_b + offs_d, mask=mask_d, other=0.0)
    if HAS_SKIP:
        r += tl.load(skip_ptr + pid_b * stride_skip_b + offs_d, mask=mask_d, other=0.0)
    return r


@triton.jit
def _store_output(out_ptr, fnorm_ptr, fnorm_eps, r, pid_b, offs_d, stride_out_b,
                  D_MODEL: tl.constexpr, NORM_OUT: tl.constexpr):
    """Write the stage's result for row ``pid_b``: r, or RMSNorm(r) * weight with NORM_OUT."""
    mask_d = offs_d < D_MODEL
    if NORM_OUT:
        rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=0) / D_MODEL + fnorm_eps)
        r = r * rstd * tl.load(fnorm_ptr + offs_d, mask=mask_d, other=0.0)
    tl.store(out_ptr + pid_b * stride_out_b + offs_d, r, mask=mask_d)


@triton.jit
def _load_in_tiles(
    in_w, conv_w, conv_b, xproj, offs_e, offs_d, offs_n, offs_r, offs_w,
    D_MODEL: tl.constexpr, D_INNER: tl.constexpr, D_STATE: tl.constexpr, DT_RANK: tl.constexpr,
    D_CONV: tl.constexpr, IS_COMPLEX: tl.constexpr,
):
    """The weights the first pass reads for channels ``offs_e`` (the columns of every tile):
    in_proj_t (conv input, gate) [BLOCK_D, BLOCK_E], conv weight [BLOCK_W, BLOCK_E] and bias, and
    x_proj rows (dt [BLOCK_R, .], B, C [BLOCK_N, .])."""
    K: tl.constexpr = 2 * D_STATE if IS_COMPLEX else D_STATE
    mask_e = (offs_e < D_INNER)[None, :]
    w_in = in_w + offs_d[:, None] * (2 * D_INNER) + offs_e[None, :]
    mask_de = (offs_d < D_MODEL)[:, None] & mask_e
    w_x = tl.load(w_in, mask=mask_de, other=0.0)  # [BLOCK_D, BLOCK_E]
    w_z = tl.load(w_in + D_INNER, mask=mask_de, other=0.0)
    cw = tl.load(conv_w + offs_w[:, None] * D_INNER + offs_e[None, :], mask=(offs_w < D_CONV)[:, None] & mask_e,
                 other=0.0)  # [BLOCK_W, BLOCK_E]
    cb = tl.load(conv_b + offs_e, mask=offs_e < D_INNER, other=0.0)
    w_dt = tl.load(xproj + offs_r[:, None] * D_INNER + offs_e[None, :], mask=(offs_r < DT_RANK)[:, None] & mask_e,
                   other=0.0)  # [BLOCK_R, BLOCK_E]
    mask_ne = (offs_n < D_STATE)[:, None] & mask_e
    if IS_COMPLEX:
        # (re, im) interleaved: state n's real part in row R + 2n, its imaginary part in R + 2n + 1.
        rows_b = DT_RANK + 2 * offs_n
        w_b = tl.load(xproj + rows_b[:, None] * D_INNER + offs_e[None, :], mask=mask_ne, other=0.0)
        w_b_im = tl.load(xproj + (rows_b + 1)[:, None] * D_INNER + offs_e[None, :], mask=mask_ne, other=0.0)
        w_c = tl.load(xproj + (rows_b + K)[:, None] * D_INNER + offs_e[None, :], mask=mask_ne, other=0.0)
        w_c_im = tl.load(xproj + (rows_b + K + 1)[:, None] * D_INNER + offs_e[None, :], mask=mask_ne, other=0.0)
    else:
        rows_b = DT_RANK + offs_n
        w_b = tl.load(xproj + rows_b[:, None] * D_INNER + offs_e[None, :], mask=mask_ne, other=0.0)  # [BLOCK_N, BLOCK_E]
        w_c = tl.load(xproj + (rows_b + K)[:, None] * D_INNER + offs_e[None, :], mask=mask_ne, other=0.0)
        w_b_im = w_b  # unused
        w_c_im = w_c
    return w_x, w_z, cw, cb, w_dt, w_b, w_b_im, w_c, w_c_im


@triton.jit
def _load_window(old_win, offs_e, offs_w, stride_win_w, stride_win_e, D_INNER: tl.constexpr, D_CONV: tl.constexpr):
    """The old conv window of channels ``offs_e`` (at ``old_win``) shifted by one tap:
    [BLOCK_W, BLOCK_E], its last row zero."""
    mask = (offs_w < D_CONV - 1)[:, None] & (offs_e < D_INNER)[None, :]
    return tl.load(old_win + (offs_w[:, None] + 1) * stride_win_w + offs_e[None, :] * stride_win_e, mask=mask,
                   other=0.0)


@triton.jit
def _add_pair(a0, b0, a1, b1):
    return a0 + a1, b0 + b1


@triton.jit
def _first_pass(xn, w_x, w_z, cw, cb, older, w_dt, w_b, w_b_im, w_c, w_c_im, offs_w,
                D_CONV: tl.constexpr, IS_COMPLEX: tl.constexpr, PAIR_REDUCE: tl.constexpr):
    """in_proj, conv update and SiLU for a slice of channels; its share of x_proj."""
    # The older taps' share of the conv and the newest tap's weight depend only on loaded values,
    # so they are ready before in_proj is (one reduction fewer on the way to u).
    older_part = tl.sum(older * cw, axis=0)  # older's last row is zero (masked load)
    w_new = tl.sum(tl.where(offs_w[:, None] == D_CONV - 1, cw, 0.0), axis=0)
    if PAIR_REDUCE:
        # One reduction for both (one shared-memory round trip across warps instead of two).
        xe, z = tl.reduce((w_x * xn[:, None], w_z * xn[:, None]), 0, _add_pair)  # [BLOCK_E]: conv input, gate
    else:
        # The interpreter runs a tuple reduction element by element: two sums are much faster there.
        xe = tl.sum(w_x * xn[:, None], axis=0)
        z = tl.sum(w_z * xn[:, None], axis=0)
    window = tl.where(offs_w[:, None] == D_CONV - 1, xe[None, :], older)  # [BLOCK_W, BLOCK_E], oldest first
    u = older_part + w_new * xe + cb
    u = u * tl.sigmoid(u)  # [BLOCK_E]; zero on masked channels
    d_dt = tl.sum(w_dt * u[None, :], axis=1)  # [BLOCK_R]
    d_b = tl.sum(w_b * u[None, :], axis=1)  # [BLOCK_N]
    d_c = tl.sum(w_c * u[None, :], axis=1)
    if IS_COMPLEX:
        d_b_im = tl.sum(w_b_im * u[None, :], axis=1)
        d_c_im = tl.sum(w_c_im * u[None, :], axis=1)
    else:
        d_b_im = d_b  # unused
        d_c_im = d_c
    return u, z, window, d_dt, d_b, d_b_im, d_c, d_c_im


@triton.jit
def _load_out_tiles(
    dt_w, dt_b, A, Dv, out_w, offs_e, offs_d, offs_n, offs_r,
    D_MODEL: tl.constexpr, D_INNER: tl.constexpr, D_STATE: tl.constexpr, DT_RANK: tl.constexpr,
    IS_COMPLEX: tl.constexpr,
):
    """The weights the second pass reads for channels ``offs_e``: dt_proj_t [BLOCK_R, BLOCK_E] and
    bias, A [BLOCK_N, BLOCK_E], D, out_proj [BLOCK_D, BLOCK_E]."""
    A_STRIDE: tl.constexpr = 2 if IS_COMPLEX else 1  # A_t as (N, E, re-im) when complex
    mask_e = (offs_e < D_INNER)[None, :]
    w_dt = tl.load(dt_w + offs_r[:, None] * D_INNER + offs_e[None, :], mask=(offs_r < DT_RANK)[:, None] & mask_e,
                   other=0.0)  # [BLOCK_R, BLOCK_E]
    bias = tl.load(dt_b + offs_e, mask=offs_e < D_INNER, other=0.0)
    mask_ne = (offs_n < D_STATE)[:, None] & mask_e
    a_ptrs = A + (offs_n[:, None] * D_INNER + offs_e[None, :]) * A_STRIDE
    a = tl.load(a_ptrs, mask=mask_ne, other=0.0)  # [BLOCK_N, BLOCK_E]
    d = tl.load(Dv + offs_e, mask=offs_e < D_INNER, other=0.0)
    w_out = tl.load(out_w + offs_d[:, None] * D_INNER + offs_e[None, :], mask=(offs_d < D_MODEL)[:, None] & mask_e,
                    other=0.0)  # [BLOCK_D, BLOCK_E]
    if IS_COMPLEX:
        a_im = tl.load(a_ptrs + 1, mask=mask_ne, other=0.0)
    else:
        a_im = a  # unused
    return w_dt, bias, a, a_im, d, w_out


@triton.jit
def _load_state(ssm_s, offs_e, offs_n, stride_ssm_n, stride_ssm_e, stride_ssm_ri, D_INNER: tl.constexpr,
                D_STATE: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """The SSM state of channels ``offs_e`` (at ``ssm_s``): [BLOCK_N, BLOCK_E], real and imaginary
    parts (the imaginary one only when complex)."""
    mask_ne = (offs_n < D_STATE)[:, None] & (offs_e < D_INNER)[None, :]
    s_ptrs = ssm_s + offs_n[:, None] * stride_ssm_n + offs_e[None, :] * stride_ssm_e
    h = tl.load(s_ptrs, mask=mask_ne, other=0.0)
    if IS_COMPLEX:
        h_im = tl.load(s_ptrs + stride_ssm_ri, mask=mask_ne, other=0.0)
    else:
        h_im = h  # unused
    return h, h_im


@triton.jit
def _second_pass(u, z, w_dt, bias, a, a_im, d, w_out, h, h_im, acc_dt, acc_b, acc_b_im, acc_c, acc_c_im,
                 IS_COMPLEX: tl.constexpr):
    """dt, SSM update, skip and gate for a slice of channels; its share of out_proj."""
    dt = tl.sum(w_dt * acc_dt[:, None], axis=0) + bias  # [BLOCK_E]
    # torch's softplus: linear above 20, where log(1 + exp(x)) == x in float32.
    dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    dtu = (dt * u)[None, :]
    if IS_COMPLEX:
        # exp(dt A) = exp(dt Re A) (cos(dt Im A) + i sin(dt Im A))
        mag = tl.exp(dt[None, :] * a)
        ang = dt[None, :] * a_im
        da = mag * tl.cos(ang)
        da_im = mag * tl.sin(ang)
        h_new = da * h - da_im * h_im + dtu * acc_b[:, None]
        h_im = da * h_im + da_im * h + dtu * acc_b_im[:, None]
        h = h_new
        y = 2.0 * tl.sum(acc_c[:, None] * h - acc_c_im[:, None] * h_im, axis=0)  # 2 Re(C h)
    else:
        h = tl.exp(dt[None, :] * a) * h + dtu * acc_b[:, None]  # [BLOCK_N, BLOCK_E]
        y = tl.sum(acc_c[:, None] * h, axis=0)  # [BLOCK_E]
    y = (y + d * u) * (z * tl.sigmoid(z))
    return tl.sum(w_out * y[None, :], axis=1), h, h_im  # [BLOCK_D]


@triton.jit
def _stage_step_kernel(
    # pointers
    x_ptr, codes_ptr, skip_ptr, out_ptr, fnorm_ptr, conv_ptr, ssm_ptr, scratch_ptr,
    norm_w_ptr, in_w_ptr, conv_w_ptr, conv_b_ptr, xproj_ptr, dt_w_ptr, dt_b_ptr, A_ptr, D_ptr, out_w_ptr,
    # dims
    n_layers, eps, fnorm_eps,
    # strides: x / skip / out (batch,); conv state (layer, batch, channel, tap); ssm state (layer,
    # batch, channel, n, re-im); scratch (batch,)
    stride_x_b, stride_skip_b, stride_out_b,
    stride_conv_l, stride_conv_b, stride_conv_e, stride_conv_w,
    stride_ssm_l, stride_ssm_b, stride_ssm_e, stride_ssm_n, stride_ssm_ri,
    stride_scr_b,
    # meta-parameters
    D_MODEL: tl.constexpr, D_INNER: tl.constexpr, D_STATE: tl.constexpr, DT_RANK: tl.constexpr,
    D_CONV: tl.constexpr, IS_COMPLEX: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr, LAYER_STAGES: tl.constexpr, SLICE_STAGES: tl.constexpr, PAIR_REDUCE: tl.constexpr,
    EMBED: tl.constexpr, HAS_SKIP: tl.constexpr, NORM_OUT: tl.constexpr,
):
    # Packed weight sizes per layer (see MambaStageWeights): B and C are K rows each.
    K: tl.constexpr = 2 * D_STATE if IS_COMPLEX else D_STATE
    A_STRIDE: tl.constexpr = 2 if IS_COMPLEX else 1
    # One slice covers every channel: no scratch between passes, and the layer's loads go together.
    SINGLE: tl.constexpr = BLOCK_E >= D_INNER

    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batch * stride can exceed 2^31
    offs_d = tl.arange(0, BLOCK_D)  # tile rows
    offs_n = tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    offs_w = tl.arange(0, BLOCK_W)
    offs_eb = tl.arange(0, BLOCK_E)  # tile columns: the inner channels
    mask_d = offs_d < D_MODEL

    r = _load_input(x_ptr, codes_ptr, skip_ptr, pid_b, offs_d, stride_x_b, stride_skip_b,
                    D_MODEL, EMBED, HAS_SKIP)  # [BLOCK_D] residual
    conv_row = conv_ptr + pid_b * stride_conv_b
    ssm_row = ssm_ptr + pid_b * stride_ssm_b
    scr = scratch_ptr + pid_b * stride_scr_b
    if SINGLE:
        # Scratch of this row: the old conv windows of every layer [n, W, E], copied first. The
        # layer loop reads them there and writes the conv state, so no thread overwrites a window
        # another has still to read, and the loop needs no barrier (which would keep the compiler
        # from prefetching the next layer).
        mask_we = (offs_w < D_CONV)[:, None] & (offs_eb < D_INNER)[None, :]
        for layer in range(n_layers):
            lyr = tl.cast(layer, tl.int64)
            old = tl.load(conv_row + lyr * stride_conv_l + offs_w[:, None] * stride_conv_w
                          + offs_eb[None, :] * stride_conv_e, mask=mask_we, other=0.0)
            tl.store(scr + lyr * (D_CONV * D_INNER) + offs_w[:, None] * D_INNER + offs_eb[None, :], old, mask=mask_we)
        tl.debug_barrier()
    else:
        # Scratch of this row: u [E], z [E], new conv windows [W, E], from pass 1 to pass 2.
        scr_u = scr
        scr_z = scr + D_INNER
        scr_win = scr + 2 * D_INNER

    # With LAYER_STAGES > 1 (one slice only: the pipeliner skips loops that contain loops) the
    # compiler prefetches the next layer's weights and states while this one computes.
    for layer in tl.range(n_layers, num_stages=LAYER_STAGES):
        # Layer offsets from the loop index (not pointers bumped in the loop), so the compiler
        # keeps the weights' 16-byte alignment and vectorises their loads.
        lyr = tl.cast(layer, tl.int64)
        in_w_l = in_w_ptr + lyr * (2 * D_INNER * D_MODEL)
        conv_w_l = conv_w_ptr + lyr * (D_INNER * D_CONV)
        conv_b_l = conv_b_ptr + lyr * D_INNER
        xproj_l = xproj_ptr + lyr * (D_INNER * (DT_RANK + 2 * K))
        dt_w_l = dt_w_ptr + lyr * (D_INNER * DT_RANK)
        dt_b_l = dt_b_ptr + lyr * D_INNER
        A_l = A_ptr + lyr * (D_INNER * D_STATE * A_STRIDE)
        D_l = D_ptr + lyr * D_INNER
        out_w_l = out_w_ptr + lyr * (D_INNER * D_MODEL)
        conv_l = conv_row + lyr * stride_conv_l
        ssm_l = ssm_row + lyr * stride_ssm_l

        nw = tl.load(norm_w_ptr + lyr * D_MODEL + offs_d, mask=mask_d, other=0.0)
        if SINGLE:
            # Every load of the layer is issued first, so their latencies overlap (with each other
            # and with the norm).
            mask_e = offs_eb < D_INNER
            w_x, w_z, cw, cb, w_dt, w_b, w_b_im, w_c, w_c_im = _load_in_tiles(
                in_w_l, conv_w_l, conv_b_l, xproj_l, offs_eb, offs_d, offs_n, offs_r, offs_w,
                D_MODEL, D_INNER, D_STATE, DT_RANK, D_CONV, IS_COMPLEX)
            older = _load_window(scr + lyr * (D_CONV * D_INNER), offs_eb, offs_w, D_INNER, 1, D_INNER, D_CONV)
            w_dtp, bias, a, a_im, d, w_out = _load_out_tiles(
                dt_w_l, dt_b_l, A_l, D_l, out_w_l, offs_eb, offs_d, offs_n, offs_r,
                D_MODEL, D_INNER, D_STATE, DT_RANK, IS_COMPLEX)
            h, h_im = _load_state(ssm_l, offs_eb, offs_n, stride_ssm_n, stride_ssm_e, stride_ssm_ri,
                                  D_INNER, D_STATE, IS_COMPLEX)
        # RMSNorm (float32 statistics)
        rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=0) / D_MODEL + eps)
        xn = r * rstd * nw  # [BLOCK_D]

        if SINGLE:
            u, z, window, acc_dt, acc_b, acc_b_im, acc_c, acc_c_im = _first_pass(
                xn, w_x, w_z, cw, cb, older, w_dt, w_b, w_b_im, w_c, w_c_im, offs_w, D_CONV, IS_COMPLEX, PAIR_REDUCE)
            tl.store(conv_l + offs_w[:, None] * stride_conv_w + offs_eb[None, :] * stride_conv_e, window,
                     mask=(offs_w < D_CONV)[:, None] & mask_e[None, :])
            out, h, h_im = _second_pass(u, z, w_dtp, bias, a, a_im, d, w_out, h, h_im,
                                        acc_dt, acc_b, acc_b_im, acc_c, acc_c_im, IS_COMPLEX)
            s_ptrs = ssm_l + offs_n[:, None] * stride_ssm_n + offs_eb[None, :] * stride_ssm_e
            mask_ne = (offs_n < D_STATE)[:, None] & mask_e[None, :]
            tl.store(s_ptrs, h, mask=mask_ne)
            if IS_COMPLEX:
                tl.store(s_ptrs + stride_ssm_ri, h_im, mask=mask_ne)
        else:
            # Pass 1 over slices of channels: u, z and the new window to the scratch, x_proj summed.
            acc_dt = tl.zeros([BLOCK_R], dtype=tl.float32)
            acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
            acc_c = tl.zeros([BLOCK_N], dtype=tl.float32)
            acc_b_im = tl.zeros([BLOCK_N], dtype=tl.float32)
            acc_c_im = tl.zeros([BLOCK_N], dtype=tl.float32)
            for e0 in tl.range(0, D_INNER, BLOCK_E, num_stages=SLICE_STAGES):
                offs_e = e0 + offs_eb
                mask_e = offs_e < D_INNER
                mask_we = (offs_w < D_CONV)[:, None] & mask_e[None, :]
                w_x, w_z, cw, cb, w_dt, w_b, w_b_im, w_c, w_c_im = _load_in_tiles(
                    in_w_l, conv_w_l, conv_b_l, xproj_l, offs_e, offs_d, offs_n, offs_r, offs_w,
                    D_MODEL, D_INNER, D_STATE, DT_RANK, D_CONV, IS_COMPLEX)
                older = _load_window(conv_l, offs_e, offs_w, stride_conv_w, stride_conv_e, D_INNER, D_CONV)
                u, z, window, d_dt, d_b, d_b_im, d_c, d_c_im = _first_pass(
                    xn, w_x, w_z, cw, cb, older, w_dt, w_b, w_b_im, w_c, w_c_im, offs_w, D_CONV, IS_COMPLEX, PAIR_REDUCE)
                acc_dt += d_dt
                acc_b += d_b
                acc_c += d_c
                if IS_COMPLEX:
                    acc_b_im += d_b_im
                    acc_c_im += d_c_im
                # The old window is only read in this pass and rewritten in the next: no race
                # between threads of the program.
                tl.store(scr_u + offs_e, u, mask=mask_e)
                tl.store(scr_z + offs_e, z, mask=mask_e)
                tl.store(scr_win + offs_w[:, None] * D_INNER + offs_e[None, :], window, mask=mask_we)

            # Pass 2 reads the scratch other threads of this program wrote in pass 1.
            tl.debug_barrier()

            # Pass 2: dt, SSM update, gate, out_proj.
            out = tl.zeros([BLOCK_D], dtype=tl.float32)
            for e0 in tl.range(0, D_INNER, BLOCK_E, num_stages=SLICE_STAGES):
                offs_e = e0 + offs_eb
                mask_e = offs_e < D_INNER
                mask_we = (offs_w < D_CONV)[:, None] & mask_e[None, :]
                mask_ne = (offs_n < D_STATE)[:, None] & mask_e[None, :]
                u = tl.load(scr_u + offs_e, mask=mask_e, other=0.0)  # [BLOCK_E]
                z = tl.load(scr_z + offs_e, mask=mask_e, other=0.0)
                window = tl.load(scr_win + offs_w[:, None] * D_INNER + offs_e[None, :], mask=mask_we, other=0.0)
                tl.store(conv_l + offs_w[:, None] * stride_conv_w + offs_e[None, :] * stride_conv_e, window,
                         mask=mask_we)
                w_dtp, bias, a, a_im, d, w_out = _load_out_tiles(
                    dt_w_l, dt_b_l, A_l, D_l, out_w_l, offs_e, offs_d, offs_n, offs_r,
                    D_MODEL, D_INNER, D_STATE, DT_RANK, IS_COMPLEX)
                h, h_im = _load_state(ssm_l, offs_e, offs_n, stride_ssm_n, stride_ssm_e, stride_ssm_ri,
                                      D_INNER, D_STATE, IS_COMPLEX)
                o, h, h_im = _second_pass(u, z, w_dtp, bias, a, a_im, d, w_out, h, h_im,
                                          acc_dt, acc_b, acc_b_im, acc_c, acc_c_im, IS_COMPLEX)
                out += o
                s_ptrs = ssm_l + offs_n[:, None] * stride_ssm_n + offs_e[None, :] * stride_ssm_e
                tl.store(s_ptrs, h, mask=mask_ne)
                if IS_COMPLEX:
                    tl.store(s_ptrs + stride_ssm_ri, h_im, mask=mask_ne)
            # The next layer rewrites the scratch this pass has just read.
            tl.debug_barrier()
        r += out

    _store_output(out_ptr, fnorm_ptr, fnorm_eps, r, pid_b, offs_d, stride_out_b, D_MODEL, NORM_OUT)


@triton.jit
def _pdl_sync(PDL: tl.constexpr):
    """Programmatic dependent launch (sm_90+): a split kernel is launched while the previous one
    still runs and loads its weights; here it waits until that kernel has finished and its writes
    are visible, then lets the next kernel launch. Only weights (never written during decoding)
    may be read before this point. Because every kernel signals only after its own wait, a kernel
    that starts early finds every kernel but its direct predecessor finished: the order of the
    stream holds transitively, and a plain kernel in between (PyTorch's) simply ends the overlap.
    Without PDL the kernel boundaries alone order the work, and this is a no-op."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _split_in_kernel(
    # pointers (weights and states of one layer)
    x_ptr, codes_ptr, skip_ptr, res_in_ptr, res_out_ptr, part_ptr, conv_ptr, scratch_ptr, xp_part_ptr,
    norm_w_ptr, in_w_ptr, conv_w_ptr, conv_b_ptr, xproj_ptr,
    # dims
    eps,
    # strides: x / skip (batch,); conv state (batch, channel, tap)
    stride_x_b, stride_skip_b, stride_conv_b, stride_conv_e, stride_conv_w,
    # meta-parameters
    D_MODEL: tl.constexpr, D_INNER: tl.constexpr, D_STATE: tl.constexpr, DT_RANK: tl.constexpr,
    D_CONV: tl.constexpr, IS_COMPLEX: tl.constexpr, N_PROGS: tl.constexpr, FIRST: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr, PAIR_REDUCE: tl.constexpr, EMBED: tl.constexpr, HAS_SKIP: tl.constexpr,
    PDL: tl.constexpr,
):
    """Split mode, first half of a layer for one row and one slice of BLOCK_E channels: the
    residual (the previous layer's, plus its out_proj shares), RMSNorm, in_proj, conv, SiLU; u and
    z to the scratch, the slice's share of x_proj to ``xp_part``. With PDL (see _pdl_sync) the
    weights load while the previous kernel finishes."""
    XPW: tl.constexpr = BLOCK_R + 4 * BLOCK_N  # x_proj share slots: dt, B, C, B imaginary, C imaginary
    pid_b = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    offs_w = tl.arange(0, BLOCK_W)
    offs_e = pid_s * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_d = offs_d < D_MODEL
    mask_e = offs_e < D_INNER
    conv_row = conv_ptr + pid_b * stride_conv_b
    w_x, w_z, cw, cb, w_dt, w_b, w_b_im, w_c, w_c_im = _load_in_tiles(
        in_w_ptr, conv_w_ptr, conv_b_ptr, xproj_ptr, offs_e, offs_d, offs_n, offs_r, offs_w,
        D_MODEL, D_INNER, D_STATE, DT_RANK, D_CONV, IS_COMPLEX)
    nw = tl.load(norm_w_ptr + offs_d, mask=mask_d, other=0.0)
    _pdl_sync(PDL)
    older = _load_window(conv_row, offs_e, offs_w, stride_conv_w, stride_conv_e, D_INNER, D_CONV)
    if FIRST:
        r = _load_input(x_ptr, codes_ptr, skip_ptr, pid_b, offs_d, stride_x_b, stride_skip_b,
                        D_MODEL, EMBED, HAS_SKIP)
    else:
        # The shares as separate vector loads: a [D, shares] tile would have a layout of its own,
        # which the compiler would impose on the weight tiles.
        r = tl.load(res_in_ptr + pid_b * D_MODEL + offs_d, mask=mask_d, other=0.0)
        for p in tl.static_range(N_PROGS):
            r += tl.load(part_ptr + (pid_b * N_PROGS + p) * D_MODEL + offs_d, mask=mask_d, other=0.0)
    # One program per row keeps the residual for the next layer (and the stage's output).
    tl.store(res_out_ptr + pid_b * D_MODEL + offs_d, r, mask=mask_d & (pid_s == 0))
    rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=0) / D_MODEL + eps)
    xn = r * rstd * nw
    u, z, window, d_dt, d_b, d_b_im, d_c, d_c_im = _first_pass(
        xn, w_x, w_z, cw, cb, older, w_dt, w_b, w_b_im, w_c, w_c_im, offs_w, D_CONV, IS_COMPLEX, PAIR_REDUCE)
    # Every thread has read the old window before any thread overwrites it.
    tl.debug_barrier()
    tl.store(conv_row + offs_w[:, None] * stride_conv_w + offs_e[None, :] * stride_conv_e, window,
             mask=(offs_w < D_CONV)[:, None] & mask_e[None, :])
    tl.store(scratch_ptr + pid_b * (2 * D_INNER) + offs_e, u, mask=mask_e)
    tl.store(scratch_ptr + pid_b * (2 * D_INNER) + D_INNER + offs_e, z, mask=mask_e)
    xp = xp_part_ptr + (pid_b * N_PROGS + pid_s) * XPW
    tl.store(xp + offs_r, d_dt)
    tl.store(xp + BLOCK_R + offs_n, d_b)
    tl.store(xp + BLOCK_R + BLOCK_N + offs_n, d_c)
    if IS_COMPLEX:
        tl.store(xp + BLOCK_R + 2 * BLOCK_N + offs_n, d_b_im)
        tl.store(xp + BLOCK_R + 3 * BLOCK_N + offs_n, d_c_im)


@triton.jit
def _split_out_kernel(
    # pointers (weights and states of one layer)
    ssm_ptr, scratch_ptr, xp_part_ptr, part_ptr,
    dt_w_ptr, dt_b_ptr, A_ptr, D_ptr, out_w_ptr,
    # strides: ssm state (batch, channel, n, re-im)
    stride_ssm_b, stride_ssm_e, stride_ssm_n, stride_ssm_ri,
    # meta-parameters
    D_MODEL: tl.constexpr, D_INNER: tl.constexpr, D_STATE: tl.constexpr, DT_RANK: tl.constexpr,
    IS_COMPLEX: tl.constexpr, N_PROGS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    PDL: tl.constexpr,
):
    """Split mode, second half of a layer for one row and one slice of channels: x_proj summed
    over the slices, dt, SSM update, gate; the slice's share of out_proj to ``part``."""
    XPW: tl.constexpr = BLOCK_R + 4 * BLOCK_N
    pid_b = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    offs_e = pid_s * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_e = offs_e < D_INNER
    ssm_row = ssm_ptr + pid_b * stride_ssm_b
    w_dt, bias, a, a_im, d, w_out = _load_out_tiles(
        dt_w_ptr, dt_b_ptr, A_ptr, D_ptr, out_w_ptr, offs_e, offs_d, offs_n, offs_r,
        D_MODEL, D_INNER, D_STATE, DT_RANK, IS_COMPLEX)
    _pdl_sync(PDL)
    h, h_im = _load_state(ssm_row, offs_e, offs_n, stride_ssm_n, stride_ssm_e, stride_ssm_ri,
                          D_INNER, D_STATE, IS_COMPLEX)
    u = tl.load(scratch_ptr + pid_b * (2 * D_INNER) + offs_e, mask=mask_e, other=0.0)
    z = tl.load(scratch_ptr + pid_b * (2 * D_INNER) + D_INNER + offs_e, mask=mask_e, other=0.0)
    # x_proj: the slices' shares summed (vector loads, for the reason given in _split_in_kernel).
    xp = xp_part_ptr + pid_b * (N_PROGS * XPW)
    acc_dt = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_c = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_b_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_c_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    for p in tl.static_range(N_PROGS):
        acc_dt += tl.load(xp + p * XPW + offs_r)
        acc_b += tl.load(xp + p * XPW + BLOCK_R + offs_n)
        acc_c += tl.load(xp + p * XPW + BLOCK_R + BLOCK_N + offs_n)
        if IS_COMPLEX:
            acc_b_im += tl.load(xp + p * XPW + BLOCK_R + 2 * BLOCK_N + offs_n)
            acc_c_im += tl.load(xp + p * XPW + BLOCK_R + 3 * BLOCK_N + offs_n)
    o, h, h_im = _second_pass(u, z, w_dt, bias, a, a_im, d, w_out, h, h_im,
                              acc_dt, acc_b, acc_b_im, acc_c, acc_c_im, IS_COMPLEX)
    s_ptrs = ssm_row + offs_n[:, None] * stride_ssm_n + offs_e[None, :] * stride_ssm_e
    mask_ne = (offs_n < D_STATE)[:, None] & mask_e[None, :]
    tl.store(s_ptrs, h, mask=mask_ne)
    if IS_COMPLEX:
        tl.store(s_ptrs + stride_ssm_ri, h_im, mask=mask_ne)
    tl.store(part_ptr + (pid_b * N_PROGS + pid_s) * D_MODEL + offs_d, o, mask=offs_d < D_MODEL)


@triton.jit
def _split_finish_kernel(res_ptr, part_ptr, out_ptr, fnorm_ptr, fnorm_eps, stride_out_b, D_MODEL: tl.constexpr,
                         N_PROGS: tl.constexpr, BLOCK_D: tl.constexpr, NORM_OUT: tl.constexpr, PDL: tl.constexpr):
    """Split mode: the stage's output, the last layer's residual plus its out_proj shares."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D_MODEL
    _pdl_sync(PDL)
    r = tl.load(res_ptr + pid_b * D_MODEL + offs_d, mask=mask_d, other=0.0)
    for p in tl.static_range(N_PROGS):
        r += tl.load(part_ptr + (pid_b * N_PROGS + p) * D_MODEL + offs_d, mask=mask_d, other=0.0)
    _store_output(out_ptr, fnorm_ptr, fnorm_eps, r, pid_b, offs_d, stride_out_b, D_MODEL, NORM_OUT)


# Launch parameters, picked by hand from `python -m benchmarks.decode_step --sweep` (README.md,
# "Launch parameters"). Split mode is the default for every stage of at least SPLIT_FROM_WIDTH
# channels (complex ones always): on one H100 at batch 16 a stage of 8 blocks took 38.5 / 42.3 /
# 59.4 us at widths 64 / 128 / 256 split (BLOCK_E 32, 4 warps) against 72.9 / 165.6 / 567.6 us
# with one program per row. One program per row: elements of a [D, BLOCK_E] weight slice in
# registers (complex: half), warps, and the software-pipelining depth of the layer loop (one
# slice) or of the slice loops (several slices). Split: channels per program and warps.
TILE_ELEMENTS = {False: 8192, True: 4096}
NUM_WARPS = 8
LAYER_STAGES = 1
SLICE_STAGES = 1
SPLIT_FROM_WIDTH = 1
SPLIT_BLOCK_E = 32
SPLIT_NUM_WARPS = 4
# Split kernels use programmatic dependent launch where the GPU has it (sm_90+): each launch's
# weight loads overlap the previous kernel's tail (_pdl_sync).
PDL = True
_INTERPRET = interpreting()


@functools.lru_cache(maxsize=None)
def _pdl_capable(device: torch.device) -> bool:
    """Programmatic dependent launch: compiled code on a GPU of compute capability 9 or more."""
    return not _INTERPRET and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def _row_blocks(w: MambaStageWeights, block_e: int, num_warps: int) -> dict[str, int]:
    """Row counts of the tiles. Every tile is [rows, BLOCK_E] with the channels contiguous; with
    at least as many rows as one layout of (4 floats per thread along the channels) x 32 threads x
    num_warps covers, the compiler gives all tiles the same layout, so per-channel vectors pass
    between them without shared-memory round trips (and without barriers between the loads).
    Padded rows are masked. The interpreter has no layouts: no padding there (faster CPU tests)."""
    min_rows = 1 if _INTERPRET else max(1, 128 // block_e) * num_warps

    def rows(n: int) -> int:
        return max(triton.next_power_of_2(n), min_rows)

    return dict(BLOCK_D=rows(w.d_model), BLOCK_N=rows(w.d_state), BLOCK_R=rows(w.dt_rank), BLOCK_W=rows(w.d_conv))


@dataclass
class _StageIO:
    """Kernel arguments for what enters and leaves a stage (see ``mamba_stage_step``)."""

    x: Tensor  # the residual stream, or the embedding table
    codes: Tensor  # with EMBED: (batch,) int64 codes; else any tensor (unused)
    skip: Tensor  # with HAS_SKIP: (batch, D); else any tensor (unused)
    fnorm: Tensor  # with NORM_OUT: the final norm's weight; else any tensor (unused)
    fnorm_eps: float
    out: Tensor
    stride_x: int
    embed: bool
    has_skip: bool
    norm_out: bool


def _launch_pdl(pdl: bool) -> dict[str, bool]:
    """The launch option (only passed when set: the interpreter does not take it)."""
    return {"launch_pdl": True} if pdl else {}


def _stage_split(io: _StageIO, w: MambaStageWeights, conv_state: Tensor, ssm: Tensor, A: Tensor, batch: int,
                 block_e: int, num_warps: int, pdl: bool) -> None:
    """Split mode: 2n + 1 launches, each over (batch, E / block_e) programs; with ``pdl`` each one a
    programmatic dependent launch."""
    e, d = w.d_inner, w.d_model
    dev = io.out.device
    n_progs = triton.cdiv(e, block_e)
    blocks = _row_blocks(w, block_e, num_warps)
    xpw = blocks["BLOCK_R"] + 4 * blocks["BLOCK_N"]
    res = torch.empty(2, batch, d, device=dev, dtype=torch.float32)
    part = torch.empty(batch, n_progs, d, device=dev, dtype=torch.float32)
    xp_part = torch.empty(batch, n_progs, xpw, device=dev, dtype=torch.float32)
    scratch = torch.empty(batch, 2 * e, device=dev, dtype=torch.float32)
    dims = dict(D_MODEL=d, D_INNER=e, D_STATE=w.d_state, DT_RANK=w.dt_rank, IS_COMPLEX=w.is_complex, N_PROGS=n_progs,
                BLOCK_D=blocks["BLOCK_D"], BLOCK_E=block_e, BLOCK_N=blocks["BLOCK_N"], BLOCK_R=blocks["BLOCK_R"],
                num_warps=num_warps, PDL=pdl, **_launch_pdl(pdl))
    grid = (batch, n_progs)
    for layer in range(w.n_layers):
        conv = conv_state[layer]
        _split_in_kernel[grid](
            io.x, io.codes, io.skip, res[(layer - 1) % 2], res[layer % 2], part, conv, scratch, xp_part,
            w.norm_weight[layer], w.in_proj_t[layer], w.conv_weight_t[layer], w.conv_bias[layer], w.x_proj[layer],
            w.eps,
            io.stride_x, io.skip.stride(0), conv.stride(0), conv.stride(1), conv.stride(2),
            D_CONV=w.d_conv, FIRST=layer == 0, BLOCK_W=blocks["BLOCK_W"], PAIR_REDUCE=not _INTERPRET,
            EMBED=io.embed, HAS_SKIP=io.has_skip, **dims,
        )
        s = ssm[layer]
        _split_out_kernel[grid](
            s, scratch, xp_part, part,
            w.dt_proj_t[layer], w.dt_bias[layer], A[layer], w.D[layer], w.out_proj[layer],
            s.stride(0), s.stride(1), s.stride(2), s.stride(3),
            **dims,
        )
    _split_finish_kernel[(batch,)](
        res[(w.n_layers - 1) % 2], part, io.out, io.fnorm, io.fnorm_eps, io.out.stride(0), D_MODEL=d,
        N_PROGS=n_progs, BLOCK_D=blocks["BLOCK_D"], NORM_OUT=io.norm_out, num_warps=num_warps, PDL=pdl,
        **_launch_pdl(pdl),
    )


def mamba_stage_step_triton(
    x: Tensor,
    weights: MambaStageWeights,
    conv_state: Tensor,
    ssm_state: Tensor,
    *,
    embedding: Tensor | None = None,
    skip: Tensor | None = None,
    final_norm: tuple[Tensor, float] | None = None,
    out: Tensor | None = None,
    block_e: int | None = None,
    num_warps: int | None = None,
    layer_stages: int | None = None,
    slice_stages: int | None = None,
    split: bool | None = None,
    pdl: bool | None = None,
) -> Tensor:
    """Launch the stage kernel(s) on validated arguments (see ``mamba_stage_step``). The launch
    parameters can be overridden (benchmarks, tests): ``split`` picks split mode (default: complex
    stages and widths of at least SPLIT_FROM_WIDTH, i.e. every stage), ``block_e`` and
    ``num_warps`` apply to either mode, the stage counts to one program per row, ``pdl``
    (default: PDL where the GPU supports it) to split mode."""
    w = weights
    batch, d, e = x.shape[0], w.d_model, w.d_inner
    if out is None:
        out = torch.empty(batch, d, device=x.device, dtype=torch.float32)
    if batch == 0:
        return out
    # The kernels read codes at unit stride and the stream's columns at unit stride.
    x = x.contiguous() if embedding is not None or x.stride(-1) != 1 else x
    io = _StageIO(
        x=x if embedding is None else embedding,
        codes=x,
        skip=out if skip is None else skip,
        fnorm=w.norm_weight if final_norm is None else final_norm[0],
        fnorm_eps=1.0 if final_norm is None else float(final_norm[1]),
        out=out,
        stride_x=d if embedding is not None else x.stride(0),
        embed=embedding is not None,
        has_skip=skip is not None,
        norm_out=final_norm is not None,
    )
    ssm = torch.view_as_real(ssm_state) if ssm_state.is_complex() else ssm_state.unsqueeze(-1)
    A = torch.view_as_real(w.A_t) if w.is_complex else w.A_t
    if split is None:
        split = w.is_complex or d >= SPLIT_FROM_WIDTH
    if split:
        if pdl is None:
            pdl = PDL and _pdl_capable(out.device)
        elif pdl and not _pdl_capable(out.device):
            raise ValueError(f"pdl=True needs compiled kernels on a GPU of compute capability 9 or more, "
                             f"got {out.device} (TRITON_INTERPRET={int(_INTERPRET)})")
        _stage_split(io, w, conv_state, ssm, A, batch, block_e or SPLIT_BLOCK_E, num_warps or SPLIT_NUM_WARPS, pdl)
        return out
    num_warps = NUM_WARPS if num_warps is None else num_warps
    if block_e is None:
        block_e = max(1, min(triton.next_power_of_2(e), TILE_ELEMENTS[w.is_complex] // triton.next_power_of_2(d)))
    single = block_e >= e
    blocks = _row_blocks(w, block_e, num_warps)
    # One slice: the old conv windows of every layer; several: u, z and the new conv windows,
    # from the first pass to the second.
    scratch = torch.empty(batch, w.n_layers * e * w.d_conv if single else e * (2 + w.d_conv), device=x.device,
                          dtype=torch.float32)
    _stage_step_kernel[(batch,)](
        io.x, io.codes, io.skip, out, io.fnorm, conv_state, ssm, scratch,
        w.norm_weight, w.in_proj_t, w.conv_weight_t, w.conv_bias, w.x_proj, w.dt_proj_t, w.dt_bias, A, w.D, w.out_proj,
        w.n_layers, w.eps, io.fnorm_eps,
        io.stride_x, io.skip.stride(0), out.stride(0),
        *conv_state.stride(),
        *ssm.stride(),
        scratch.stride(0),
        D_MODEL=d, D_INNER=e, D_STATE=w.d_state, DT_RANK=w.dt_rank, D_CONV=w.d_conv, IS_COMPLEX=w.is_complex,
        BLOCK_E=block_e,
        LAYER_STAGES=(LAYER_STAGES if layer_stages is None else layer_stages) if single else 1,
        SLICE_STAGES=SLICE_STAGES if slice_stages is None else slice_stages,
        PAIR_REDUCE=not _INTERPRET, EMBED=io.embed, HAS_SKIP=io.has_skip, NORM_OUT=io.norm_out,
        num_warps=num_warps, **blocks,
    )
    return out
