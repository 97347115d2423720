"""Optimiser and schedule shared by the tasks: AdamW with the paper's weight-decay exclusions,
linear warmup, then cosine decay."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn

from seqmodels.models.lm import MambaBackbone


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


def _grad_scaler(module) -> object | None:
    """The trainer's float16 GradScaler, or None (float32, bfloat16)."""
    return getattr(module.trainer.precision_plugin, "scaler", None)


def _whole_parameters(module) -> bool:
    """Whether every rank holds whole parameters and gradients (one device, or DDP), so that
    ``torch.nn.utils`` clipping on this rank's gradients is the clipping of the model's."""
    return isinstance(module.trainer.strategy, (SingleDeviceStrategy, DDPStrategy))


def _check_cuda_graph(module, model: nn.Module) -> None:
    """A backbone with ``cuda_graph`` trains on one device only: say so before the first step."""
    graphed = any(isinstance(m, MambaBackbone) and m.config.cuda_graph for m in model.modules())
    if graphed and module.trainer.world_size > 1:
        raise ValueError(
            f"model.backbone.cuda_graph: CUDA graphs are captured for one device, but the trainer runs "
            f"{module.trainer.world_size} processes; set cuda_graph to false for multi-device training"
        )


def adamw_warmup_cosine(module, model: nn.Module) -> dict:
    """``configure_optimizers`` of every task: AdamW over :func:`param_groups` of ``model`` and a
    per-step warmup-cosine schedule over the trainer's total steps, from ``module.hparams``
    (``lr``, ``betas``, ``weight_decay``, ``warmup_steps``, ``min_lr_ratio``).

    On CUDA, on one device or under DDP, without a float16 GradScaler: the fused AdamW (one
    kernel for every parameter; the multi-tensor one launches several per step, and a
    short-context training step is partly bound by the host launching kernels). Gradient
    clipping then goes through :class:`ClipsFusedAdamW`, which every task mixes in.
    """
    _check_cuda_graph(module, model)
    hp = module.hparams
    groups = param_groups(model, hp.weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = (bool(params) and all(p.is_cuda for p in params) and _grad_scaler(module) is None
             and _whole_parameters(module))
    optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused or None)
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    scheduler = warmup_cosine(optimizer, hp.warmup_steps, total, hp.min_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ClipsFusedAdamW:
    """LightningModule mixin: gradient clipping that also works with the fused AdamW.

    Lightning refuses to clip for any optimizer that "unscales gradients itself" (the fused
    AdamW) under mixed precision, a rule for float16's GradScaler. Without a scaler (bfloat16 or
    float32) the gradients are the true ones and clipping them before the step is right, so it
    is done here with ``torch.nn.utils``, as Lightning's own clipping would (the optimizer is
    fused only where each rank holds whole gradients: one device or DDP); with a scaler the
    optimizer is not fused and Lightning's path runs.
    """

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if not getattr(optimizer, "_step_supports_amp_scaling", False) or _grad_scaler(self) is not None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if not gradient_clip_val:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:  # "norm", Lightning's default
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
