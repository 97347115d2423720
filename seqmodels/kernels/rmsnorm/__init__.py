"""RMSNorm over the last axis, alone or with the pre-norm block's residual add: fused Triton
kernels (forward and backward) and their references."""

from .interface import add_rms_norm, rms_norm
from .ref import add_rms_norm_ref, rms_norm_ref

__all__ = ["add_rms_norm", "add_rms_norm_ref", "rms_norm", "rms_norm_ref"]
