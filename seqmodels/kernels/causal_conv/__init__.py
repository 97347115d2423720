"""Causal depthwise conv1d (+ bias, + optional SiLU), the short convolution of the Mamba mixer:
a fused Triton kernel (forward and backward) and its PyTorch reference; see README.md."""

from .interface import causal_conv1d
from .ref import causal_conv1d_ref

__all__ = ["causal_conv1d", "causal_conv1d_ref"]
