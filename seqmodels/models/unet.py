"""Mamba U-Net over raw waveforms (SaShiMi's multi-rate layout with Mamba blocks; Gu & Dao 2023,
section 4.4; Goel et al. 2022).

Shapes: ``B`` batch, ``L`` length in samples, ``D_i`` the width of stage ``i``
(``D_0 = d_model``, ``D_{i+1} = stage_expand * D_i``), ``p_i`` the pooling factor below stage
``i + 1``, ``V = 256`` mu-law codes.

Layout with ``pool = (4, 4)``::

    codes [B, L] -> embedding -> down 0 (n_down blocks, D_0, rate 1)   --skip 0--+
                  -> DownPool -> down 1 (n_down blocks, D_1, rate 1/4) --skip 1-+ |
                  -> DownPool -> centre (n_layers blocks, D_2, rate 1/16)       | |
                  -> UpPool (+ skip 1) -> up 1 (n_layers blocks, D_1)  <--------+ |
                  -> UpPool (+ skip 0) -> up 0 (n_layers blocks, D_0)  <----------+
                  -> RMSNorm -> linear head -> logits [B, L, V]

Causality: a DownPool step sees ``p`` consecutive fine steps, the last of which may lie in the
future of some of the fine positions it is later spread back to. UpPool therefore shifts its
output one coarse step to the right (the first ``p`` fine outputs are zero): fine output ``t``
in block ``k = t // p`` only receives coarse step ``k - 1``, built from fine steps
``<= p k - 1 < t``. Inputs are the previous sample (start code first), so logits at ``t``
depend on codes before ``t`` only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from seqmodels.kernels import MambaStageWeights, mamba_stage_step
from seqmodels.models.config import ScanImpl, block_kwargs, check_mixer_args
from seqmodels.models.lm import init_weights
from seqmodels.models.mamba import MambaBlock, MixerState, RMSNorm, pack_stage_weights

# Paper sizes (Mamba, section 4.4 / appendix E.4): 8 blocks per group at d_model 64 (6.1M) and
# 15 blocks per group at d_model 96 (24.3M) on SC09; a complex-SSM model of about 3.5M on
# YouTubeMix, which the same five-group layout gives with 4 blocks per group (exact counts in
# docs and tests/audio_model/test_unet.py).
_PRESETS: dict[str, dict[str, Any]] = {
    "sc09-6.1m": {"d_model": 64, "n_layers": 8, "pool": (4, 4), "complex": False},
    "sc09-24.3m": {"d_model": 96, "n_layers": 15, "pool": (4, 4), "complex": False},
    "youtubemix-3.5m": {"d_model": 64, "n_layers": 4, "pool": (4, 4), "complex": True},
}


@dataclass
class MambaUNetConfig:
    """Shape of a :class:`MambaUNet`; presets by name, ``to_dict`` / ``from_dict`` for checkpoints.

    ``n_layers`` blocks sit in the centre and in every up stage, ``n_down_layers`` (default
    ``n_layers``) in every down stage. ``stage_expand`` multiplies the width at each DownPool
    (SaShiMi's ``expand``; the mixer's own ``expand`` is separate). ``dt_rank="auto"`` is
    resolved per stage (ceil(D_i / 16)). Derived: ``widths`` (D_i per stage, fine to coarse)
    and ``total_pool`` (the product of ``pool``: sequence lengths must divide by it).
    """

    d_model: int = 64
    n_layers: int = 8
    n_down_layers: int | None = None
    pool: tuple[int, ...] = (4, 4)
    stage_expand: int = 2
    vocab_size: int = 256
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | Literal["auto"] = "auto"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    complex: bool = False
    scan_impl: ScanImpl = "auto"
    checkpointing: bool = False
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    name: str | None = None

    widths: tuple[int, ...] = field(init=False, repr=False)
    total_pool: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("n_layers", "stage_expand", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MambaUNetConfig.{name} must be a positive int, got {value!r}")
        if self.n_down_layers is None:
            self.n_down_layers = self.n_layers
        if not isinstance(self.n_down_layers, int) or isinstance(self.n_down_layers, bool) or self.n_down_layers < 0:
            raise ValueError(f"MambaUNetConfig.n_down_layers must be an int >= 0 or None, got {self.n_down_layers!r}")
        # YAML and JSON give lists; the config keeps a tuple so it hashes and compares cleanly.
        if not isinstance(self.pool, (list, tuple)) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 2 for p in self.pool
        ):
            raise ValueError(f"MambaUNetConfig.pool must be a list of ints >= 2, got {self.pool!r}")
        self.pool = tuple(self.pool)
        check_mixer_args(
            "MambaUNetConfig",
            d_model=self.d_model,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            dt_rank=self.dt_rank,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            dt_init_floor=self.dt_init_floor,
            complex=self.complex,
            scan_impl=self.scan_impl,
        )
        for name in ("checkpointing", "residual_in_fp32", "rescale_prenorm_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaUNetConfig.{name} must be a bool, got {getattr(self, name)!r}")
        self.widths = tuple(self.d_model * self.stage_expand**i for i in range(len(self.pool) + 1))
        self.total_pool = math.prod(self.pool)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> MambaUNetConfig:
        """A preset ("sc09-6.1m", "sc09-24.3m", "youtubemix-3.5m") with field overrides."""
        key = name.lower() if isinstance(name, str) else name
        if key not in _PRESETS:
            raise ValueError(f"MambaUNetConfig.from_name: name must be one of {sorted(_PRESETS)}, got {name!r}")
        return cls.from_dict({**_PRESETS[key], "name": key, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Constructor arguments as plain data (``pool`` as a list); derived fields left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["pool"] = list(self.pool)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MambaUNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"MambaUNetConfig.from_dict: data must be a dict, got {type(data).__name__}")
        init_names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - init_names)
        if unknown:
            raise ValueError(f"MambaUNetConfig: unknown field(s) {unknown}")
        return cls(**data)

    def block_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`MambaBlock` besides d_model."""
        return block_kwargs(self)


