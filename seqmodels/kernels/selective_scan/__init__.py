"""Selective scan (Mamba's SSM recurrence) and its decode step; see README.md for the math."""

from .checks import MAX_D_STATE
from .interface import (
    CHECKPOINT_PASSES,
    selective_scan,
    selective_scan_linear,
    selective_state_update,
    selective_state_update_multi,
)
from .ref import selective_scan_ref, selective_state_update_multi_ref, selective_state_update_ref

__all__ = [
    "CHECKPOINT_PASSES",
    "MAX_D_STATE",
    "selective_scan",
    "selective_scan_linear",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_multi",
    "selective_state_update_multi_ref",
    "selective_state_update_ref",
]
