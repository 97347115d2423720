"""Fused RMSNorm in Triton: one pass forward, one pass backward.

Rows of ``D`` features, ``ROWS`` rows per program, all arithmetic in float32. The forward
stores the output (in any float dtype, so a float32 residual stream can feed a bfloat16 mixer
without a separate cast) and 1/rms per row. With g = dy * w the backward is

    dx = rstd * g - x * rstd^3 * mean(g * x)         dw = sum over rows of dy * x * rstd

dw is summed per program into a [programs, D] float32 buffer, then over programs in PyTorch (a
fixed order: deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _rms_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, n_rows, D, eps,
                    BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols < D)[None, :]
    offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    tl.store(y_ptr + offs, (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_ok)


@triton.jit
def _rms_bwd_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_ptr, n_rows, D,
                    BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols < D)[None, :]
    offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
    xhat = x * rstd[:, None]
    g = dy * w[None, :]
    dx = rstd[:, None] * (g - xhat * (tl.sum(g * xhat, axis=1) / D)[:, None])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid.to(tl.int64) * D + cols, tl.sum(dy * xhat, axis=0), mask=cols < D)


def _launch(d: int) -> tuple[int, int, int]:
    """BLOCK_D, rows per program and warps: about 4096 elements per program."""
    block_d = triton.next_power_of_2(d)
    rows = max(1, min(64, 4096 // block_d))
    return block_d, rows, 4 if block_d * rows <= 4096 else 8


class _RMSNormTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        shape, d = x.shape, x.shape[-1]
        x2 = x.reshape(-1, d).contiguous()
        n_rows = x2.shape[0]
        y = torch.empty(n_rows, d, device=x.device, dtype=out_dtype)
        rstd = torch.empty(n_rows, device=x.device, dtype=torch.float32)
        block_d, rows, warps = _launch(d)
        if n_rows:
            _rms_fwd_kernel[(triton.cdiv(n_rows, rows),)](
                x2, weight, y, rstd, n_rows, d, eps, BLOCK_D=block_d, ROWS=rows, num_warps=warps)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x2, weight, rstd = ctx.saved_tensors
        n_rows, d = x2.shape
        block_d, rows, warps = _launch(d)
        n_progs = triton.cdiv(n_rows, rows)
        dx = torch.empty_like(x2)
        dw = torch.empty(n_progs, d, device=x2.device, dtype=torch.float32)
        if n_rows:
            _rms_bwd_kernel[(n_progs,)](
                dy.reshape(-1, d).contiguous(), x2, weight, rstd, dx, dw, n_rows, d,
                BLOCK_D=block_d, ROWS=rows, num_warps=warps)
        dweight = dw.sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        return dx.reshape(ctx.shape), dweight, None, None


def rms_norm_triton(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
    """The fused kernel on validated arguments (see ``rms_norm``)."""
    return _RMSNormTriton.apply(x, weight, eps, out_dtype)