class DownPool(nn.Module):
    """``p`` consecutive steps stacked and mapped linearly: [B, L, D] -> [B, L / p, D * expand]."""

    def __init__(self, d_input: int, pool: int, expand: int) -> None:
        super().__init__()
        self.pool = pool
        self.d_output = d_input * expand
        self.linear = nn.Linear(d_input * pool, self.d_output)

    def forward(self, x: Tensor) -> Tensor:
        """[B, L, D] -> [B, L / p, D * expand]"""
        return self.linear(rearrange(x, "b (l p) d -> b l (p d)", p=self.pool))

    def step(self, x: Tensor, buffer: Tensor, phase: int) -> Tensor | None:
        """Collect one step ``x [B, D]`` into ``buffer [B, p, D]`` at ``phase``; when the group
        is complete (``phase == p - 1``) return the coarse step [B, D * expand], else None."""
        buffer[:, phase] = x.to(buffer.dtype)
        if phase < self.pool - 1:
            return None
        return self.linear(rearrange(buffer, "b p d -> b (p d)"))


class UpPool(nn.Module):
    """Linear map to ``p`` fine steps, shifted one coarse step right for causality:
    [B, L / p, D] -> [B, L, D / expand]."""

    def __init__(self, d_input: int, pool: int, expand: int) -> None:
        super().__init__()
        if d_input % expand:
            raise ValueError(f"UpPool: d_input {d_input} must divide by expand {expand}")
        self.pool = pool
        self.d_output = d_input // expand
        self.linear = nn.Linear(d_input, self.d_output * pool)

    def forward(self, x: Tensor) -> Tensor:
        """[B, L / p, D] -> [B, L, D / expand]"""
        y = self.linear(x)  # [B, L / p, p * D']
        # Coarse step k is spread over fine steps p(k+1) .. p(k+1) + p - 1; the first block is zero.
        y = nn.functional.pad(y[:, :-1], (0, 0, 1, 0))
        return rearrange(y, "b l (p d) -> b (l p) d", p=self.pool)

    def step(self, x: Tensor | None, buffer: Tensor, phase: int) -> Tensor:
        """Emit the fine step at ``phase`` from ``buffer [B, p, D']``; at the last phase, refill
        the buffer from the coarse step ``x [B, D]`` (which must then be given)."""
        y = buffer[:, phase].clone()
        if phase == self.pool - 1:
            if x is None:
                raise ValueError("UpPool.step: the coarse input is required at the last phase")
            buffer.copy_(rearrange(self.linear(x), "b (p d) -> b p d", p=self.pool).to(buffer.dtype))
        return y


