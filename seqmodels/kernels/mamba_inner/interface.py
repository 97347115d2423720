"""``mamba_inner``: a real Mamba mixer from its in_proj output to its out_proj output.

The composed mixer (``seqmodels.models.Mamba``) is about a dozen autograd nodes per block: the
split of in_proj's output into x and the gate z, the convolution, two projections, the scan, the
casts of every weight, out_proj. In training at L = 1024 (batch 64, the 7M DNA model) their
element-wise copies (the concatenation of dx and dz, a copy of the strided z, weight-gradient
accumulations) and the Python work of launching them cost as much as a fifth of the step. Here
they are one node: the forward runs the Triton convolution and scan kernels on views of xz, the
backward writes dx and dz straight into one ``[B, 2E, L]`` gradient. Triton only; the plain
reference is ``mamba_inner_ref``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..selective_scan.checks import MAX_D_STATE, Impl, check_impl


def _describe(t: object) -> object:
    """A tensor's shape, or the type of anything else (never a tensor's values)."""
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check(name: str, t: object, shape: tuple, device: torch.device) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {shape}, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: on {t.device}, xz on {device}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")


def mamba_inner(
    xz: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_proj_bias: Tensor,
    A_log: Tensor,
    D: Tensor,
    out_proj_weight: Tensor,
    impl: Impl = "auto",
) -> Tensor:
    """The mixer between in_proj and out_proj (Gu & Dao 2023, figure 3), real state matrix:

    x, z = xz[:, :E], xz[:, E:]; u = SiLU(causal depthwise conv1d(x) + conv_bias);
    (dt, B, C) = x_proj_weight u split as [R, N, N]; delta = dt_proj_weight dt;
    y = selective_scan(u, delta, A = -exp(A_log), B, C, D, gate z, delta_bias = dt_proj_bias,
    softplus); returns out_proj_weight y as ``[B, L, D_model]``.

    Shapes: xz ``[B, 2E, L]`` (channels first, as ``seqmodels.models.Mamba`` lays out in_proj's
    output); conv_weight ``[E, 1, W]`` or ``[E, W]``; conv_bias, dt_proj_bias, D ``[E]``;
    x_proj_weight ``[R + 2N, E]``; dt_proj_weight ``[E, R]``; A_log ``[E, N]``; out_proj_weight
    ``[D_model, E]``. Matrix products and the convolution take their weights in xz's dtype (so
    under autocast, xz in bfloat16, they run in bfloat16); the scan's A, D and bias stay float32.
    Differentiable in every tensor; weight gradients come back in each weight's dtype.

    ``impl``: "triton" or "auto" on CUDA (CPU tensors need TRITON_INTERPRET=1 and "triton");
    others raise: a caller without Triton composes the kernels (as ``Mamba`` does).
    """
    if not isinstance(xz, Tensor) or xz.dim() != 3 or xz.shape[1] % 2:
        raise ValueError(f"xz: expected [batch, 2 * d_inner, length], got {_describe(xz)}")
    batch, two_e, length = xz.shape
    e = two_e // 2
    dev = xz.device
    if not isinstance(conv_weight, Tensor) or conv_weight.dim() not in (2, 3):
        raise ValueError(f"conv_weight: expected [{e}, 1, W] or [{e}, W], got {_describe(conv_weight)}")
    _check("conv_weight", conv_weight, (e, 1, conv_weight.shape[-1]) if conv_weight.dim() == 3 else
           (e, conv_weight.shape[-1]), dev)
    if conv_bias is not None:
        _check("conv_bias", conv_bias, (e,), dev)
    if not isinstance(A_log, Tensor) or A_log.dim() != 2:
        raise ValueError(f"A_log: expected [{e}, N], got {_describe(A_log)}")
    n = A_log.shape[1]
    _check("A_log", A_log, (e, n), dev)
    if not 1 <= n <= MAX_D_STATE:
        raise ValueError(f"A_log: d_state {n} outside [1, {MAX_D_STATE}]")
    if not isinstance(dt_proj_weight, Tensor) or dt_proj_weight.dim() != 2:
        raise ValueError(f"dt_proj_weight: expected [{e}, R], got {_describe(dt_proj_weight)}")
    rank = dt_proj_weight.shape[1]
    _check("dt_proj_weight", dt_proj_weight, (e, rank), dev)
    _check("x_proj_weight", x_proj_weight, (rank + 2 * n, e), dev)
    _check("dt_proj_bias", dt_proj_bias, (e,), dev)
    _check("D", D, (e,), dev)
    if not isinstance(out_proj_weight, Tensor) or out_proj_weight.dim() != 2:
        raise ValueError(f"out_proj_weight: expected [D_model, {e}], got {_describe(out_proj_weight)}")
    _check("out_proj_weight", out_proj_weight, (out_proj_weight.shape[0], e), dev)
    if check_impl(impl, dev, {"xz": xz.dtype}) != "triton":
        raise ValueError(f"impl: mamba_inner runs the Triton kernels only, got {impl!r} on {dev}")
    from .triton_inner import mamba_inner_triton  # lazy: importing triton kernels is slow

    return mamba_inner_triton(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                              A_log, D, out_proj_weight)
