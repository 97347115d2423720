"""Sequence-mixing kernels: the selective scan (fused Triton, chunked PyTorch, reference) and its
decode step. Nothing here imports lightning."""

from .selective_scan import (
    MAX_D_STATE,
    selective_scan,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_multi,
    selective_state_update_multi_ref,
    selective_state_update_ref,
)

__all__ = [
    "MAX_D_STATE",
    "selective_scan",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_multi",
    "selective_state_update_multi_ref",
    "selective_state_update_ref",
]