@dataclass
class UNetInferenceCache:
    """Recurrent state of :meth:`MambaUNet.step`, advanced in place.

    down: per down stage, one :class:`MixerState` per block. centre: per centre block. up: per
    up stage (index = stage, fine to coarse), one per block. down_buffers[i]: [B, p_i, D_i]
    the fine steps collected for the next DownPool output. up_buffers[i]: [B, p_i, D_i] the
    fine steps UpPool still has to emit (zeros at first: the causal shift). down_stacks,
    centre_stack, up_stacks: the same mixer states stacked per stage (conv [n, B, E, W], ssm
    [n, B, E, N]), which the fused stage step advances; the per-block states are views of them.
    t: samples consumed so far.
    """

    down: list[list[MixerState]]
    centre: list[MixerState]
    up: list[list[MixerState]]
    down_buffers: list[Tensor]
    up_buffers: list[Tensor]
    down_stacks: list[MixerState]
    centre_stack: MixerState
    up_stacks: list[MixerState]
    t: int = 0

    def zero_(self) -> UNetInferenceCache:
        """Back to the start (zero states and buffers, ``t = 0``) without reallocating, so that
        tensors a CUDA graph captured stay valid."""
        for stack in (*self.down_stacks, self.centre_stack, *self.up_stacks):
            stack.conv.zero_()
            stack.ssm.zero_()
        for buffer in (*self.down_buffers, *self.up_buffers):
            buffer.zero_()
        self.t = 0
        return self


@dataclass
class UNetStageWeights:
    """The blocks of every stage of a :class:`MambaUNet` packed for the fused stage step (see
    :meth:`MambaUNet.pack_stages`); None for a stage without blocks. ``impl`` is passed to
    :func:`seqmodels.kernels.mamba_stage_step`."""

    down: list[MambaStageWeights | None]
    centre: MambaStageWeights | None
    up: list[MambaStageWeights | None]
    impl: Literal["auto", "triton", "ref"] = "auto"


