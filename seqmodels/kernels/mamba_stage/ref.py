"""The packed weights of a stage of Mamba blocks, argument checks, and the plain PyTorch
reference of the stage decode step (one layer after another, float32).

Short and sequential on purpose: the fused kernel (``triton_stage.py``) is tested against it, and
it is tested against a loop over ``MambaBlock.step``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._triton_env import check_triton_device
from ..rmsnorm.ref import rms_norm_ref

Impl = Literal["auto", "triton", "ref"]
IMPLS = ("auto", "triton", "ref")

STAGE_DOC = """
    Shapes (batch B, n stacked blocks, D = d_model, E = d_inner, N = d_state, W = d_conv):
        x: (B, D) float32, the residual stream entering the first block; or, with ``embedding``
            (V, D), (B,) int64 codes, whose rows of ``embedding`` enter.
        weights: a :class:`MambaStageWeights` (float32, stacked over the n blocks).
        conv_state: (n, B, E, W) float32, the last W conv inputs of every block, oldest first.
        ssm_state: (n, B, E, N) float32, or complex64 for a complex SSM.
        skip: optional (B, D), added to the entering stream.
        final_norm: optional (weight (D,), eps): return RMSNorm(r) * weight instead of r.
        out: optional (B, D) float32 to write the result into (any row stride; columns contiguous).
    Both states are advanced in place (any strides). Returns the residual stream after the n
    blocks (or its norm): (B, D) float32, ``out`` when given. (The reference also runs in
    float64 throughout, for tests.)

    Per block, with r the residual stream (``MambaBlock.step`` with ``residual_in_fp32``):
        x_n = r * rsqrt(mean(r^2) + eps) * norm_weight
        (x_e, z) = x_n in_proj_t;  window = (window[1:], x_e);  u = silu(conv_weight . window + conv_bias)
        (dt_r, B, C) = x_proj u;  dt = softplus(dt_r dt_proj_t + dt_bias)   (torch's: linear above 20)
        h = exp(dt A) h + dt u B;  y = (C . h + D u) * silu(z)   (complex: 2 Re(C . h))
        r = r + out_proj y
"""


@dataclass(frozen=True)
class MambaStageWeights:
    """The weights of ``n`` pre-norm Mamba blocks of one width, stacked for the stage decode step.

    All float32 (``A_t`` complex64 for a complex SSM; float64 / complex128 for the reference only),
    contiguous, on one device; leading axis n, the inner channels E last (the kernel's tiles hold
    channels along their contiguous axis):
        norm_weight (n, D); in_proj_t (n, D, 2E), ``in_proj.weight`` transposed (conv input
            columns first, then the gate's); conv_weight_t (n, W, E); conv_bias (n, E);
        x_proj (n, R + 2K, E), ``x_proj.weight``: dt (R rows), then B, then C (K = N rows each, or
            K = 2N for a complex SSM, real and imaginary parts interleaved);
        dt_proj_t (n, R, E); dt_bias (n, E); A_t (n, N, E), A transposed: -exp(A_log), or complex
            -exp(A_log_real) + i A_imag; D (n, E); out_proj (n, D, E), ``out_proj.weight``;
        eps: the RMSNorm epsilon.
    A copy of the module weights: build it again after the weights change.
    """

    norm_weight: Tensor
    in_proj_t: Tensor
    conv_weight_t: Tensor
    conv_bias: Tensor
    x_proj: Tensor
    dt_proj_t: Tensor
    dt_bias: Tensor
    A_t: Tensor
    D: Tensor
    out_proj: Tensor
    eps: float

    def __post_init__(self) -> None:
        n, d = _shape("norm_weight", self.norm_weight, 2)
        _shape("in_proj_t", self.in_proj_t, 3)
        _, w, e = _shape("conv_weight_t", self.conv_weight_t, 3)
        _, r, _ = _shape("dt_proj_t", self.dt_proj_t, 3)
        _, n_state, _ = _shape("A_t", self.A_t, 3)
        k = 2 * n_state if self.A_t.is_complex() else n_state
        expected = {
            "norm_weight": (n, d), "in_proj_t": (n, d, 2 * e), "conv_weight_t": (n, w, e), "conv_bias": (n, e),
            "x_proj": (n, r + 2 * k, e), "dt_proj_t": (n, r, e), "dt_bias": (n, e), "A_t": (n, n_state, e),
            "D": (n, e), "out_proj": (n, d, e),
        }
        device, real = self.norm_weight.device, self.norm_weight.dtype
        if real not in (torch.float32, torch.float64):
            raise ValueError(f"MambaStageWeights.norm_weight: expected float32 (or float64), got {real}")
        cplx = torch.complex64 if real == torch.float32 else torch.complex128
        for name, shape in expected.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise ValueError(f"MambaStageWeights.{name}: expected shape {shape}, got {tuple(t.shape)}")
            allowed = (real, cplx) if name == "A_t" else (real,)
            if t.dtype not in allowed:
                raise ValueError(f"MambaStageWeights.{name}: expected {' or '.join(map(str, allowed))}, got {t.dtype}")
            if not t.is_contiguous():
                raise ValueError(f"MambaStageWeights.{name}: must be contiguous")
            if t.device != device:
                raise ValueError(f"MambaStageWeights.{name}: on {t.device}, norm_weight on {device}")
        if min(n, d, e, w, r, n_state) == 0:
            raise ValueError(f"MambaStageWeights: empty dimension in {expected}")
        if not self.eps > 0:
            raise ValueError(f"MambaStageWeights.eps must be positive, got {self.eps!r}")

    @property
    def n_layers(self) -> int:
        return self.norm_weight.shape[0]

    @property
    def d_model(self) -> int:
        return self.norm_weight.shape[1]

    @property
    def d_inner(self) -> int:
        return self.conv_weight_t.shape[2]

    @property
    def d_conv(self) -> int:
        return self.conv_weight_t.shape[1]

    @property
    def dt_rank(self) -> int:
        return self.dt_proj_t.shape[1]

    @property
    def d_state(self) -> int:
        return self.A_t.shape[1]

    @property
    def is_complex(self) -> bool:
        return self.A_t.is_complex()

    @property
    def dtype(self) -> torch.dtype:
        """The real dtype of the weights (float32, or float64 for a reference run)."""
        return self.norm_weight.dtype

    def to(self, dtype: torch.dtype) -> MambaStageWeights:
        """A copy in real ``dtype`` (A in the matching complex dtype when complex)."""
        cplx = torch.complex128 if dtype == torch.float64 else torch.complex64
        return MambaStageWeights(
            **{f.name: getattr(self, f.name).to(cplx if getattr(self, f.name).is_complex() else dtype)
               for f in fields(self) if f.name != "eps"},
            eps=self.eps,
        )


def _shape(name: str, t: Tensor, ndim: int) -> tuple[int, ...]:
    if not isinstance(t, Tensor) or t.dim() != ndim:
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"MambaStageWeights.{name}: expected a {ndim}-D tensor, got {got}")
    return tuple(t.shape)


def check_stage_args(
    x: Tensor,
    weights: MambaStageWeights,
    conv_state: Tensor,
    ssm_state: Tensor,
    embedding: Tensor | None = None,
    skip: Tensor | None = None,
    final_norm: tuple[Tensor, float] | None = None,
    out: Tensor | None = None,
) -> None:
    """Shapes, dtypes and devices of a stage step; reads no values (safe inside CUDA graphs)."""
    if not isinstance(weights, MambaStageWeights):
        raise ValueError(f"weights: expected a MambaStageWeights, got {type(weights).__name__}")
    real, d = weights.dtype, weights.d_model
    if embedding is not None:
        if not isinstance(x, Tensor) or x.dim() != 1 or x.dtype != torch.int64:
            got = (tuple(x.shape), x.dtype) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected (batch,) int64 codes with an embedding, got {got}")
        if embedding.dim() != 2 or embedding.shape[1] != d or embedding.dtype != real or not embedding.is_contiguous():
            raise ValueError(f"embedding: expected a contiguous (vocab, {d}) {real} table, "
                             f"got {tuple(embedding.shape)} {embedding.dtype}")
    elif not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != d or x.dtype != real:
        got = (tuple(x.shape), x.dtype) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x: expected (batch, {d}) {real} (the weights' dtype), got {got}")
    n, b, e = weights.n_layers, x.shape[0], weights.d_inner
    for name, t in (("skip", skip), ("out", out)):
        if t is not None and (tuple(t.shape) != (b, d) or t.dtype != real or t.stride(-1) != 1):
            raise ValueError(f"{name}: expected ({b}, {d}) {real} with contiguous columns, "
                             f"got {tuple(t.shape)} {t.dtype} strides {t.stride()}")
    if final_norm is not None:
        weight, eps = final_norm
        if tuple(weight.shape) != (d,) or weight.dtype != real or not eps > 0:
            raise ValueError(f"final_norm: expected (({d},) {real} weight, eps > 0), got {tuple(weight.shape)} "
                             f"{weight.dtype}, eps {eps!r}")
    conv_shape, ssm_shape = (n, b, e, weights.d_conv), (n, b, e, weights.d_state)
    if tuple(conv_state.shape) != conv_shape or conv_state.dtype != real:
        raise ValueError(f"conv_state: expected {conv_shape} {real}, got {tuple(conv_state.shape)} {conv_state.dtype}")
    if weights.is_complex:
        ssm_dtype = torch.complex64 if real == torch.float32 else torch.complex128
    else:
        ssm_dtype = real
    if tuple(ssm_state.shape) != ssm_shape or ssm_state.dtype != ssm_dtype:
        raise ValueError(f"ssm_state: expected {ssm_shape} {ssm_dtype}, got {tuple(ssm_state.shape)} {ssm_state.dtype}")
    named = {"x": x, "conv_state": conv_state, "ssm_state": ssm_state, "embedding": embedding, "skip": skip,
             "out": out, "final_norm": None if final_norm is None else final_norm[0]}
    for name, t in named.items():
        if t is not None and t.device != weights.norm_weight.device:
            raise ValueError(f"{name}: on {t.device}, the weights on {weights.norm_weight.device}")


def check_impl(impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve ``impl`` ("auto": "triton" on CUDA, "ref" otherwise) and check it can run here."""
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" and dtype == torch.float32 else "ref"
    if impl == "triton" and dtype != torch.float32:
        raise ValueError(f"impl: 'triton' needs float32 weights, got {dtype}; use impl='ref' for float64")
    if impl == "triton":
        check_triton_device(device)
    return impl


def stage_step_ref(
    x: Tensor,
    w: MambaStageWeights,
    conv_state: Tensor,
    ssm_state: Tensor,
    embedding: Tensor | None = None,
    skip: Tensor | None = None,
    final_norm: tuple[Tensor, float] | None = None,
) -> Tensor:
    """The stage step on validated arguments (see ``mamba_stage_step_ref``); a new tensor."""
    r = embedding[x] if embedding is not None else x
    if skip is not None:
        r = r + skip
    d_state, dt_rank = w.d_state, w.dt_rank
    for i in range(w.n_layers):
        xn = rms_norm_ref(r, w.norm_weight[i], w.eps)
        xe, z = (xn @ w.in_proj_t[i]).chunk(2, dim=-1)  # [B, E] each
        window = conv_state[i]  # [B, E, W], oldest first
        window.copy_(torch.roll(window, shifts=-1, dims=-1))
        window[:, :, -1] = xe
        u = F.silu((window * w.conv_weight_t[i].t()).sum(-1) + w.conv_bias[i])
        x_dbl = u @ w.x_proj[i].t()  # [B, R + 2K]
        k = (x_dbl.shape[-1] - dt_rank) // 2
        dt_r, B, C = torch.split(x_dbl, [dt_rank, k, k], dim=-1)
        if w.is_complex:  # (re, im) pairs -> complex [B, N]
            B = torch.view_as_complex(B.reshape(-1, d_state, 2).contiguous())
            C = torch.view_as_complex(C.reshape(-1, d_state, 2).contiguous())
        dt = F.softplus(dt_r @ w.dt_proj_t[i] + w.dt_bias[i])  # [B, E]
        h = torch.exp(dt[..., None] * w.A_t[i].t()) * ssm_state[i] + (dt * u)[..., None] * B[:, None, :]
        ssm_state[i].copy_(h)
        y = (h * C[:, None, :]).sum(-1)
        if w.is_complex:
            y = 2 * y.real
        y = (y + w.D[i] * u) * F.silu(z)
        r = r + y @ w.out_proj[i].t()
    if final_norm is not None:
        weight, eps = final_norm
        r = rms_norm_ref(r, weight, eps)
    return r


def mamba_stage_step_ref(
    x: Tensor,
    weights: MambaStageWeights,
    conv_state: Tensor,
    ssm_state: Tensor,
    *,
    embedding: Tensor | None = None,
    skip: Tensor | None = None,
    final_norm: tuple[Tensor, float] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    check_stage_args(x, weights, conv_state, ssm_state, embedding, skip, final_norm, out)
    r = stage_step_ref(x, weights, conv_state, ssm_state, embedding, skip, final_norm)
    return r if out is None else out.copy_(r)


mamba_stage_step_ref.__doc__ = (
    "Stage decode step, plain PyTorch reference: advance n stacked Mamba blocks by one position.\n" + STAGE_DOC
)
