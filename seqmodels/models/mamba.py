"""The Mamba mixer (selective SSM layer), its pre-norm residual block, and RMSNorm.

Shapes: ``B`` batch, ``L`` length, ``D`` d_model, ``E`` d_inner = expand * d_model, ``N`` d_state,
``R`` dt_rank, ``W`` d_conv.

These modules know nothing of tokens: the language model, a sequence classifier or an audio
U-Net stack them at whatever width they need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqmodels.kernels import (
    MambaStageWeights,
    add_rms_norm,
    causal_conv1d,
    rms_norm,
    selective_scan,
    selective_scan_linear,
    selective_state_update,
)
from seqmodels.kernels.selective_scan.checks import check_impl
from seqmodels.models.checkpointing import checkpoint_pass
from seqmodels.models.config import ScanImpl, check_mixer_args, resolve_dt_rank


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale and no bias (Zhang & Sennrich 2019).

    Statistics are computed in float32; the output has the weight's dtype (or ``out_dtype``), so
    a float32 residual stream feeds a bfloat16 model without an explicit cast. On CUDA it runs
    as one fused Triton kernel forward and one backward (``seqmodels.kernels.rms_norm``).
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"RMSNorm.d_model must be a positive int, got {d_model!r}")
        if not eps > 0:
            raise ValueError(f"RMSNorm.eps must be positive, got {eps!r}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor, out_dtype: torch.dtype | None = None) -> Tensor:
        """[..., D] -> [..., D] in ``out_dtype`` (default: the weight's dtype)."""
        return rms_norm(x, self.weight, self.eps, out_dtype)

    def add(self, hidden: Tensor, residual: Tensor | None, out_dtype: torch.dtype | None = None,
            sum_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """The residual add and the norm in one op: ``s = residual + hidden`` in ``sum_dtype``
        (``hidden`` alone when ``residual`` is None); returns ``(norm(s), s)``."""
        return add_rms_norm(hidden, residual, self.weight, self.eps, out_dtype, sum_dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@dataclass
class MixerState:
    """Recurrent state of one mixer during step-by-step decoding; ``step`` advances it in place.

    conv: [B, E, W] the last W inputs of the causal convolution (oldest first).
    ssm: [B, E, N] the SSM state, float32 (complex64 for a complex mixer).
    """

    conv: Tensor
    ssm: Tensor


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """Autocast's dtype on ``x``'s device when autocast is on there, else None."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def _weight_like(weight: Tensor, x: Tensor) -> Tensor:
    """``weight`` in the dtype a matrix product with ``x`` runs in: autocast's when it is on
    (cast once, before broadcasting, so the cast does not materialise a copy per batch row)."""
    return weight.to(_autocast_dtype(x) or x.dtype)


def _bmm(weight: Tensor, x: Tensor) -> Tensor:
    """``weight [O, I] @ x [B, I, L] -> [B, O, L]`` (channels first in and out): a batched product
    with the weight broadcast (stride 0) over the batch, so ``x`` is read where it lies."""
    w = _weight_like(weight, x)
    return torch.bmm(w.expand(x.shape[0], *w.shape), x.to(w.dtype))


class _LinearToChannelsFirst(torch.autograd.Function):
    """``x [B, L, I], w [O, I] -> (x w^T)^T [B, O, L]`` with every result and gradient written
    contiguous in its own layout: y (channels first) in the forward, dx ([B, L, I]) in the
    backward. Plain autograd of a transposed product would hand back dx as a transposed view,
    which the ops after it copy or read slowly."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.bmm(w.expand(x.shape[0], *w.shape), x.transpose(1, 2))

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = torch.bmm(dy.transpose(1, 2), w.expand(dy.shape[0], *w.shape))  # [B, L, I]
        if ctx.needs_input_grad[1]:
            dw = torch.bmm(dy, x).sum(0)  # [O, I]
        return dx, dw


class _LinearFromChannelsFirst(torch.autograd.Function):
    """``y [B, I, L], w [O, I] -> y^T w^T [B, L, O]``, with dy written channels first
    ([B, I, L], the layout of the scan that produced y) in the backward."""

    @staticmethod
    def forward(ctx, y: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(y, w)
        return torch.bmm(y.transpose(1, 2), w.t().expand(y.shape[0], *w.t().shape))

    @staticmethod
    def backward(ctx, dout: Tensor) -> tuple[Tensor | None, Tensor | None]:
        y, w = ctx.saved_tensors
        dy = dw = None
        if ctx.needs_input_grad[0]:
            dy = torch.bmm(w.t().expand(dout.shape[0], *w.t().shape), dout.transpose(1, 2))  # [B, I, L]
        if ctx.needs_input_grad[1]:
            dw = torch.bmm(dout.transpose(1, 2), y.transpose(1, 2)).sum(0)  # [O, I]
        return dy, dw


def _linear_to_channels_first(x: Tensor, weight: Tensor) -> Tensor:
    """A bias-free linear layer over ``x [B, L, I]`` whose output is ``[B, O, L]``."""
    w = _weight_like(weight, x)
    return _LinearToChannelsFirst.apply(x.to(w.dtype), w)


def _linear_from_channels_first(y: Tensor, weight: Tensor) -> Tensor:
    """A bias-free linear layer over the channels of ``y [B, I, L]``: ``[B, L, O]``."""
    w = _weight_like(weight, y)
    return _LinearFromChannelsFirst.apply(y.to(w.dtype), w)


class Mamba(nn.Module):
    """Selective state-space mixer (Gu & Dao 2023, figure 3), [B, L, D] -> [B, L, D].

    in_proj (no bias) to x and gate z of width E; causal depthwise conv1d (width W, bias) and
    SiLU on x; x_proj (no bias) to dt (R), B and C (N each, or 2N real numbers each when
    ``complex``); dt_proj (R -> E, bias); selective scan with softplus(dt + bias) and gate
    SiLU(z) fused into the scan; out_proj (no bias).

    Initialisation: real A = -(n + 1) (S4D-Real) stored as ``A_log``; complex
    A = -1/2 + i*pi*n (S4D-Lin) stored as ``A_log_real`` = log(1/2) and ``A_imag``; D = 1;
    dt_proj.bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] floored at
    dt_init_floor; dt_proj.weight uniform in +-R^-0.5. Parameters flagged
    ``_no_weight_decay`` (A, D, dt bias) are meant to be excluded from weight decay.

    ``scan_impl`` is passed to the kernels unchanged: asking for an implementation that is not
    available raises there, never falls back silently.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | Literal["auto"] = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        complex: bool = False,
        scan_impl: ScanImpl = "auto",
    ) -> None:
        super().__init__()
        check_mixer_args(
            "Mamba",
            d_model=d_model,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            dt_rank=dt_rank,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_init_floor=dt_init_floor,
            complex=complex,
            scan_impl=scan_impl,
        )
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = expand * d_model
        self.dt_rank = resolve_dt_rank(d_model, dt_rank)
        self.complex = complex
        self.scan_impl = scan_impl

        # A complex B or C is carried as 2N real numbers (real, imaginary interleaved).
        bc_width = 2 * d_state if complex else d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * bc_width, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        with torch.no_grad():
            bound = self.dt_rank**-0.5
            nn.init.uniform_(self.dt_proj.weight, -bound, bound)
            log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            dt = torch.exp(log_dt).clamp(min=dt_init_floor)
            # softplus^-1(dt) = dt + log(1 - exp(-dt)), written with expm1 for small dt.
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_weight_decay = True
        # Whole-model initialisers must leave this bias alone (it is not a zero-init bias).
        self.dt_proj.bias._no_reinit = True

        n = torch.arange(d_state, dtype=torch.float32)
        if complex:
            self.A_log_real = nn.Parameter(torch.full((self.d_inner, d_state), math.log(0.5)))
            self.A_imag = nn.Parameter(math.pi * n.repeat(self.d_inner, 1))
            self.A_log_real._no_weight_decay = True
            self.A_imag._no_weight_decay = True
        else:
            self.A_log = nn.Parameter(torch.log(n + 1).repeat(self.d_inner, 1))
            self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

    def A(self) -> Tensor:
        """The state matrix diagonal, [E, N] float32 (complex64 when ``complex``)."""
        if self.complex:
            return torch.complex(-torch.exp(self.A_log_real.float()), self.A_imag.float())
        return -torch.exp(self.A_log.float())

    def _split_x_dbl(self, x_dbl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[..., R + 2 * bc_width] -> dt [..., R], B [..., bc_width], C [..., bc_width]."""
        bc_width = (x_dbl.shape[-1] - self.dt_rank) // 2
        return torch.split(x_dbl, [self.dt_rank, bc_width, bc_width], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """[B, L, D] -> [B, L, D]"""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba.forward: x must be [batch, length, {self.d_model}], got {tuple(x.shape)}")
        # Between in_proj and out_proj every activation is [B, channels, L] with the positions
        # contiguous, the layout of the convolution and the scan. The projections are batched
        # matrix products against the weight broadcast over the batch, which read and write
        # that layout directly: no transposing copy of a [B, E, L] activation or its gradient
        # (such copies took 45% of a 2^20-base training step and 27% at L = 1024).
        xz = _linear_to_channels_first(x, self.in_proj.weight)  # [B, 2E, L]
        pass_ = checkpoint_pass()
        if not self.complex and pass_ is None and check_impl(self.scan_impl, x.device, {}) == "triton":
            # The rest of the mixer as one autograd node on the Triton kernels (the arithmetic of
            # the steps below, without splitting xz or concatenating its gradient). The shapes are
            # right by construction, so the validating wrapper is skipped: its checks cost about
            # 60 us of CPU per block, and at L = 1024 x 64 the training step is partly bound by
            # the CPU launching kernels (benchmarks/RESULTS.md).
            from seqmodels.kernels.mamba_inner.triton_inner import mamba_inner_triton

            return mamba_inner_triton(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                                      self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D,
                                      self.out_proj.weight)
        u, z = xz.chunk(2, dim=1)  # [B, E, L] each
        # Causal depthwise conv and SiLU: one fused kernel each way on CUDA (reads the strided
        # half of xz in place); F.conv1d with W-1 padding, first L outputs, on CPU.
        u = causal_conv1d(u, self.conv1d.weight, self.conv1d.bias, activation="silu")
        x_dbl = _bmm(self.x_proj.weight, u)  # [B, R + 2 * bc_width, L]
        bc_width = (x_dbl.shape[1] - self.dt_rank) // 2
        dt, B, C = torch.split(x_dbl, [self.dt_rank, bc_width, bc_width], dim=1)
        # dt_proj's bias goes to the scan (delta_bias), which adds it before the softplus.
        dt = _bmm(self.dt_proj.weight, dt)  # [B, E, L]
        if self.complex:
            # Scan layout for complex B, C: [B, N, 2L], last axis (re_0, im_0, re_1, im_1, ...)
            # over positions; x_proj emits each state's value as an adjacent (re, im) pair.
            B = rearrange(B, "b (n two) l -> b n (l two)", two=2)
            C = rearrange(C, "b (n two) l -> b n (l two)", two=2)
        scan_args = dict(D=self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                         impl=self.scan_impl)
        if pass_ is not None and torch.is_grad_enabled() and check_impl(self.scan_impl, u.device, {}) == "triton":
            # Inside a checkpointed block (seqmodels.models.checkpointing): the scan runs forward
            # once per step, its backward starting from the first pass's tile states.
            w = _weight_like(self.out_proj.weight, u)
            return selective_scan_linear(
                u, dt, self.A(), B.contiguous(), C.contiguous(), w, checkpoint_pass=pass_, **scan_args
            )  # [B, L, D]
        y = selective_scan(u, dt, self.A(), B.contiguous(), C.contiguous(), **scan_args)  # [B, E, L]
        return _linear_from_channels_first(y, self.out_proj.weight)  # [B, L, D]

    def allocate_inference_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> MixerState:
        """Zero state for :meth:`step`: conv [B, E, W] in ``dtype`` (default: the conv weight's),
        ssm [B, E, N] float32 (complex64 when ``complex``): long generations accumulate in it."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"Mamba.allocate_inference_cache: batch_size must be a positive int, got {batch_size!r}")
        weight = self.conv1d.weight
        device = weight.device if device is None else device
        conv = torch.zeros(batch_size, self.d_inner, self.d_conv, dtype=dtype or weight.dtype, device=device)
        ssm_dtype = torch.complex64 if self.complex else torch.float32
        ssm = torch.zeros(batch_size, self.d_inner, self.d_state, dtype=ssm_dtype, device=device)
        return MixerState(conv=conv, ssm=ssm)

    def step(self, x: Tensor, state: MixerState) -> Tensor:
        """One position: [B, D] -> [B, D]; advances ``state`` in place."""
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba.step: x must be [batch, {self.d_model}], got {tuple(x.shape)}")
        expected = (x.shape[0], self.d_inner, self.d_conv)
        if state.conv.shape != expected:
            raise ValueError(f"Mamba.step: state.conv must be {expected}, got {tuple(state.conv.shape)}")
        u, z = self.in_proj(x).chunk(2, dim=-1)  # [B, E] each
        # Shift the window left by one and append the newest input (oldest first, as the
        # convolution weight is laid out).
        state.conv.copy_(torch.roll(state.conv, shifts=-1, dims=-1))
        state.conv[:, :, -1] = u.to(state.conv.dtype)
        weight = rearrange(self.conv1d.weight, "e 1 w -> e w")
        # Back to in_proj's output dtype (bfloat16 under autocast), as the scan's u would be.
        u = F.silu((state.conv * weight).sum(-1) + self.conv1d.bias).to(z.dtype)  # [B, E]
        dt, B, C = self._split_x_dbl(self.x_proj(u))
        dt = dt @ self.dt_proj.weight.t()  # [B, E]
        # Complex B, C stay as [B, 2N] real, (re, im) interleaved: the update's layout.
        return self.out_proj(
            selective_state_update(
                state.ssm,
                u,
                dt,
                self.A(),
                B.contiguous(),
                C.contiguous(),
                D=self.D.float(),
                z=z,
                dt_bias=self.dt_proj.bias.float(),
                dt_softplus=True,
                impl=self.scan_impl,
            )
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}, complex={self.complex}, scan_impl={self.scan_impl!r}"
        )


class MambaBlock(nn.Module):
    """Pre-norm residual block: ``x + Mamba(RMSNorm(x))``, [B, L, D] -> [B, L, D].

    With ``residual_in_fp32`` the returned residual stream is float32 whatever the mixer's
    dtype, so that summing many layers in bfloat16 does not lose the small updates.
    Mixer arguments are those of :class:`Mamba`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | Literal["auto"] = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        complex: bool = False,
        scan_impl: ScanImpl = "auto",
        rms_norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
    ) -> None:
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.norm = RMSNorm(d_model, eps=rms_norm_eps)
        self.mixer = Mamba(
            d_model,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            dt_rank=dt_rank,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_init_floor=dt_init_floor,
            complex=complex,
            scan_impl=scan_impl,
        )

    def _residual(self, x: Tensor) -> Tensor:
        return x.float() if self.residual_in_fp32 else x

    def forward(self, x: Tensor) -> Tensor:
        """[B, L, D] -> [B, L, D]"""
        # Under autocast the norm writes the mixer's input dtype directly (no separate cast).
        return self._residual(x) + self.mixer(self.norm(x, out_dtype=_autocast_dtype(x)))

    def sum_dtype(self, hidden: Tensor, residual: Tensor | None) -> torch.dtype:
        """The residual stream's dtype: float32 with ``residual_in_fp32``, else the promoted one."""
        if self.residual_in_fp32:
            return torch.float32
        return hidden.dtype if residual is None else torch.promote_types(hidden.dtype, residual.dtype)

    def forward_pair(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        """The same block with its residual add moved in front of the norm (the form of
        state-spaces/mamba): ``s = residual + hidden``, returns ``(mixer(norm(s)), s)``, so
        ``forward(x) == sum(forward_pair(x, None))``. The add and the norm are one fused op
        (:func:`seqmodels.kernels.add_rms_norm`), one kernel each way on CUDA."""
        normed, s = self.norm.add(hidden, residual, _autocast_dtype(hidden), self.sum_dtype(hidden, residual))
        return self.mixer(normed), s

    def allocate_inference_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> MixerState:
        """See :meth:`Mamba.allocate_inference_cache`."""
        return self.mixer.allocate_inference_cache(batch_size, dtype=dtype, device=device)

    def step(self, x: Tensor, state: MixerState) -> Tensor:
        """One position: [B, D] -> [B, D]; advances ``state`` in place."""
        return self._residual(x) + self.mixer.step(self.norm(x), state)


def pack_stage_weights(blocks: Sequence[MambaBlock]) -> MambaStageWeights:
    """Stack the weights of ``n >= 1`` blocks of one shape for :func:`seqmodels.kernels.mamba_stage_step`.

    The blocks must be float32 with ``residual_in_fp32`` (the stage step keeps the residual
    stream in float32, as ``MambaBlock.step`` then does). The result is a copy: pack again after
    the weights change.
    """
    blocks = list(blocks)
    if not blocks:
        raise ValueError("pack_stage_weights: blocks must not be empty")
    first = blocks[0]
    for i, block in enumerate(blocks):
        if not isinstance(block, MambaBlock):
            raise ValueError(f"pack_stage_weights: blocks[{i}] is a {type(block).__name__}, not a MambaBlock")
        if not block.residual_in_fp32:
            raise ValueError(f"pack_stage_weights: blocks[{i}] has residual_in_fp32=False; the stage step needs True")
        dtypes = {p.dtype for p in block.parameters()}
        if dtypes != {torch.float32}:
            raise ValueError(f"pack_stage_weights: blocks[{i}] has parameters of dtype {sorted(map(str, dtypes))}; "
                             "the stage step needs float32")
        m, m0 = block.mixer, first.mixer
        if (m.d_model, m.d_inner, m.d_state, m.d_conv, m.dt_rank, m.complex, block.norm.eps) != (
            m0.d_model, m0.d_inner, m0.d_state, m0.d_conv, m0.dt_rank, m0.complex, first.norm.eps
        ):
            raise ValueError(f"pack_stage_weights: blocks[{i}] differs in shape from blocks[0]")

    def stack(get) -> Tensor:
        return torch.stack([get(b.mixer) for b in blocks]).detach().contiguous()

    return MambaStageWeights(
        norm_weight=torch.stack([b.norm.weight for b in blocks]).detach().contiguous(),
        in_proj_t=stack(lambda m: m.in_proj.weight.t()),
        conv_weight_t=stack(lambda m: rearrange(m.conv1d.weight, "e 1 w -> w e")),
        conv_bias=stack(lambda m: m.conv1d.bias),
        x_proj=stack(lambda m: m.x_proj.weight),
        dt_proj_t=stack(lambda m: m.dt_proj.weight.t()),
        dt_bias=stack(lambda m: m.dt_proj.bias),
        A_t=stack(lambda m: m.A().t()),
        D=stack(lambda m: m.D),
        out_proj=stack(lambda m: m.out_proj.weight),
        eps=first.norm.eps,
    )
