"""The part shared by the next-token tasks (DNA bases, mu-law audio codes): token-weighted
cross-entropy per split and training throughput."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from seqmodels.data.tokenizer import IGNORE_INDEX


class NextTokenTask(L.LightningModule):
    """Cross-entropy of ``self(input_ids)`` [batch, L, vocab] against ``labels`` [batch, L]
    (``IGNORE_INDEX`` positions skipped).

    Logs ``split/loss`` (the token-weighted mean of the epoch), ``train/loss_step`` and
    ``train/tokens_per_s`` (tokens scored per second of wall time on this rank). Subclasses derive
    their own units from :meth:`epoch_loss` at the end of each epoch.
    """

    def __init__(self) -> None:
        super().__init__()
        # one token-weighted mean loss per split (ModuleDict keys must not shadow nn.Module.train)
        self.mean_loss = torch.nn.ModuleDict({f"{split}_loss": MeanMetric() for split in ("train", "val", "test")})
        self._n_tokens = 0
        self._batch_start: float | None = None

    def _shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch["input_ids"])
        labels = batch["labels"]
        n_tokens = (labels != IGNORE_INDEX).sum()
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ) / n_tokens.clamp(min=1)
        metric = self.mean_loss[f"{split}_loss"]
        metric.update(loss.detach(), weight=n_tokens)
        self.log(f"{split}/loss", metric, on_step=False, on_epoch=True, prog_bar=True)
        if split == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, prog_bar=False)
        self._n_tokens = int(n_tokens)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def epoch_loss(self, split: str) -> torch.Tensor:
        """The token-weighted mean loss (nats) of the epoch so far; compute() reduces over ranks."""
        return self.mean_loss[f"{split}_loss"].compute()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._batch_start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # GPU work is asynchronous: wait before reading the clock
        elapsed = time.perf_counter() - self._batch_start
        self.log("train/tokens_per_s", self._n_tokens / max(elapsed, 1e-9), on_step=True, prog_bar=True)
