"""The inner part of a real Mamba mixer (convolution, projections, selective scan, gate,
out_proj) as one autograd node with a fused Triton training path; see interface.py."""

from .interface import mamba_inner
from .ref import mamba_inner_ref

__all__ = ["mamba_inner", "mamba_inner_ref"]