class MambaUNet(nn.Module):
    """Autoregressive waveform model: mu-law codes [B, L] -> logits [B, L, V] (module docstring).

    ``L`` must divide by ``config.total_pool`` (16 for ``pool = (4, 4)``).
    """

    def __init__(self, config: MambaUNetConfig) -> None:
        super().__init__()
        if not isinstance(config, MambaUNetConfig):
            raise ValueError(f"MambaUNet: config must be a MambaUNetConfig, got {type(config).__name__}")
        self.config = config
        widths, kw = config.widths, config.block_kwargs()

        def blocks(width: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(MambaBlock(width, **kw) for _ in range(n))

        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.down = nn.ModuleList(blocks(widths[i], config.n_down_layers) for i in range(len(config.pool)))
        self.down_pools = nn.ModuleList(
            DownPool(widths[i], p, config.stage_expand) for i, p in enumerate(config.pool)
        )
        self.centre = blocks(widths[-1], config.n_layers)
        # Indexed by the stage they lead back to (fine to coarse), like ``down``.
        self.up_pools = nn.ModuleList(
            UpPool(widths[i + 1], p, config.stage_expand) for i, p in enumerate(config.pool)
        )
        self.up = nn.ModuleList(blocks(widths[i], config.n_layers) for i in range(len(config.pool)))
        self.norm_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        n_blocks = len(config.pool) * (config.n_down_layers + config.n_layers) + config.n_layers
        init_weights(self, n_blocks, config.initializer_range, rescale=config.rescale_prenorm_residual)

    # -- full sequence ------------------------------------------------------------------------

    def _run(self, layers: nn.ModuleList, x: Tensor) -> Tensor:
        use_checkpoint = self.config.checkpointing and self.training and torch.is_grad_enabled()
        for layer in layers:
            x = checkpoint(layer, x, use_reentrant=False) if use_checkpoint else layer(x)
        return x

    def _embed(self, input_ids: Tensor) -> Tensor:
        x = self.embedding(input_ids)
        return x.float() if self.config.residual_in_fp32 else x

    def forward(self, input_ids: Tensor) -> Tensor:
        """[B, L] int64 -> logits [B, L, V]; L must divide by ``config.total_pool``."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"MambaUNet.forward: input_ids must be [batch, length] int64, got {tuple(input_ids.shape)} {input_ids.dtype}"
            )
        if input_ids.shape[1] % self.config.total_pool:
            raise ValueError(
                f"MambaUNet.forward: length {input_ids.shape[1]} must divide by the total pooling "
                f"factor {self.config.total_pool} (pool={list(self.config.pool)})"
            )
        x = self._embed(input_ids)
        skips = []
        for blocks, pool in zip(self.down, self.down_pools, strict=True):
            x = self._run(blocks, x)
            skips.append(x)
            x = pool(x)
        x = self._run(self.centre, x)
        for i in reversed(range(len(self.up))):
            x = self.up_pools[i](x) + skips[i]
            x = self._run(self.up[i], x)
        return self.lm_head(self.norm_f(x))

    # -- one sample at a time -----------------------------------------------------------------

    def allocate_inference_cache(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> UNetInferenceCache:
        """Zero state for :meth:`step`. Mixer states as :meth:`Mamba.allocate_inference_cache`;
        pooling buffers in the residual stream's dtype (float32 with ``residual_in_fp32``)."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"MambaUNet.allocate_inference_cache: batch_size must be a positive int, got {batch_size!r}")
        device = self.lm_head.weight.device if device is None else device
        buf_dtype = torch.float32 if self.config.residual_in_fp32 else (dtype or self.lm_head.weight.dtype)
        config = self.config
        conv_dtype = dtype or self.lm_head.weight.dtype
        ssm_dtype = torch.complex64 if config.complex else torch.float32

        def stack(n: int, width: int) -> tuple[MixerState, list[MixerState]]:
            # One tensor per stage, so that the fused stage step advances all its blocks at once;
            # each block's MixerState is a view into it. The channels E are contiguous in memory
            # (shapes [n, B, E, W] and [n, B, E, N] as transposed views): the stage kernel's tiles
            # run along E.
            e = config.expand * width
            conv = torch.zeros(n, batch_size, config.d_conv, e, device=device, dtype=conv_dtype).transpose(-1, -2)
            ssm = torch.zeros(n, batch_size, config.d_state, e, device=device, dtype=ssm_dtype).transpose(-1, -2)
            return MixerState(conv=conv, ssm=ssm), [MixerState(conv=conv[j], ssm=ssm[j]) for j in range(n)]

        widths, pool = config.widths, config.pool
        down = [stack(config.n_down_layers, widths[i]) for i in range(len(pool))]
        centre = stack(config.n_layers, widths[-1])
        up = [stack(config.n_layers, widths[i]) for i in range(len(pool))]
        return UNetInferenceCache(
            down=[views for _, views in down],
            centre=centre[1],
            up=[views for _, views in up],
            down_buffers=[torch.zeros(batch_size, p, widths[i], device=device, dtype=buf_dtype) for i, p in enumerate(pool)],
            up_buffers=[torch.zeros(batch_size, p, widths[i], device=device, dtype=buf_dtype) for i, p in enumerate(pool)],
            down_stacks=[stacked for stacked, _ in down],
            centre_stack=centre[0],
            up_stacks=[stacked for stacked, _ in up],
        )

    def pack_stages(self, impl: Literal["auto", "triton", "ref"] = "auto") -> UNetStageWeights:
        """Pack every stage's blocks for :meth:`step` with ``stages`` (one fused stage step per
        stage and sample). Needs float32 weights and ``residual_in_fp32`` (ValueError otherwise).
        The packed weights are a copy: pack again after the weights change."""
        if not self.config.residual_in_fp32:
            raise ValueError("MambaUNet.pack_stages: the fused stage step needs residual_in_fp32=True")

        def pack(blocks: nn.ModuleList) -> MambaStageWeights | None:
            return pack_stage_weights(blocks) if len(blocks) else None

        return UNetStageWeights(
            down=[pack(blocks) for blocks in self.down],
            centre=pack(self.centre),
            up=[pack(blocks) for blocks in self.up],
            impl=impl,
        )

    def step(self, input_ids: Tensor, cache: UNetInferenceCache, stages: UNetStageWeights | None = None) -> Tensor:
        """One sample: codes [B] -> logits [B, V]; advances ``cache`` in place.

        Stage ``i`` runs on the samples where ``t + 1`` divides by ``p_0 ... p_{i-1}``: the
        DownPool below it then has a complete group, and the UpPool above it the last of its
        buffered outputs to emit (after which it refills from the coarser stage). With
        ``stages`` (from :meth:`pack_stages`) each stage's blocks advance in one
        :func:`~seqmodels.kernels.mamba_stage_step` call, which also takes in the embedding
        lookup, the skip connection, the pooling buffers' slots and the final norm.
        """
        if input_ids.dim() != 1:
            raise ValueError(f"MambaUNet.step: input_ids must be [batch], got shape {tuple(input_ids.shape)}")
        t, pool = cache.t, self.config.pool
        # phases[i]: position of this sample's stage-i step within its group of p_i.
        phases, stride = [], 1
        for p in pool:
            phases.append((t // stride) % p)
            stride *= p
        cache.t = t + 1
        if stages is not None:
            return self._step_fused(input_ids, cache, stages, phases)
        x: Tensor | None = self._embed(input_ids)
        skips: list[Tensor] = []
        for i, (blocks, down_pool) in enumerate(zip(self.down, self.down_pools, strict=True)):
            for layer, state in zip(blocks, cache.down[i], strict=True):
                x = layer.step(x, state)
            skips.append(x)
            x = down_pool.step(x, cache.down_buffers[i], phases[i])
            if x is None:
                break
        if x is not None:
            for layer, state in zip(self.centre, cache.centre, strict=True):
                x = layer.step(x, state)
        # Up stages that run now: those whose down stage ran (len(skips) of them).
        for i in reversed(range(len(skips))):
            x = self.up_pools[i].step(x, cache.up_buffers[i], phases[i]) + skips[i]
            for layer, state in zip(self.up[i], cache.up[i], strict=True):
                x = layer.step(x, state)
        return self.lm_head(self.norm_f(x))

    def _step_fused(
        self, input_ids: Tensor, cache: UNetInferenceCache, stages: UNetStageWeights, phases: list[int]
    ) -> Tensor:
        """:meth:`step` with one stage call per stage; the same schedule and arithmetic.

        Down stage i writes its output straight into its DownPool buffer's slot (which is also the
        skip of up stage i); up stage i reads its UpPool buffer's slot before the buffer is
        refilled, adds the skip itself, and the last up stage applies the final norm.
        """
        pool, impl = self.config.pool, stages.impl
        eps = self.norm_f.eps

        def run(x: Tensor, weights: MambaStageWeights | None, stack: MixerState, **io: Any) -> Tensor:
            if weights is not None:
                return mamba_stage_step(x, weights, stack.conv, stack.ssm, impl, **io)
            # A stage without blocks: the same inputs and outputs, in PyTorch.
            r = io["embedding"][x] if "embedding" in io else x
            r = r + io["skip"] if "skip" in io else r
            if "final_norm" in io:
                r = self.norm_f(r)
            return io["out"].copy_(r) if "out" in io else r

        x: Tensor | None = None
        ran = 0  # down stages that ran
        for i in range(len(pool)):
            slot = cache.down_buffers[i][:, phases[i]]  # [B, D_i] view
            if i == 0:
                run(input_ids, stages.down[0], cache.down_stacks[0], embedding=self.embedding.weight, out=slot)
            else:
                run(x, stages.down[i], cache.down_stacks[i], out=slot)
            ran += 1
            if phases[i] < pool[i] - 1:
                x = None
                break
            x = self.down_pools[i].linear(rearrange(cache.down_buffers[i], "b p d -> b (p d)"))
        if x is not None:
            x = run(x, stages.centre, cache.centre_stack)
        for i in reversed(range(ran)):
            io: dict[str, Any] = {"skip": cache.down_buffers[i][:, phases[i]]}
            if i == 0:
                io["final_norm"] = (self.norm_f.weight, eps)
            y = run(cache.up_buffers[i][:, phases[i]], stages.up[i], cache.up_stacks[i], **io)
            if phases[i] == pool[i] - 1:
                # Refill after the stage has read its slot (stream order), from the coarser output.
                cache.up_buffers[i].copy_(rearrange(self.up_pools[i].linear(x), "b (p d) -> b p d", p=pool[i]))
            x = y
        return self.lm_head(x)
