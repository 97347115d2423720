"""Autoregressive waveform modelling (SC09, YouTubeMix) with the Mamba U-Net, and a callback
that writes sample clips while training."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from seqmodels.data.audio import SAMPLE_RATE
from seqmodels.models import MambaUNet, MambaUNetConfig
from seqmodels.tasks.optim import adamw_warmup_cosine
from seqmodels.tasks.next_token import NextTokenTask
from seqmodels.tasks.writers import run_dir

CHECKPOINT_KIND = "waveform_lm"


def build_unet_config(preset: str | None, unet: dict[str, Any] | None) -> MambaUNetConfig:
    """A preset by name with optional field overrides, or a config from fields alone."""
    overrides = dict(unet or {})
    if preset is not None:
        return MambaUNetConfig.from_name(preset, **overrides)
    if not overrides:
        raise ValueError("model: give a `preset` (e.g. 'sc09-6.1m') or `unet` fields (d_model, n_layers, ...)")
    return MambaUNetConfig(**overrides)


class WaveformLM(NextTokenTask):
    """Cross-entropy over the next mu-law code (256 classes) at every labelled sample.

    Logs, per split, ``loss`` (nats) and ``bits_per_sample`` (the NLL the SaShiMi / Mamba
    papers report); in training also ``loss_step`` and ``tokens_per_s`` (labelled samples per
    second of wall time on this rank).

    Args:
        preset: a named U-Net ("sc09-6.1m", "sc09-24.3m", "youtubemix-3.5m"), or None to build
            from ``unet``.
        unet: MambaUNetConfig fields, overriding the preset (e.g. ``{scan_impl: torch}``).
        mu_law: the quantiser of the training data; stored in checkpoints so generation decodes
            (and encodes prefixes) the same way. Checked against the datamodule's at setup.
        lr: peak learning rate of AdamW (2e-3 in the paper).
        weight_decay: AdamW weight decay (0.1 in the paper; not on norms, biases, A, D, dt bias).
        betas: AdamW betas (PyTorch's defaults, as in the SaShiMi recipe).
        warmup_steps: linear warmup steps before cosine decay.
        min_lr_ratio: the final learning rate as a fraction of ``lr``.
    """

    def __init__(
        self,
        preset: str | None = None,
        unet: dict[str, Any] | None = None,
        mu_law: Literal["torchaudio", "sashimi"] = "sashimi",
        lr: float = 2e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1000,
        min_lr_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if mu_law not in ("torchaudio", "sashimi"):
            raise ValueError(f"model.mu_law must be 'torchaudio' or 'sashimi', got {mu_law!r}")
        self.save_hyperparameters()
        self.config = build_unet_config(preset, unet)
        self.model = MambaUNet(self.config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> logits [B, L, 256]."""
        return self.model(input_ids)

    def setup(self, stage: str) -> None:
        # Generation decodes with the checkpoint's variant: it must be the data's.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_mu_law = getattr(datamodule, "mu_law", None)
        if data_mu_law is not None and data_mu_law != self.hparams.mu_law:
            raise ValueError(
                f"model.mu_law is {self.hparams.mu_law!r} but data.mu_law is {data_mu_law!r}; set them equal"
            )

    def _log_bits(self, split: str) -> None:
        # Bits per sample from the epoch's sample-weighted mean loss (nats).
        loss = self.epoch_loss(split)
        self.log(f"{split}/bits_per_sample", loss / math.log(2))

    def on_train_epoch_end(self) -> None:
        self._log_bits("train")

    def on_validation_epoch_end(self) -> None:
        self._log_bits("val")

    def on_test_epoch_end(self) -> None:
        self._log_bits("test")

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Enough to rebuild the plain nn.Module and decode its samples without Lightning.
        checkpoint["seqmodels"] = {
            "kind": CHECKPOINT_KIND,
            "config": self.config.to_dict(),
            "mu_law": self.hparams.mu_law,
        }


class AudioSampleLogger(Callback):
    """Every ``every_n_steps`` optimizer steps, sample ``num_samples`` clips of ``seconds`` from
    the model being trained and write them, with a spectrogram grid, to
    ``<run folder>/samples/step_<N>/`` (``sample_000.wav`` ..., ``spectrograms.png``).

    Sampling runs the U-Net's recurrent ``step`` (one sample at a time), so keep ``seconds`` small
    on CPU.
    """

    def __init__(self, every_n_steps: int = 5000, num_samples: int = 4, seconds: float = 1.0, seed: int = 0) -> None:
        if every_n_steps < 1:
            raise ValueError(f"AudioSampleLogger.every_n_steps must be positive, got {every_n_steps}")
        if num_samples < 1:
            raise ValueError(f"AudioSampleLogger.num_samples must be positive, got {num_samples}")
        if not seconds > 0:
            raise ValueError(f"AudioSampleLogger.seconds must be positive, got {seconds}")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.seconds = seconds
        self.seed = seed

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps:
            return
        from seqmodels.generate import generate_codes, write_clips

        model = pl_module.model
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        try:
            codes = generate_codes(
                model, self.num_samples, round(self.seconds * SAMPLE_RATE), generator=generator, progress=False
            )
        finally:
            model.train(was_training)
        write_clips(codes, pl_module.hparams.mu_law, run_dir(trainer, None, trainer.default_root_dir) / "samples" / f"step_{step:07d}")
