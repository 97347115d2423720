"""Public RMSNorm ops: validate, then dispatch on ``impl``.

``impl``: "triton" (the fused kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
"ref" (plain PyTorch) and "auto" (triton for CUDA tensors, ref otherwise). No silent fallback:
an impl that cannot run on the given tensors raises a ValueError.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._triton_env import check_triton_device
from .ref import add_rms_norm_ref, rms_norm_ref

Impl = Literal["auto", "triton", "ref"]
IMPLS = ("auto", "triton", "ref")
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _check_weight(op: str, x: Tensor, weight: Tensor) -> None:
    if not isinstance(weight, Tensor) or weight.shape != (x.shape[-1],):
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{op}: weight must be [{x.shape[-1]}] (the input's last axis), got {got}")
    if weight.device != x.device:
        raise ValueError(f"{op}: weight is on {weight.device}, the input on {x.device}")


def _resolve_impl(op: str, x: Tensor, eps: float, impl: str, dtypes: dict[str, torch.dtype]) -> str:
    """Validate eps, impl and the dtypes the kernel would see; return the impl that runs."""
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps!r}")
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if x.device.type == "cuda" and all(dt in _FLOATS for dt in dtypes.values()) else "ref"
    if impl == "triton":
        check_triton_device(x.device, f"{op}: impl")
        for name, dt in dtypes.items():
            if dt not in _FLOATS:
                raise ValueError(f"{op}: {name} must be float32, bfloat16 or float16 for impl 'triton', got {dt}")
    return impl


def rms_norm(
    x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None, impl: Impl = "auto"
) -> Tensor:
    """RMSNorm over the last axis of ``x [..., D]`` with scale ``weight [D]``: float32
    statistics, the result in ``out_dtype`` (default: the weight's dtype). Differentiable in
    ``x`` and ``weight``."""
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"rms_norm: x must be a tensor [..., D], got {type(x).__name__}")
    _check_weight("rms_norm", x, weight)
    out_dtype = out_dtype or weight.dtype
    impl = _resolve_impl("rms_norm", x, eps, impl, {"x": x.dtype, "weight": weight.dtype, "out_dtype": out_dtype})
    if impl == "triton":
        from .triton_norm import rms_norm_triton  # lazy: importing triton kernels is slow

        return rms_norm_triton(x, weight, float(eps), out_dtype)
    return rms_norm_ref(x, weight, eps, out_dtype)


def add_rms_norm(
    hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None,
    sum_dtype: torch.dtype = torch.float32, impl: Impl = "auto",
) -> tuple[Tensor, Tensor]:
    """The pre-norm residual step: ``s = residual + hidden`` stored in ``sum_dtype`` (``hidden``
    alone when ``residual`` is None), and RMSNorm(s) over the last axis as in :func:`rms_norm`.
    Returns ``(normed, s)``, both differentiable in ``hidden``, ``residual`` and ``weight``.
    ``s`` is the residual stream the next block adds to; on the Triton path the add, the norm and
    both gradients are one kernel each way."""
    if not isinstance(hidden, Tensor) or hidden.dim() < 1:
        raise ValueError(f"add_rms_norm: hidden must be a tensor [..., D], got {type(hidden).__name__}")
    if residual is not None:
        if not isinstance(residual, Tensor) or residual.shape != hidden.shape:
            got = tuple(residual.shape) if isinstance(residual, Tensor) else type(residual).__name__
            raise ValueError(f"add_rms_norm: residual must have hidden's shape {tuple(hidden.shape)}, got {got}")
        if residual.device != hidden.device:
            raise ValueError(f"add_rms_norm: residual is on {residual.device}, hidden on {hidden.device}")
    _check_weight("add_rms_norm", hidden, weight)
    out_dtype = out_dtype or weight.dtype
    dtypes = {"hidden": hidden.dtype, "weight": weight.dtype, "out_dtype": out_dtype, "sum_dtype": sum_dtype}
    if residual is not None:
        dtypes["residual"] = residual.dtype
    impl = _resolve_impl("add_rms_norm", hidden, eps, impl, dtypes)
    if impl == "triton":
        from .triton_norm import add_rms_norm_triton  # lazy: importing triton kernels is slow

        return add_rms_norm_triton(hidden, residual, weight, float(eps), out_dtype, sum_dtype)
    return add_rms_norm_ref(hidden, residual, weight, eps, out_dtype, sum_dtype)
