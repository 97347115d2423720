"""Argument validation for the causal conv1d, in one place.

Both public entry points call :func:`check_conv_args` before any computation, so a bad argument
raises a ``ValueError`` that names it and the expected shape. The checks read only shapes,
dtypes and devices (no host synchronisation).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._triton_env import check_triton_device

Impl = Literal["auto", "triton", "ref"]
IMPLS = ("auto", "triton", "ref")
Activation = Literal["silu"] | None
ACTIVATIONS = (None, "silu")

# Widths the kernels are built for (Mamba uses 4): the halo of W - 1 positions fits in one
# row of a tile.
MIN_WIDTH, MAX_WIDTH = 2, 8

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The Triton kernels compute in float32; float64 runs only through the reference.
_TRITON_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_float(name: str, t: object) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")


def check_conv_args(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> int:
    """Validate the arguments of ``causal_conv1d``; return the width W. Raises ``ValueError``
    naming the first bad argument."""
    _check_float("x", x)
    if x.dim() != 3:
        raise ValueError(f"x: expected shape (B, E, L), got {_fmt(tuple(x.shape))}")
    dim, length = x.shape[1], x.shape[2]
    if length < 1 or dim < 1:
        raise ValueError(f"x: the channel and length axes E and L must be at least 1, got shape {_fmt(tuple(x.shape))}")
    _check_float("weight", weight)
    if weight.dim() == 3 and weight.shape[1] != 1 or weight.dim() not in (2, 3):
        raise ValueError(f"weight: expected shape (E, W) or Conv1d's (E, 1, W), got {_fmt(tuple(weight.shape))}")
    if weight.shape[0] != dim:
        raise ValueError(f"weight: expected E = {dim} channels (x's axis 1), got shape {_fmt(tuple(weight.shape))}")
    width = weight.shape[-1]
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"weight: the width W = {width} must be between {MIN_WIDTH} and {MAX_WIDTH}")
    if bias is not None:
        _check_float("bias", bias)
        if tuple(bias.shape) != (dim,):
            raise ValueError(f"bias: expected shape (E,) = {_fmt((dim,))}, got {_fmt(tuple(bias.shape))}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: is on {t.device} but x is on {x.device}; all tensors must share one device")
    return width


def check_impl(impl: str, device: torch.device, dtypes: dict[str, torch.dtype]) -> str:
    """Resolve ``impl`` ("auto": "triton" for CUDA tensors the kernels take, i.e. not float64;
    "ref" otherwise) and check it can run here."""
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        fits = all(dt in _TRITON_FLOATS for dt in dtypes.values())
        return "triton" if device.type == "cuda" and fits else "ref"
    if impl == "triton":
        check_triton_device(device)
        for name, dt in dtypes.items():
            if dt not in _TRITON_FLOATS:
                raise ValueError(
                    f"{name}: impl='triton' supports float16, bfloat16 and float32, got {dt}; "
                    "use impl='ref' for float64"
                )
    return impl
