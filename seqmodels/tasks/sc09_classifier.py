"""The SC09 digit classifier that scores generated audio (FID, IS, mIS, AM).

Training is plain cross-entropy on the real SC09 training split. What makes the checkpoint a
scorer is its ``seqmodels`` section, written at *every* checkpoint save::

    checkpoint["seqmodels"] = {
        "kind": "sc09_classifier",
        "config": DigitClassifierConfig.to_dict(),
        "train_feature_mean": float64 [F],      # penultimate features of the training clips
        "train_feature_cov": float64 [F, F],    # their unbiased covariance (as np.cov)
        "train_label_prior": float64 [K],       # digit frequencies of the training split
        "train_prob_prior": float64 [K],        # mean classifier probabilities (SaShiMi's AM prior)
        "train_clips": int,
        "data_root": str | None,                # absolute SC09 root the statistics came from
    }

The statistics are computed in :meth:`SC09Classifier.on_save_checkpoint` with one pass over the
training split in eval mode, so each checkpoint file (best, last, periodic) holds statistics of
exactly its own weights; saves at the same step share one pass. :func:`finalize` recomputes them
for an existing checkpoint (another training root, or a file written without them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from seqmodels.models import DigitClassifier, DigitClassifierConfig
from seqmodels.tasks.next_token import TokenWeightedMean
from seqmodels.tasks.optim import ClipsFusedAdamW, adamw_warmup_cosine

CHECKPOINT_KIND = "sc09_classifier"
STAT_KEYS = ("train_feature_mean", "train_feature_cov", "train_label_prior", "train_prob_prior", "train_clips")
_SPLITS = ("train", "val", "test")


@torch.no_grad()
def training_statistics(
    model: DigitClassifier, batches: Iterable[dict[str, Tensor]], device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Feature mean ``[F]`` / covariance ``[F, F]``, label prior ``[K]`` and mean probabilities
    ``[K]`` of the clips in ``batches`` (dicts ``{"waveform": [B, T], "labels": [B]}``), in eval mode.

    Accumulates sums in float64 in one pass (no ``[n, F]`` matrix is kept), so the full SC09
    training split costs one forward pass. The model's train/eval mode is restored afterwards.

    Returns:
        ``{name: float64 tensor}`` for the names in :data:`STAT_KEYS` (``train_clips``: int).
    """
    was_training = model.training
    model.eval()
    n = 0
    feat_sum = feat_outer = label_counts = prob_sum = None
    try:
        for batch in batches:
            wave = batch["waveform"].to(device)
            labels = batch["labels"].to(device)
            feats = model.features(wave)  # [B, F]
            probs = torch.softmax(model.logits_from_features(feats).float(), dim=-1)  # [B, K]
            f64 = feats.double()
            if feat_sum is None:
                feat_sum = torch.zeros(f64.shape[1], dtype=torch.float64, device=device)
                feat_outer = torch.zeros(f64.shape[1], f64.shape[1], dtype=torch.float64, device=device)
                label_counts = torch.zeros(probs.shape[1], dtype=torch.float64, device=device)
                prob_sum = torch.zeros(probs.shape[1], dtype=torch.float64, device=device)
            n += f64.shape[0]
            feat_sum += f64.sum(0)
            feat_outer += f64.T @ f64
            label_counts += torch.bincount(labels, minlength=probs.shape[1]).double()
            prob_sum += probs.double().sum(0)
    finally:
        model.train(was_training)
    if n < 2:
        raise ValueError(f"training statistics need at least 2 training clips, got {n}")
    mean = feat_sum / n
    cov = (feat_outer - n * torch.outer(mean, mean)) / (n - 1)
    cov = 0.5 * (cov + cov.T)  # exact symmetry; round-off leaves the two triangles unequal
    return {
        "train_feature_mean": mean.cpu(),
        "train_feature_cov": cov.cpu(),
        "train_label_prior": (label_counts / n).cpu(),
        "train_prob_prior": (prob_sum / n).cpu(),
        "train_clips": n,
    }


