"""Plain PyTorch RMSNorm, the reference of the fused kernel (and the CPU path)."""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None) -> Tensor:
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` with float32 statistics (float64 for float64
    inputs), returned in ``out_dtype`` (default: the weight's dtype)."""
    acc = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    x32 = x.to(acc)
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * weight.to(acc)).to(out_dtype or weight.dtype)


def add_rms_norm_ref(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float,
                     out_dtype: torch.dtype | None = None,
                     sum_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``s = residual + hidden`` (added in float32, or float64 for float64 inputs, then stored in
    ``sum_dtype``; ``hidden`` alone when ``residual`` is None), then
    ``(rms_norm_ref(s, weight, eps, out_dtype), s)``."""
    terms = [hidden] if residual is None else [residual, hidden]
    acc = torch.float64 if torch.float64 in (sum_dtype, *(t.dtype for t in terms)) else torch.float32
    s = sum(t.to(acc) for t in terms).to(sum_dtype)
    return rms_norm_ref(s, weight, eps, out_dtype), s
