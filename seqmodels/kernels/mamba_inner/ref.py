"""Plain PyTorch reference of ``mamba_inner`` (for tests): the mixer's steps one after another,
every weight applied in the dtype of ``xz``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..causal_conv import causal_conv1d_ref
from ..selective_scan import selective_scan_ref


def mamba_inner_ref(
    xz: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_proj_bias: Tensor,
    A_log: Tensor,
    D: Tensor,
    out_proj_weight: Tensor,
) -> Tensor:
    """See ``mamba_inner``: xz ``[B, 2E, L]`` -> ``[B, L, D_model]``."""
    dtype = xz.dtype
    x, z = xz.chunk(2, dim=1)
    u = causal_conv1d_ref(x, conv_weight.to(dtype), conv_bias.to(dtype) if conv_bias is not None else None)
    rank = dt_proj_weight.shape[1]
    n = (x_proj_weight.shape[0] - rank) // 2
    x_dbl = torch.einsum("oe,bel->bol", x_proj_weight.to(dtype), u)
    dt, B, C = torch.split(x_dbl, [rank, n, n], dim=1)
    delta = torch.einsum("er,brl->bel", dt_proj_weight.to(dtype), dt)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    y = selective_scan_ref(u, delta, -torch.exp(A_log.to(acc)), B, C, D.to(acc), z, dt_proj_bias.to(acc),
                           delta_softplus=True)
    return torch.einsum("oe,bel->blo", out_proj_weight.to(dtype), y.to(dtype))
