"""A small residual CNN that classifies one-second 16 kHz clips of spoken digits (SC09).

It is the scoring network of the SC09 sample-quality metrics (FID, IS, mIS, AM; see
:mod:`seqmodels.tasks.sc09_metrics`): DiffWave and SaShiMi score generated clips with a
ResNeXt trained on log-mel spectrograms of the real SC09 training split. This one follows the same
recipe at a smaller scale: a log-mel front end (inside the module, so it takes raw waveforms),
a stem convolution, stages of residual blocks that halve time and frequency, global average
pooling and a hidden layer whose activations are the features FID uses.

Absolute FID / IS / mIS / AM values depend on the classifier: they are comparable only between
runs scored with the same trained classifier.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torchaudio
from einops import rearrange
from torch import Tensor, nn

_LOG_FLOOR = 1e-6  # keeps log() of silent frames finite (about -60 dB of power)


@dataclass
class DigitClassifierConfig:
    """Architecture of :class:`DigitClassifier`.

    Args:
        sample_rate: input rate in Hz (SC09: 16 kHz).
        clip_samples: input length in samples (one second).
        n_fft: STFT window in samples (480 = 30 ms at 16 kHz).
        hop_length: STFT hop in samples (160 = 10 ms).
        n_mels: mel bands.
        channels: output channels of each residual stage; each stage after the first halves
            time and frequency.
        blocks_per_stage: residual blocks in each stage.
        feature_dim: width of the penultimate layer (the FID features).
        num_classes: output classes (10 digits).
        dropout: dropout before the output layer (training only; features are taken before it).
    """

    sample_rate: int = 16_000
    clip_samples: int = 16_000
    n_fft: int = 480
    hop_length: int = 160
    n_mels: int = 40
    channels: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = 2
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)  # YAML and checkpoints give lists
        for name in ("sample_rate", "clip_samples", "n_fft", "hop_length", "n_mels", "blocks_per_stage", "feature_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DigitClassifierConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"DigitClassifierConfig.num_classes must be an int >= 2, got {self.num_classes!r}")
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"DigitClassifierConfig.channels must be positive ints, got {self.channels!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DigitClassifierConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.hop_length > self.n_fft:
            raise ValueError(
                f"DigitClassifierConfig.hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Constructor arguments as plain data (for checkpoints)."""
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DigitClassifierConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"DigitClassifierConfig.from_dict: data must be a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"DigitClassifierConfig: unknown field(s) {unknown}")
        return cls(**data)


class LogMel(nn.Module):
    """Waveform ``[B, T]`` -> log-mel spectrogram ``[B, n_mels, frames]`` (natural log of power)."""

    def __init__(self, config: DigitClassifierConfig) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=20.0,
            f_max=config.sample_rate / 2,
            power=2.0,
        )

    def forward(self, wave: Tensor) -> Tensor:
        # The STFT runs in float32 even under autocast: low-precision power spectra lose quiet bands.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return torch.log(self.mel(wave.float()) + _LOG_FLOOR)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 strided) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """x ``[B, C_in, H, W]`` -> ``[B, C_out, H / stride, W / stride]``."""
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.shortcut(x))


class DigitClassifier(nn.Module):
    """Log-mel residual CNN: waveforms ``[B, T]`` at 16 kHz -> digit logits ``[B, num_classes]``.

    :meth:`features` gives the penultimate activations ``[B, feature_dim]`` that FID compares;
    :meth:`forward` the logits. Clips of another length than ``clip_samples`` are accepted (the
    pooling is global), but the SC09 protocol always feeds exactly one second.
    """

    def __init__(self, config: DigitClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DigitClassifierConfig()
        self.frontend = LogMel(config)
        # Learned normalisation of the log-mel input: its scale (about -14 .. +5) is far from unit.
        self.input_norm = nn.BatchNorm2d(1)
        c0 = config.channels[0]
        self.stem = nn.Sequential(nn.Conv2d(1, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        blocks: list[nn.Module] = []
        in_ch = c0
        for stage, out_ch in enumerate(config.channels):
            for b in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(ResidualBlock(in_ch, out_ch, stride))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.hidden = nn.Sequential(nn.Linear(in_ch, config.feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def _check(self, wave: Tensor) -> None:
        if wave.ndim != 2:
            raise ValueError(f"DigitClassifier expects waveforms [B, T], got shape {tuple(wave.shape)}")
        if wave.shape[-1] < self.config.n_fft:
            raise ValueError(
                f"DigitClassifier: clips need at least n_fft={self.config.n_fft} samples, got {wave.shape[-1]}"
            )

    def features(self, wave: Tensor) -> Tensor:
        """wave ``[B, T]`` in ``[-1, 1]`` -> penultimate features ``[B, feature_dim]`` (FID)."""
        self._check(wave)
        spec = rearrange(self.frontend(wave), "b mel t -> b 1 mel t")
        h = self.blocks(self.stem(self.input_norm(spec)))  # [B, C, mel', t']
        pooled = h.mean(dim=(-2, -1))  # [B, C]
        return self.hidden(pooled)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """features ``[B, feature_dim]`` -> logits ``[B, num_classes]``."""
        return self.head(self.dropout(features))

    def forward(self, wave: Tensor) -> Tensor:
        """wave ``[B, T]`` -> logits ``[B, num_classes]``."""
        return self.logits_from_features(self.features(wave))
