"""LightningModules: loss, metrics, logging and optimisers over the models in seqmodels.models."""

from seqmodels.tasks.callbacks import LossCurvePlot
from seqmodels.tasks.lm import NextBaseLM
from seqmodels.tasks.species import (
    ConfusionMatrixWriter,
    FineTuneSeqLenWarmup,
    SpeciesClassifier,
    SpeciesPredictionWriter,
)
from seqmodels.tasks.waveform import AudioSampleLogger, WaveformLM
from seqmodels.tasks.writers import PredictionWriter

__all__ = [
    "AudioSampleLogger",
    "ConfusionMatrixWriter",
    "FineTuneSeqLenWarmup",
    "LossCurvePlot",
    "NextBaseLM",
    "PredictionWriter",
    "SpeciesClassifier",
    "SpeciesPredictionWriter",
    "WaveformLM",
]
