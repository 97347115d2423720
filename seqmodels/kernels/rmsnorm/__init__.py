"""RMSNorm over the last axis: a fused Triton kernel (forward and backward) and its reference."""

from .interface import rms_norm
from .ref import rms_norm_ref

__all__ = ["rms_norm", "rms_norm_ref"]
