"""Plain nn.Modules and their dataclass configs: the Mamba mixer, block, backbone, LM,
classifier and the waveform U-Net.

Nothing here imports Lightning; tasks wrap these modules.
"""

from seqmodels.models.classifier import MambaClassifier
from seqmodels.models.config import MambaConfig
from seqmodels.models.digit_classifier import DigitClassifier, DigitClassifierConfig
from seqmodels.models.lm import InferenceCache, MambaBackbone, MambaLM, init_weights
from seqmodels.models.mamba import Mamba, MambaBlock, MixerState, RMSNorm, pack_stage_weights
from seqmodels.models.unet import DownPool, MambaUNet, MambaUNetConfig, UNetInferenceCache, UNetStageWeights, UpPool

__all__ = [
    "DigitClassifier",
    "DigitClassifierConfig",
    "InferenceCache",
    "DownPool",
    "Mamba",
    "MambaBackbone",
    "MambaClassifier",
    "MambaBlock",
    "MambaConfig",
    "MambaLM",
    "MambaUNet",
    "MambaUNetConfig",
    "MixerState",
    "RMSNorm",
    "UNetInferenceCache",
    "UNetStageWeights",
    "UpPool",
    "init_weights",
    "pack_stage_weights",
]
