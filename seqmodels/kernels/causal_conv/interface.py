"""Public causal conv1d op: validate once, cast for autocast, then dispatch on ``impl``.

``impl``: "triton" (the fused kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
"ref" (plain PyTorch) and "auto" (triton for CUDA tensors, ref otherwise and for float64). There
is no silent fallback: an impl that cannot run on the given tensors raises a ValueError.

Under torch.compile the op is a deliberate graph break on the Triton path (the launchers are
plain Python); the ref path traces as ordinary PyTorch code.
"""

from __future__ import annotations

from torch import Tensor

from .checks import Activation, Impl, check_conv_args, check_impl
from .ref import CONV_DOC, autocast_inputs, conv_ref


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: Activation = "silu",
    impl: Impl = "auto",
) -> Tensor:
    width = check_conv_args(x, weight, bias, activation)
    x, weight, bias = autocast_inputs(x, weight, bias)
    dtypes = {name: t.dtype for name, t in (("x", x), ("weight", weight), ("bias", bias)) if t is not None}
    impl = check_impl(impl, x.device, dtypes)
    if impl == "triton":
        from .triton_conv import causal_conv1d_triton  # lazy: importing triton kernels is slow

        return causal_conv1d_triton(x, weight.reshape(x.shape[1], width), bias, activation)
    return conv_ref(x, weight, bias, activation)


causal_conv1d.__doc__ = (
    "Causal depthwise conv1d + bias + optional SiLU (the convolution of the Mamba mixer), ``impl`` "
    "picking the implementation (see the module doc; with impl='triton' one fused kernel forward "
    "and one backward, README.md).\n" + CONV_DOC
)
