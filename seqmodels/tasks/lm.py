"""Next-base (causal) language modelling on DNA."""

from __future__ import annotations

import math
from typing import Any

import torch

from seqmodels.data.tokenizer import IGNORE_INDEX, PAD_ID
from seqmodels.models import MambaConfig, MambaLM
from seqmodels.tasks.optim import adamw_warmup_cosine
from seqmodels.tasks.next_token import NextTokenTask

CHECKPOINT_KIND = "dna_lm"


def build_config(preset: str | None, backbone: dict[str, Any] | None) -> MambaConfig:
    """A preset by name with optional field overrides, or a config from fields alone."""
    overrides = dict(backbone or {})
    if preset is not None:
        return MambaConfig.from_name(preset, **overrides)
    if not overrides:
        raise ValueError("model: give a `preset` (e.g. '1.4m') or `backbone` fields (d_model, n_layer, ...)")
    return MambaConfig(**overrides)


class NextBaseLM(NextTokenTask):
    """Cross-entropy over the next base at every non-PAD position.

    Logs, per split, ``loss``, ``ppl`` and ``bits_per_base``; in training also ``tokens_per_s``
    (non-PAD tokens per second of wall time on this rank) and the learning rate.

    Args:
        preset: a named backbone size ("1.4m", "7m", "40.7m"), or None to build from ``backbone``.
        backbone: MambaConfig fields, overriding the preset (e.g. ``{scan_impl: torch, checkpointing: true}``).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to norms, biases, A_log, D, dt bias).
        betas: AdamW betas.
        warmup_steps: linear warmup steps before cosine decay.
        min_lr_ratio: the final learning rate as a fraction of ``lr``.
    """

    def __init__(
        self,
        preset: str | None = None,
        backbone: dict[str, Any] | None = None,
        lr: float = 8e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = build_config(preset, backbone)
        self.model = MambaLM(self.config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [batch, L] -> logits [batch, L, padded_vocab]."""
        return self.model(input_ids)

    def _log_derived(self, split: str) -> None:
        # perplexity and bits per base follow from the token-weighted mean loss of the epoch;
        # compute() already reduces over ranks, so every rank logs the same value
        loss = self.epoch_loss(split)
        self.log(f"{split}/ppl", torch.exp(loss), sync_dist=True)
        self.log(f"{split}/bits_per_base", loss / math.log(2), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_derived("val")

    def on_test_epoch_end(self) -> None:
        self._log_derived("test")

    def on_train_epoch_end(self) -> None:
        self._log_derived("train")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Per-base log-likelihood of the observed next base and mean-pooled embeddings."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        hidden = self.model.hidden_states(input_ids)  # [batch, L, d_model]
        logits = self.model.lm_head(hidden).float()  # [batch, L, vocab]
        logp = torch.log_softmax(logits, dim=-1)
        valid = labels != IGNORE_INDEX
        loglik = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        loglik = torch.where(valid, loglik, torch.full_like(loglik, float("nan")))
        mask = (input_ids != PAD_ID).unsqueeze(-1).to(hidden.dtype)
        embedding = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        out = {"loglik": loglik.cpu(), "embedding": embedding.float().cpu()}
        for key in ("chrom", "start", "end"):
            if key in batch:
                out[key] = batch[key]
        return out

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Enough to rebuild the plain nn.Module without Lightning (seqmodels.load_checkpoint).
        checkpoint["seqmodels"] = {"kind": CHECKPOINT_KIND, "config": self.config.to_dict()}
