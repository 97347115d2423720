"""Public selective-scan and decode-step ops: validate once, then dispatch on ``impl``.

``impl``: "triton" (fused kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
"torch" (chunked pure-PyTorch path, fast on CPU), "ref" (one position at a time) and "auto"
(triton for CUDA tensors, torch otherwise). There is no silent fallback: an impl that cannot run
on the given tensors raises a ValueError.

Under torch.compile these ops are a deliberate graph break on the Triton path (the launchers are
plain Python); the torch and ref paths trace as ordinary PyTorch code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import Impl, check_impl, check_scan_args, check_step_args
from .chunked import selective_scan_chunked
from .ref import SCAN_DOC, STEP_DOC, _multi_step_ref, _scan_ref, _step_ref, with_doc


def _scan_dtypes(**tensors: Tensor | None) -> dict[str, torch.dtype]:
    return {name: t.dtype for name, t in tensors.items() if t is not None}


@with_doc(
    "Selective scan of Mamba (Gu & Dao 2023), ``impl`` picking the implementation (see module doc).",
    SCAN_DOC,
)
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
    impl: Impl = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    s = check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    dtypes = _scan_dtypes(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)
    impl = check_impl(impl, u.device, dtypes)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)
    if impl == "triton":
        from .triton_scan import selective_scan_triton  # lazy: importing triton kernels is slow

        return selective_scan_triton(*args)
    if impl == "torch":
        return selective_scan_chunked(s, *args)
    return _scan_ref(s, *args)


CHECKPOINT_PASSES = ("first", "recompute")


def selective_scan_linear(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    weight: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    impl: Impl = "auto",
    checkpoint_pass: str = "first",
) -> Tensor:
    """``selective_scan(u, ...)`` ``[B, E, L]`` followed by a bias-free linear map ``weight [O, E]``
    over its channels, returning ``[B, L, O]``: the tail of a Mamba mixer, for a block under
    non-reentrant activation checkpointing, whose forward runs twice.

    ``checkpoint_pass="first"`` (the pass that computes the loss) runs the scan and keeps its
    tile states on the autograd node; ``"recompute"`` (checkpointing's recomputation in the
    backward) saves the inputs again but does not run the scan, and returns zeros; the first
    pass's backward then needs no second scan forward: the scan's backward writes y itself.
    The result under "recompute" is not the product, so call it only where nothing reads it
    (the mixer of a checkpointed residual block). Triton only: other implementations raise,
    and a caller without Triton composes ``selective_scan`` and a linear layer instead.
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, None)
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[1] != u.shape[1]:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight: expected [out, {u.shape[1]}] (u's channels), got {shape}")
    if weight.device != u.device:
        raise ValueError(f"weight: on {weight.device}, u on {u.device}")
    if checkpoint_pass not in CHECKPOINT_PASSES:
        raise ValueError(f"checkpoint_pass: expected one of {CHECKPOINT_PASSES}, got {checkpoint_pass!r}")
    dtypes = _scan_dtypes(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, weight=weight)
    if check_impl(impl, u.device, dtypes) != "triton":
        raise ValueError(f"impl: selective_scan_linear runs the Triton kernels only, got {impl!r} on {u.device}")
    from .triton_scan import selective_scan_linear_triton

    return selective_scan_linear_triton(u, delta, A, B, C, weight, D, z, delta_bias, delta_softplus,
                                        checkpoint_pass == "recompute")


@with_doc(
    "Decode step: advance ``state`` in place by one position and return y. ``impl`` as in selective_scan.",
    STEP_DOC,
)
def selective_state_update(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    impl: Impl = "auto",
) -> Tensor:
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, multi=False)
    dtypes = _scan_dtypes(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    impl = check_impl(impl, x.device, dtypes)
    if impl == "triton":
        from .triton_step import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, multi=False)
    # One position is already fully vectorised: the torch path is the reference.
    return _step_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


@with_doc(
    "Multi-step decode (e.g. verifying k speculated tokens): advance ``state`` in place by k positions "
    "and return y (batch, dim, k). ``impl`` as in selective_scan.",
    STEP_DOC,
)
def selective_state_update_multi(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    impl: Impl = "auto",
) -> Tensor:
    check_step_args(state, x, dt, A, B, C, D, z, dt_bias, multi=True)
    dtypes = _scan_dtypes(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    impl = check_impl(impl, x.device, dtypes)
    if impl == "triton":
        from .triton_step import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, multi=True)
    return _multi_step_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
