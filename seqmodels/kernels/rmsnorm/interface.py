"""Public RMSNorm op: validate, then dispatch on ``impl``.

``impl``: "triton" (the fused kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
"ref" (plain PyTorch) and "auto" (triton for CUDA tensors, ref otherwise). No silent fallback:
an impl that cannot run on the given tensors raises a ValueError.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._triton_env import check_triton_device
from .ref import rms_norm_ref

Impl = Literal["auto", "triton", "ref"]
IMPLS = ("auto", "triton", "ref")
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def rms_norm(
    x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None, impl: Impl = "auto"
) -> Tensor:
    """RMSNorm over the last axis of ``x [..., D]`` with scale ``weight [D]``: float32
    statistics, the result in ``out_dtype`` (default: the weight's dtype). Differentiable in
    ``x`` and ``weight``."""
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"rms_norm: x must be a tensor [..., D], got {type(x).__name__}")
    if not isinstance(weight, Tensor) or weight.shape != (x.shape[-1],):
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"rms_norm: weight must be [{x.shape[-1]}] (x's last axis), got {got}")
    if weight.device != x.device:
        raise ValueError(f"rms_norm: weight is on {weight.device}, x on {x.device}")
    if not eps > 0:
        raise ValueError(f"rms_norm: eps must be positive, got {eps!r}")
    if impl not in IMPLS:
        raise ValueError(f"rms_norm: impl must be one of {IMPLS}, got {impl!r}")
    out_dtype = out_dtype or weight.dtype
    if impl == "auto":
        impl = "triton" if x.device.type == "cuda" and x.dtype in _FLOATS and weight.dtype in _FLOATS \
            and out_dtype in _FLOATS else "ref"
    if impl == "triton":
        check_triton_device(x.device, "rms_norm: impl")
        for name, dt in (("x", x.dtype), ("weight", weight.dtype), ("out_dtype", out_dtype)):
            if dt not in _FLOATS:
                raise ValueError(f"rms_norm: {name} must be float32, bfloat16 or float16 for impl 'triton', got {dt}")
        from .triton_norm import rms_norm_triton  # lazy: importing triton kernels is slow

        return rms_norm_triton(x, weight, float(eps), out_dtype)
    return rms_norm_ref(x, weight, eps, out_dtype)
