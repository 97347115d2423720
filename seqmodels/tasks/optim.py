"""Optimiser and schedule shared by the tasks: AdamW with the paper's weight-decay exclusions,
linear warmup, then cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed and a non-decayed group.

    No decay on norms, biases, embeddings-free 1-d parameters, and anything the model flags with
    ``_no_weight_decay`` (A_log, D, the dt bias), as in the Mamba recipe.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if getattr(p, "_no_weight_decay", False) or p.ndim < 2 or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` times
    the peak learning rate at ``total_steps``."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw_warmup_cosine(module, model: nn.Module) -> dict:
    """``configure_optimizers`` of every task: AdamW over :func:`param_groups` of ``model`` and a
    per-step warmup-cosine schedule over the trainer's total steps, from ``module.hparams``
    (``lr``, ``betas``, ``weight_decay``, ``warmup_steps``, ``min_lr_ratio``).

    Not the fused AdamW: Lightning refuses gradient clipping with it under mixed precision.
    """
    hp = module.hparams
    optimizer = torch.optim.AdamW(param_groups(model, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas))
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    scheduler = warmup_cosine(optimizer, hp.warmup_steps, total, hp.min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
