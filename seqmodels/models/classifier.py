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


class MambaClassifier(nn.Module):
    """:class:`MambaBackbone`, pooling over positions, and a linear layer: ids [B, L] -> logits [B, K].

    ``pooling="mean"`` averages the final-normed hidden states over positions; ``"last"`` takes
    the last position, which for a causal model is the only one that has seen the whole window.
    Parameter names under ``backbone.`` match :class:`MambaLM`'s, so a pretrained LM's backbone
    loads with :meth:`load_backbone`.
    """

    def __init__(self, config: MambaConfig, num_classes: int, pooling: Pooling = "mean") -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"MambaClassifier.num_classes must be an int >= 2, got {num_classes!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"MambaClassifier.pooling must be one of {POOLINGS}, got {pooling!r}")
        self.config = config
        self.num_classes = num_classes
        self.pooling = pooling
        self.backbone = MambaBackbone(config)
        init_weights(
            self.backbone,
            config.n_layer,
            initializer_range=config.initializer_range,
            rescale=config.rescale_prenorm_residual,
        )
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
        pooled = self.pool(self.backbone(input_ids))
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head(pooled.to(self.head.weight.dtype))

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
