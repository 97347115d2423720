"""seqmodels: long-sequence modelling of DNA and audio with Mamba models."""

from seqmodels.checkpoint import load_checkpoint

__all__ = ["load_checkpoint"]
__version__ = "0.1.0"
