"""Mamba backbone (embedding, residual blocks, final norm) and the language model on top of it.

Shapes: ``B`` batch, ``L`` length, ``D`` d_model, ``V`` padded vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqmodels.models.checkpointing import checkpoint_block
from seqmodels.models.config import MambaConfig
from seqmodels.models.cuda_graph import GraphedFunction
from seqmodels.models.mamba import Mamba, MambaBlock, MixerState, RMSNorm

InferenceCache = list[MixerState]
"""One :class:`MixerState` per layer, as returned by ``allocate_inference_cache``."""


def init_weights(module: nn.Module, n_layer: int, initializer_range: float = 0.02, rescale: bool = True) -> None:
    """Whole-model initialisation after the modules' own (that of mamba_ssm's language model).

    Embeddings ~ N(0, initializer_range); biases of linear layers zeroed unless flagged
    ``_no_reinit`` (the dt bias); with ``rescale``, every mixer's ``out_proj.weight`` is divided
    by sqrt(n_layer), GPT-2's scaling for a residual stream that sums n_layer updates.
    """
    if not isinstance(n_layer, int) or n_layer <= 0:
        raise ValueError(f"init_weights: n_layer must be a positive int, got {n_layer!r}")
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Embedding):
                nn.init.normal_(sub.weight, std=initializer_range)
            elif isinstance(sub, nn.Linear) and sub.bias is not None and not getattr(sub.bias, "_no_reinit", False):
                nn.init.zeros_(sub.bias)
            if rescale and isinstance(sub, Mamba):
                # Redraw with the default Linear init first so calling this twice does not
                # shrink the weights twice.
                nn.init.kaiming_uniform_(sub.out_proj.weight, a=math.sqrt(5))
                sub.out_proj.weight.div_(math.sqrt(n_layer))


def _check_input_ids(owner: str, input_ids: Tensor, dims: int) -> None:
    if input_ids.dim() != dims:
        shape = "[batch, length]" if dims == 2 else "[batch]"
        raise ValueError(f"{owner}: input_ids must be {shape}, got shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{owner}: input_ids must be int64 (or int32), got {input_ids.dtype}")


class MambaBackbone(nn.Module):
    """Embedding, ``n_layer`` :class:`MambaBlock`\\ s and a final RMSNorm: ids [B, L] -> hidden [B, L, D]."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        if not isinstance(config, MambaConfig):
            raise ValueError(f"MambaBackbone: config must be a MambaConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(MambaBlock(config.d_model, **config.mixer_kwargs()) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self._graphed: GraphedFunction | None = None  # config.cuda_graph: built at the first training call

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_graphed"] = None  # CUDA graphs are not copied or pickled; a copy captures its own
        return state

    def forward(self, input_ids: Tensor) -> Tensor:
        """[B, L] int64 -> [B, L, D] (final-normed, in the norm weight's dtype)."""
        _check_input_ids("MambaBackbone.forward", input_ids, 2)
        x = self.embedding(input_ids)
        if self.config.residual_in_fp32:
            x = x.float()
        if self.config.checkpointing and self.training and torch.is_grad_enabled():
            for layer in self.layers:
                if self.config.checkpoint_dtype == "bfloat16":
                    x = x.to(torch.bfloat16)  # what the checkpoint keeps; the block upcasts it
                x = checkpoint_block(layer, x, keep_scan_states=self.config.checkpoint_scan_states)
            return self.norm_f(x)
        if self.config.cuda_graph and self.training and torch.is_grad_enabled() and x.is_cuda:
            if self._graphed is None:
                self._graphed = GraphedFunction(self, "_blocks", exclude=("embedding.",))
            return self._graphed(x)
        return self._blocks(x)

    def _blocks(self, x: Tensor) -> Tensor:
        """The blocks and the final norm: embedded [B, L, D] -> final-normed [B, L, D].

        Each block's residual add is fused into the next norm (MambaBlock.forward_pair): the
        stream s = residual + hidden is written once per block, and its gradient once."""
        hidden, residual = x, None
        for layer in self.layers:
            hidden, residual = layer.forward_pair(hidden, residual)
        return self.norm_f.add(hidden, residual, sum_dtype=self.layers[-1].sum_dtype(hidden, residual))[0]

    def allocate_inference_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> InferenceCache:
        """Zero recurrent state of every layer (see :meth:`Mamba.allocate_inference_cache`)."""
        return [layer.allocate_inference_cache(batch_size, dtype=dtype, device=device) for layer in self.layers]

    def step(self, input_ids: Tensor, cache: InferenceCache) -> Tensor:
        """One position: ids [B] -> hidden [B, D]; advances ``cache`` in place."""
        _check_input_ids("MambaBackbone.step", input_ids, 1)
        if len(cache) != len(self.layers):
            raise ValueError(f"MambaBackbone.step: cache must hold {len(self.layers)} layer states, got {len(cache)}")
        x = self.embedding(input_ids)
        if self.config.residual_in_fp32:
            x = x.float()
        for layer, state in zip(self.layers, cache, strict=True):
            x = layer.step(x, state)
        return self.norm_f(x)


class MambaLM(nn.Module):
    """Causal language model: :class:`MambaBackbone` and a linear head over the padded vocabulary,
    tied to the embedding when ``config.tie_embeddings``. ids [B, L] -> logits [B, L, V]."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = MambaBackbone(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        init_weights(
            self,
            config.n_layer,
            initializer_range=config.initializer_range,
            rescale=config.rescale_prenorm_residual,
        )
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        """[B, L] int64 -> logits [B, L, V]"""
        return self.lm_head(self.backbone(input_ids))

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        """[B, L] int64 -> final-normed hidden states [B, L, D] (for embeddings and pooling)."""
        return self.backbone(input_ids)

    def allocate_inference_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> InferenceCache:
        """Zero state for :meth:`step`: per layer conv [B, E, W] and ssm [B, E, N]."""
        return self.backbone.allocate_inference_cache(batch_size, dtype=dtype, device=device)

    def step(self, input_ids: Tensor, cache: InferenceCache) -> Tensor:
        """One position: ids [B] -> logits [B, V]; advances ``cache`` in place."""
        return self.lm_head(self.backbone.step(input_ids, cache))
