"""LightningModules: loss, metrics, logging and optimisers over the models in seqmodels.models."""

from seqmodels.tasks.callbacks import LossCurvePlot
from seqmodels.tasks.lm import NextBaseLM
from seqmodels.tasks.writers import PredictionWriter

__all__ = ["LossCurvePlot", "NextBaseLM", "PredictionWriter"]
