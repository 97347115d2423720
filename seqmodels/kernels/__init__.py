"""Sequence-mixing kernels: the selective scan (fused Triton, chunked PyTorch, reference), its
decode step, the decode step of a whole stage of Mamba blocks, RMSNorm, the causal depthwise
conv1d of the mixer, and the mixer's inner part as one node (``mamba_inner``). Nothing here imports lightning."""

from .causal_conv import causal_conv1d, causal_conv1d_ref
from .mamba_inner import mamba_inner, mamba_inner_ref
from .mamba_stage import MambaStageWeights, mamba_stage_step, mamba_stage_step_ref
from .rmsnorm import add_rms_norm, add_rms_norm_ref, rms_norm, rms_norm_ref
from .selective_scan import (
    MAX_D_STATE,
    selective_scan,
    selective_scan_linear,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_multi,
    selective_state_update_multi_ref,
    selective_state_update_ref,
)

__all__ = [
    "MAX_D_STATE",
    "MambaStageWeights",
    "add_rms_norm",
    "add_rms_norm_ref",
    "causal_conv1d",
    "causal_conv1d_ref",
    "mamba_inner",
    "mamba_inner_ref",
    "mamba_stage_step",
    "mamba_stage_step_ref",
    "rms_norm",
    "rms_norm_ref",
    "selective_scan",
    "selective_scan_linear",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_multi",
    "selective_state_update_multi_ref",
    "selective_state_update_ref",
]
