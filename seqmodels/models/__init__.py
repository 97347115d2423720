"""Plain nn.Modules and their dataclass configs: the Mamba mixer, block, backbone, LM and classifier.

Nothing here imports Lightning; tasks wrap these modules.
"""

from seqmodels.models.classifier import MambaClassifier
from seqmodels.models.config import MambaConfig
from seqmodels.models.lm import InferenceCache, MambaBackbone, MambaLM, init_weights
from seqmodels.models.mamba import Mamba, MambaBlock, MixerState, RMSNorm

__all__ = [
    "InferenceCache",
    "Mamba",
    "MambaBackbone",
    "MambaClassifier",
    "MambaBlock",
    "MambaConfig",
    "MambaLM",
    "MixerState",
    "RMSNorm",
    "init_weights",
]
