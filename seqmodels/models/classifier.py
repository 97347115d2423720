"""Sequence classification head on the Mamba backbone (e.g. species from a DNA window).

Shapes: ``B`` batch, ``L`` length, ``D`` d_model, ``K`` classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seqmodels.models.config import MambaConfig
from seqmodels.models.lm import MambaBackbone, MambaLM, init_weights

Pooling = Literal["mean", "last"]
POOLINGS: tuple[str, ...] = ("mean", "last")
PoolNorm = Literal["none", "batch"]
POOL_NORMS: tuple[str, ...] = ("none", "batch")


class MambaClassifier(nn.Module):
    """:class:`MambaBackbone`, pooling over positions, and a linear layer: ids [B, L] -> logits [B, K].

    ``pooling="mean"`` averages the final-normed hidden states over positions; ``"last"`` takes
    the last position, which for a causal model is the only one that has seen the whole window.
    ``pool_norm="batch"`` standardises each pooled feature before the head (batch statistics in
    training, their moving averages in evaluation; no affine parameters). Mean-pooled features
    of long windows differ between windows by a small fraction of their size, which a head trained
    on raw features hardly reads; standardised, it does. Training then needs batches of 2 or more.
    Parameter names under ``backbone.`` match :class:`MambaLM`'s, so a pretrained LM's backbone
    loads with :meth:`load_backbone`.
    """

    def __init__(
        self, config: MambaConfig, num_classes: int, pooling: Pooling = "mean", pool_norm: PoolNorm = "none"
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"MambaClassifier.num_classes must be an int >= 2, got {num_classes!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"MambaClassifier.pooling must be one of {POOLINGS}, got {pooling!r}")
        if pool_norm not in POOL_NORMS:
            raise ValueError(f"MambaClassifier.pool_norm must be one of {POOL_NORMS}, got {pool_norm!r}")
        self.config = config
        self.num_classes = num_classes
        self.pooling = pooling
        self.pool_norm = pool_norm
        self.backbone = MambaBackbone(config)
        init_weights(
            self.backbone,
            config.n_layer,
            initializer_range=config.initializer_range,
            rescale=config.rescale_prenorm_residual,
        )
        self.norm = nn.BatchNorm1d(config.d_model, affine=False, momentum=0.05) if pool_norm == "batch" else None
        self.head = nn.Linear(config.d_model, num_classes)
        nn.init.zeros_(self.head.bias)

    def pool(self, hidden: Tensor) -> Tensor:
        """[B, L, D] -> [B, D]"""
        return hidden.mean(dim=1) if self.pooling == "mean" else hidden[:, -1]

    def forward(self, input_ids: Tensor) -> Tensor:
        """[B, L] int64 -> logits [B, K] in the head's dtype (float32 unless the model was cast).

        Autocast does not reach the head: a mean over 2^20 positions differs between classes by
        less than bfloat16's resolution (8 significant bits), which autocast's cast would erase.
        """
        if self.norm is not None and self.training and input_ids.shape[0] < 2:
            raise ValueError(
                f"MambaClassifier with pool_norm='batch' trains on batch statistics: a training batch "
                f"needs at least 2 windows, got {input_ids.shape[0]}"
            )
        pooled = self.pool(self.backbone(input_ids))
        with torch.autocast(pooled.device.type, enabled=False):
            pooled = pooled.to(self.head.weight.dtype)
            if self.norm is not None:
                pooled = self.norm(pooled)
            return self.head(pooled)

    def load_backbone(self, source: MambaLM | dict[str, Tensor]) -> None:
        """Copy the backbone weights of a pretrained :class:`MambaLM` (or its ``state_dict()``).

        The shapes must agree; the LM head is ignored.
        """
        state = source.state_dict() if isinstance(source, nn.Module) else source
        prefix = "backbone."
        backbone_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not backbone_state:
            raise ValueError("MambaClassifier.load_backbone: source holds no 'backbone.*' parameters")
        try:
            self.backbone.load_state_dict(backbone_state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"MambaClassifier.load_backbone: source does not fit this backbone: {err}") from err