class SC09Classifier(ClipsFusedAdamW, L.LightningModule):
    """Cross-entropy digit classification of one-second clips (the SC09 scorer).

    Logs ``{train,val,test}/loss`` and ``{train,val,test}/acc`` per epoch and
    ``train/loss_step``. Batches: ``{"waveform": [B, 16000] float32, "labels": [B] int64}``
    (``SC09DataModule(view="classification")``).

    Args:
        network: :class:`DigitClassifierConfig` fields overriding the defaults
            (e.g. ``{channels: [16, 32, 64], feature_dim: 128}``).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not on norms and biases).
        betas: AdamW betas.
        warmup_steps: linear warmup before cosine decay.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        network: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = DigitClassifierConfig(**(network or {}))
        self.model = DigitClassifier(self.config)
        # ModuleDict keys must not shadow nn.Module.train, hence the suffixes.
        self.mean_loss = torch.nn.ModuleDict({f"{s}_loss": TokenWeightedMean() for s in _SPLITS})
        self.accuracy = torch.nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(self.config.num_classes, average="micro") for s in _SPLITS}
        )
        self._stats_cache: tuple[tuple[int, int], dict[str, Any]] | None = None

    def forward(self, wave: Tensor) -> Tensor:
        """wave ``[B, 16000]`` -> logits ``[B, 10]``."""
        return self.model(wave)

    def _shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        logits = self(batch["waveform"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)
        loss_metric, acc_metric = self.mean_loss[f"{split}_loss"], self.accuracy[f"{split}_acc"]
        loss_metric.update(loss.detach(), weight=labels.numel())
        acc_metric.update(logits.detach(), labels)
        self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{split}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)
        if split == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, prog_bar=False)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.model)

    def _train_loader(self) -> DataLoader:
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            # A fresh loader: no distributed sampler, so every rank sees the whole split and
            # writes identical statistics.
            return datamodule.train_dataloader()
        if trainer.train_dataloader is not None:
            return trainer.train_dataloader
        raise RuntimeError(
            "SC09Classifier: saving a checkpoint needs the training data (for the FID statistics); "
            "fit with a datamodule or train_dataloaders, or add them later with "
            "seqmodels.tasks.sc09_classifier.finalize(ckpt_path, datamodule)"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # best.ckpt and last.ckpt are written at the same step with the same weights: one pass.
        key = (self.trainer.global_step, self.trainer.current_epoch)
        if self._stats_cache is None or self._stats_cache[0] != key:
            self._stats_cache = (key, training_statistics(self.model, self._train_loader(), self.device))
        datamodule = getattr(self.trainer, "datamodule", None)
        root = getattr(datamodule, "root", None)
        checkpoint["seqmodels"] = {
            "kind": CHECKPOINT_KIND,
            "config": self.config.to_dict(),
            **self._stats_cache[1],
            # Absolute, so that evaluate-sc09 finds the test split from any working directory.
            "data_root": None if root is None else str(Path(root).resolve()),
        }


def finalize(
    ckpt_path: str | os.PathLike, datamodule: L.LightningDataModule | str | os.PathLike, device: str = "cpu"
) -> dict[str, Any]:
    """(Re)compute the training statistics of an sc09_classifier checkpoint and write them into it.

    Args:
        ckpt_path: checkpoint written by :class:`SC09Classifier`; rewritten in place (atomically).
        datamodule: an ``SC09DataModule(view="classification")`` or an SC09 root directory.
        device: where the forward pass runs.

    Returns:
        The new ``seqmodels`` section.
    """
    from seqmodels.checkpoint import load_checkpoint, read_checkpoint
    from seqmodels.data.audio_datamodules import SC09DataModule

    ckpt_path = Path(ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    if ckpt["seqmodels"].get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{ckpt_path}: not an sc09_classifier checkpoint (kind {ckpt['seqmodels'].get('kind')!r})")
    if not isinstance(datamodule, L.LightningDataModule):
        datamodule = SC09DataModule(str(datamodule), view="classification", batch_size=64)
    if getattr(datamodule, "view", "classification") != "classification":
        raise ValueError(f"finalize: the datamodule must use view='classification', got {datamodule.view!r}")
    model, _ = load_checkpoint(ckpt_path, map_location=device)
    datamodule.setup("fit")
    stats = training_statistics(model, datamodule.train_dataloader(), device)
    root = getattr(datamodule, "root", None)
    ckpt["seqmodels"] = {**ckpt["seqmodels"], **stats, "data_root": None if root is None else str(Path(root).resolve())}
    fd, tmp = tempfile.mkstemp(dir=ckpt_path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, ckpt_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ckpt["seqmodels"]
