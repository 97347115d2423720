"""Training throughput logged by the sequence tasks."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class TokenThroughput(L.LightningModule):
    """Logs ``train/tokens_per_s``: the tokens the training step scored (``self._n_tokens``, set
    by the subclass's step) over the wall time of the batch on this rank."""

    _n_tokens: int = 0
    _batch_start: float | None = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._batch_start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # GPU work is asynchronous: wait before reading the clock
        elapsed = time.perf_counter() - self._batch_start
        self.log("train/tokens_per_s", self._n_tokens / max(elapsed, 1e-9), on_step=True, prog_bar=True)
