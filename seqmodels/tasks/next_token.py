"""The part shared by the next-token tasks (DNA bases, mu-law audio codes): token-weighted
cross-entropy per split and training throughput."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from seqmodels.data.tokenizer import IGNORE_INDEX
from seqmodels.tasks.optim import ClipsFusedAdamW


class TokenWeightedMean(Metric):
    """``sum(value * weight) / sum(weight)`` over the updates, summed over ranks at ``compute``
    (weights: tokens scored in the next-token tasks, windows or clips in the classifiers).

    Unlike torchmetrics' ``MeanMetric`` it never reads a value back to the host on ``update``
    (its NaN check does, which makes every training step wait for the GPU); a NaN loss is not
    dropped but shows in the result."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        self.total += (value.double() * weight).sum()
        self.weight += torch.as_tensor(weight, dtype=torch.float64, device=self.weight.device).sum()

    def compute(self) -> torch.Tensor:
        return (self.total / self.weight).float()


class NextTokenTask(ClipsFusedAdamW, L.LightningModule):
    """Cross-entropy of ``self(input_ids)`` [batch, L, vocab] against ``labels`` [batch, L]
    (``IGNORE_INDEX`` positions skipped).

    Logs ``split/loss`` (the token-weighted mean of the epoch), ``train/loss_step`` and
    ``train/tokens_per_s`` (tokens scored per second of wall time on this rank). Subclasses derive
    their own units from :meth:`epoch_loss` at the end of each epoch.

    Throughput is measured over windows of ``trainer.log_every_n_steps`` batches (and the
    epoch's last batch), the only moments it waits for the GPU: a wait after every batch would
    stop the host from launching the next batch while the GPU finishes this one, which at short
    contexts costs several percent of the step. Each batch logs the last window's value, as a
    host tensor, so that the progress bar does not wait for the GPU either.
    """

    def __init__(self) -> None:
        super().__init__()
        # one token-weighted mean loss per split (ModuleDict keys must not shadow nn.Module.train)
        self.mean_loss = torch.nn.ModuleDict({f"{split}_loss": TokenWeightedMean() for split in ("train", "val", "test")})
        self._window: tuple[float, torch.Tensor | int, int] | None = None  # (start, tokens, batches)
        self._tokens_per_s: float | None = None

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
            if self._window is not None:  # counted on the device: no wait here
                start, tokens, batches = self._window
                self._window = (start, tokens + n_tokens, batches)
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

    def on_train_epoch_start(self) -> None:
        self._window = None  # validation time between epochs is not training time

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._window is None:
            self._window = (time.perf_counter(), 0, 0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._window is None:
            return
        start, tokens, batches = self._window
        self._window = (start, tokens, batches + 1)
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if batches + 1 >= max(1, self.trainer.log_every_n_steps) or last:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # GPU work is asynchronous: wait before reading the clock
            self._tokens_per_s = int(tokens) / max(time.perf_counter() - start, 1e-9)
            self._window = None
        if self._tokens_per_s is not None:
            # A host tensor: Lightning would put a float on the GPU, and reading it back for the
            # progress bar would wait for the GPU after every batch.
            self.log("train/tokens_per_s", torch.tensor(self._tokens_per_s), on_step=True, prog_bar=True)
