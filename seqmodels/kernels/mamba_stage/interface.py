"""Public stage decode op: validate once, then dispatch on ``impl``.

``impl``: "triton" (the fused kernel; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
"ref" (the PyTorch reference) and "auto" (triton for CUDA tensors, ref otherwise). There is no
silent fallback: an impl that cannot run on the given tensors raises a ValueError.

Inference only (no autograd: the kernel has no backward). Under torch.compile the op is a
deliberate graph break on the Triton path (the launchers are plain Python).
"""

from __future__ import annotations

from torch import Tensor

from .ref import STAGE_DOC, Impl, MambaStageWeights, check_impl, check_stage_args, stage_step_ref


def mamba_stage_step(
    x: Tensor,
    weights: MambaStageWeights,
    conv_state: Tensor,
    ssm_state: Tensor,
    impl: Impl = "auto",
    *,
    embedding: Tensor | None = None,
    skip: Tensor | None = None,
    final_norm: tuple[Tensor, float] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    check_stage_args(x, weights, conv_state, ssm_state, embedding, skip, final_norm, out)
    impl = check_impl(impl, x.device, weights.dtype)
    if impl == "triton":
        from .triton_stage import mamba_stage_step_triton  # lazy: importing triton kernels is slow

        return mamba_stage_step_triton(x, weights, conv_state, ssm_state, embedding=embedding, skip=skip,
                                       final_norm=final_norm, out=out)
    r = stage_step_ref(x, weights, conv_state, ssm_state, embedding, skip, final_norm)
    return r if out is None else out.copy_(r)


mamba_stage_step.__doc__ = (
    "Stage decode step: advance n stacked pre-norm Mamba blocks of one width by one position "
    "(with ``impl='triton'`` a few kernel launches for all n blocks, README.md); ``impl`` as in "
    "the module doc.\n" + STAGE_DOC
)
