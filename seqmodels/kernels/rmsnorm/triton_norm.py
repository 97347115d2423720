"""Fused RMSNorm in Triton: one pass forward, one pass backward, optionally with the residual add.

Rows of ``D`` features, ``ROWS`` rows per program, all arithmetic in float32. The forward
stores the output (in any float dtype, so a float32 residual stream can feed a bfloat16 mixer
without a separate cast) and 1/rms per row. With g = dy * w the backward is

    dx = rstd * g - x * rstd^3 * mean(g * x)         dw = sum over rows of dy * x * rstd

dw is summed per program into a [programs, D] float32 buffer, then over programs in PyTorch (a
fixed order: deterministic).

The pre-norm residual block's add goes into the same passes (``add_rms_norm``): the forward
reads ``hidden`` and ``residual``, stores their sum s (the residual stream, usually float32) and
RMSNorm(s); the backward adds the gradient that reaches s from later blocks to the norm's, and
writes it once in the residual's dtype and, when it differs, once more in the hidden's. The
separate add, its gradient's cast and the accumulation of the two gradients of s are gone.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _rms_fwd_kernel(x_ptr, res_ptr, sum_ptr, w_ptr, y_ptr, rstd_ptr, n_rows, D, eps,
                    BLOCK_D: tl.constexpr, ROWS: tl.constexpr, HAS_RES: tl.constexpr, STORE_SUM: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols < D)[None, :]
    offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        x += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if STORE_SUM:
        s = x.to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + offs, s, mask=mask)
        x = s.to(tl.float32)  # the norm reads the stream as stored (a no-op for a float32 stream)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    tl.store(y_ptr + offs, (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_ok)


@triton.jit
def _rms_bwd_kernel(dy_ptr, dsum_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dx2_ptr, dw_ptr, n_rows, D,
                    BLOCK_D: tl.constexpr, ROWS: tl.constexpr, HAS_DSUM: tl.constexpr, STORE_DX2: tl.constexpr):
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
    if HAS_DSUM:
        dx += tl.load(dsum_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if STORE_DX2:
        tl.store(dx2_ptr + offs, dx.to(dx2_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid.to(tl.int64) * D + cols, tl.sum(dy * xhat, axis=0), mask=cols < D)


def _launch(d: int) -> tuple[int, int, int]:
    """BLOCK_D, rows per program and warps: about 4096 elements per program."""
    block_d = triton.next_power_of_2(d)
    rows = max(1, min(64, 4096 // block_d))
    return block_d, rows, 4 if block_d * rows <= 4096 else 8


def _rows(t: Tensor, d: int) -> Tensor:
    return t.reshape(-1, d).contiguous()


def _forward(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, out_dtype: torch.dtype,
             sum_dtype: torch.dtype | None) -> tuple[Tensor, Tensor, Tensor]:
    """y, the rows the norm read ([rows, D]: the stored sum with ``sum_dtype``, else x), and 1/rms."""
    d = x.shape[-1]
    x2 = _rows(x, d)
    n_rows = x2.shape[0]
    y = torch.empty(n_rows, d, device=x.device, dtype=out_dtype)
    s = torch.empty(n_rows, d, device=x.device, dtype=sum_dtype) if sum_dtype is not None else None
    rstd = torch.empty(n_rows, device=x.device, dtype=torch.float32)
    block_d, rows, warps = _launch(d)
    if n_rows:
        _rms_fwd_kernel[(triton.cdiv(n_rows, rows),)](
            x2, _rows(residual, d) if residual is not None else x2, s if s is not None else x2, weight, y, rstd,
            n_rows, d, eps, BLOCK_D=block_d, ROWS=rows, HAS_RES=residual is not None, STORE_SUM=s is not None,
            num_warps=warps)
    return y, (s if s is not None else x2), rstd


def _backward(dy: Tensor, dsum: Tensor | None, x2: Tensor, weight: Tensor, rstd: Tensor, dx_dtype: torch.dtype,
              dx2_dtype: torch.dtype | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """dx (plus ``dsum``) in ``dx_dtype``, the same in ``dx2_dtype`` (or None), and dweight [D] float32."""
    n_rows, d = x2.shape
    block_d, rows, warps = _launch(d)
    n_progs = triton.cdiv(n_rows, rows)
    dx = torch.empty(n_rows, d, device=x2.device, dtype=dx_dtype)
    dx2 = torch.empty(n_rows, d, device=x2.device, dtype=dx2_dtype) if dx2_dtype is not None else None
    dw = torch.empty(n_progs, d, device=x2.device, dtype=torch.float32)
    if n_rows:
        _rms_bwd_kernel[(n_progs,)](
            _rows(dy, d), _rows(dsum, d) if dsum is not None else dx, x2, weight, rstd, dx,
            dx2 if dx2 is not None else dx, dw, n_rows, d, BLOCK_D=block_d, ROWS=rows, HAS_DSUM=dsum is not None,
            STORE_DX2=dx2 is not None, num_warps=warps)
    return dx, dx2, dw.sum(0)


class _RMSNormTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        y, x2, rstd = _forward(x, None, weight, eps, out_dtype, None)
        ctx.save_for_backward(x2, weight, rstd)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x2, weight, rstd = ctx.saved_tensors
        dx, _, dw = _backward(dy, None, x2, weight, rstd, x2.dtype, None)
        dweight = dw.to(weight.dtype) if ctx.needs_input_grad[1] else None
        return dx.reshape(dy.shape), dweight, None, None


class _AddRMSNormTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float, out_dtype: torch.dtype,
                sum_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        y, s, rstd = _forward(hidden, residual, weight, eps, out_dtype, sum_dtype)
        ctx.save_for_backward(s, weight, rstd)
        ctx.set_materialize_grads(False)  # the last sum often reaches nothing: no zeros for it
        ctx.dtypes = hidden.dtype, residual.dtype if residual is not None else None
        return y.reshape(hidden.shape), s.reshape(hidden.shape)

    @staticmethod
    def backward(ctx, dy: Tensor, dsum: Tensor | None):
        s, weight, rstd = ctx.saved_tensors
        hidden_dtype, residual_dtype = ctx.dtypes
        if dy is None:
            dy = torch.zeros_like(s)
        # One gradient for both summands; a second copy only where their dtypes differ.
        first = residual_dtype or hidden_dtype
        dx, dx2, dw = _backward(dy, dsum, s, weight, rstd, first, hidden_dtype if hidden_dtype != first else None)
        dres = dx.reshape(dy.shape)
        dhidden = dx2.reshape(dy.shape) if dx2 is not None else dres
        dweight = dw.to(weight.dtype) if ctx.needs_input_grad[2] else None
        return dhidden, dres if residual_dtype is not None else None, dweight, None, None, None


def rms_norm_triton(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
    """The fused kernel on validated arguments (see ``rms_norm``)."""
    return _RMSNormTriton.apply(x, weight, eps, out_dtype)


def add_rms_norm_triton(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float,
                        out_dtype: torch.dtype, sum_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The fused add and norm on validated arguments (see ``add_rms_norm``)."""
    return _AddRMSNormTriton.apply(hidden, residual, weight, eps, out_dtype, sum_dtype)
