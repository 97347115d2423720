"""Decode step of a stage of Mamba blocks (n blocks of one width, one position): fused Triton
kernel and PyTorch reference; see README.md for the math and the layout."""

from .interface import mamba_stage_step
from .ref import MambaStageWeights, mamba_stage_step_ref

__all__ = ["MambaStageWeights", "mamba_stage_step", "mamba_stage_step_ref"]
