"""Plain PyTorch reference of the causal depthwise conv1d: ``F.conv1d`` with ``groups=E``,
padding W - 1 on both sides, the first L outputs, then the activation, exactly as the Mamba
mixer computes it; autograd gives the gradients. Arithmetic in float32 (float64 when an input is
float64: the tests' ground truth)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import Activation, check_conv_args

CONV_DOC = """
    Shapes (B batch, E channels, L length, W width, 2 <= W <= 8):
        x: (B, E, L) float32 / bfloat16 / float16 (float64 with impl="ref"), any strides.
        weight: (E, W), or nn.Conv1d's (E, 1, W). bias: (E,) or None.
    Returns y: (B, E, L), contiguous, in the dtype of x:

        y[b, e, t] = act(bias[e] + sum_{k=0}^{W-1} weight[e, k] x[b, e, t - (W-1) + k]),

    x = 0 at negative positions, act = SiLU (activation="silu") or the identity (None); the
    arithmetic is float32. This is ``F.silu(nn.Conv1d(E, E, W, groups=E, padding=W-1)(x)[..., :L])``
    of the Mamba mixer. Differentiable in x, weight and bias; the gradients have the dtypes of
    the inputs. Under ``torch.autocast`` the inputs are first cast to the autocast dtype, as
    conv1d does (float64 tensors are left alone).
"""


def autocast_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """x, weight, bias as conv1d sees them under ``torch.autocast`` on x's device: cast to the
    autocast dtype (differentiably; float64 left alone); unchanged when autocast is off."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device)

    def cast(t: Tensor | None) -> Tensor | None:
        return t if t is None or t.dtype == torch.float64 else t.to(dtype)

    return cast(x), cast(weight), cast(bias)


def conv_ref(x: Tensor, weight: Tensor, bias: Tensor | None, activation: Activation) -> Tensor:
    """The reference on validated arguments already cast for autocast; weight (E, W) or (E, 1, W)."""
    dim, width = x.shape[1], weight.shape[-1]
    acc = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in (x, weight, bias)) else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        y = F.conv1d(
            x.to(acc),
            weight.reshape(dim, 1, width).to(acc),
            bias.to(acc) if bias is not None else None,
            padding=width - 1,
            groups=dim,
        )[..., : x.shape[-1]]
        if activation == "silu":
            y = F.silu(y)
    return y.to(x.dtype).contiguous()


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: Activation = "silu"
) -> Tensor:
    check_conv_args(x, weight, bias, activation)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return conv_ref(x, weight, bias, activation)


causal_conv1d_ref.__doc__ = "Causal depthwise conv1d, plain PyTorch reference (F.conv1d, for tests).\n" + CONV_DOC
