"""Fused Triton causal depthwise conv1d (+ bias, + optional SiLU): forward and backward.

Layers, top to bottom: ``@triton.jit`` helpers and kernels; host launchers; the autograd
Function; the public :func:`causal_conv1d_triton`. The math (tiles, halos, the backward) is in
README.md.

Shapes use one alphabet: ``B`` batch, ``E`` channels, ``L`` length, ``W`` width. A program owns
one channel of one batch row and a tile of ``BLOCK_L`` positions, held as ``[R, VEC]`` (``R =
BLOCK_L / VEC`` rows of ``VEC`` consecutive positions, 16 bytes of bf16): every row is one
vector load, and a row's ``VEC`` positions sit in one thread, so the shifted copies of the tile
that the taps need are assembled from columns in registers (``tl.split`` / ``tl.join``) instead
of being reloaded at unaligned offsets. The ``W - 1`` positions before a row come from the
previous row, loaded once more as a second aligned vector (from L1/L2: x is read from DRAM about
once).
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl
from torch import Tensor

from .._triton_env import interpreting

# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _cols(x, VEC: tl.constexpr):
    """[R, VEC] -> tuple of VEC columns [R] (VEC = 4 or 8); register moves only when a row lies
    in one thread."""
    R: tl.constexpr = x.shape[0]
    if VEC == 8:
        e, o = tl.split(tl.reshape(x, (R, 4, 2)))  # columns 0 2 4 6 | 1 3 5 7
        ee, eo = tl.split(tl.reshape(e, (R, 2, 2)))  # 0 4 | 2 6
        oe, oo = tl.split(tl.reshape(o, (R, 2, 2)))  # 1 5 | 3 7
        c0, c4 = tl.split(ee)
        c2, c6 = tl.split(eo)
        c1, c5 = tl.split(oe)
        c3, c7 = tl.split(oo)
        return (c0, c1, c2, c3, c4, c5, c6, c7)
    else:
        e, o = tl.split(tl.reshape(x, (R, 2, 2)))  # 0 2 | 1 3
        c0, c2 = tl.split(e)
        c1, c3 = tl.split(o)
        return (c0, c1, c2, c3)


@triton.jit
def _window(cat, START: tl.constexpr, VEC: tl.constexpr):
    """The [R, VEC] tile whose column j is ``cat[START + j]`` (``cat``: a tuple of [R] columns,
    e.g. the columns of two consecutive rows, earlier first)."""
    R: tl.constexpr = cat[0].shape[0]
    if VEC == 8:  # the inverse of _cols' splits
        ee = tl.join(cat[START], cat[START + 4])
        eo = tl.join(cat[START + 2], cat[START + 6])
        oe = tl.join(cat[START + 1], cat[START + 5])
        oo = tl.join(cat[START + 3], cat[START + 7])
        e = tl.reshape(tl.join(ee, eo), (R, 4))
        o = tl.reshape(tl.join(oe, oo), (R, 4))
        return tl.reshape(tl.join(e, o), (R, 8))
    else:
        e = tl.join(cat[START], cat[START + 2])
        o = tl.join(cat[START + 1], cat[START + 3])
        return tl.reshape(tl.join(e, o), (R, 4))


@triton.jit
def _load_weights(w_ptr, e, W: tl.constexpr):
    """The W taps of channel e as a tuple of fp32 scalars (weight is contiguous [E, W])."""
    w_row = w_ptr + e.to(tl.int64) * W
    ws = ()
    for k in tl.static_range(W):
        ws = ws + (tl.load(w_row + k).to(tl.float32),)
    return ws


@triton.jit
def _sigmoid(p, FAST: tl.constexpr):
    """1 / (1 + 2^(-p log2 e)). FAST (compiled kernels): the approximate ex2 / rcp instructions
    with denormals flushed, one MUFU op each (exact enough: a flushed 2^-x only meets 1 + it,
    and rcp(inf) = 0); Triton's exp and division add range checks around them (about 12 SASS
    instructions per sigmoid instead of 4 on sm_90: the bf16 forward went from 27.5 to 19.5 per
    position and thread). Under the interpreter, plain exp2 and division."""
    t = p * -1.4426950408889634
    if FAST:
        e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [t], dtype=tl.float32, is_pure=True,
                                      pack=1)
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [1.0 + e], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 1.0 / (1.0 + tl.exp2(t))


@triton.jit
def _silu_grad(p, FAST: tl.constexpr):
    # d/dp [p sigmoid(p)] = s (1 + p (1 - s)) = s + s (p - p s): two FMAs after s.
    s = _sigmoid(p, FAST)
    return s + s * (p - p * s)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _causal_conv_fwd_kernel(
    # pointers
    x_ptr, w_ptr, bias_ptr, y_ptr,
    # dims (L divided by DIV)
    E, L_d, n_tiles,
    # strides of x divided by DIV (the position stride is 1)
    stride_xb_d, stride_xe_d,
    # meta-parameters
    W: tl.constexpr, VEC: tl.constexpr, BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    FAST: tl.constexpr, DIV: tl.constexpr,
):
    # L and the strides arrive divided by DIV (VEC when they are multiples of it, else 1) so that
    # the compiler can prove every row of VEC positions 16-byte aligned and load it as a vector
    # (Triton itself only specialises integers divisible by 16).
    L = L_d * DIV
    stride_xb = stride_xb_d * DIV
    stride_xe = stride_xe_d * DIV
    # Programs run tile-fastest, so neighbouring tiles of a row (which share halos) run together.
    pid = tl.program_id(0)
    row = pid // n_tiles  # b * E + e
    tile = pid - row * n_tiles
    b = row // E
    e = row - b * E
    x_row = x_ptr + b.to(tl.int64) * stride_xb + e.to(tl.int64) * stride_xe
    R: tl.constexpr = BLOCK_L // VEC
    pos = tile * BLOCK_L + tl.arange(0, R)[:, None] * VEC + tl.arange(0, VEC)[None, :]  # [R, VEC]

    xa = tl.load(x_row + pos, mask=pos < L, other=0.0).to(tl.float32)  # [R, VEC]
    # The row before: its last W - 1 positions are this row's halo (zero before position 0).
    xp = tl.load(x_row + pos - VEC, mask=(pos >= VEC) & (pos - VEC < L), other=0.0).to(tl.float32)
    cat = _cols(xp, VEC) + _cols(xa, VEC)  # 2 VEC columns, positions pos[:, 0] - VEC ...
    ws = _load_weights(w_ptr, e, W)

    acc = tl.zeros((R, VEC), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + e).to(tl.float32)
    for k in tl.static_range(W):
        # tap k reads position t - (W - 1) + k
        acc += ws[k] * _window(cat, VEC - (W - 1) + k, VEC)
    if SILU:
        acc = acc * _sigmoid(acc, FAST)
    tl.store(y_ptr + row.to(tl.int64) * L + pos, acc.to(y_ptr.dtype.element_ty), mask=pos < L)


@triton.jit
def _causal_conv_bwd_kernel(
    # pointers
    x_ptr, w_ptr, bias_ptr, dy_ptr, dx_ptr, dpart_ptr,
    # dims (L divided by DIV)
    E, L_d, n_tiles,
    # strides of x and of dx divided by DIV (the position stride is 1); dy is contiguous [B, E, L]
    stride_xb_d, stride_xe_d, stride_dxb_d, stride_dxe_d,
    # meta-parameters
    W: tl.constexpr, VEC: tl.constexpr, BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    FAST: tl.constexpr, DIV: tl.constexpr,
):
    """g = dy * act'(pre) with pre recomputed from x; dx[t] = sum_k w[k] g[t + W-1-k];
    partial sums over the tile of g * x[t - (W-1) + k] (dweight) and g (dbias) go to
    dpart[b, tile, e, 0..W]. L and the strides of x and dx arrive divided by DIV, as in the forward."""
    L = L_d * DIV
    stride_xb = stride_xb_d * DIV
    stride_xe = stride_xe_d * DIV
    stride_dxb = stride_dxb_d * DIV
    stride_dxe = stride_dxe_d * DIV
    pid = tl.program_id(0)
    row = pid // n_tiles
    tile = pid - row * n_tiles
    b = row // E
    e = row - b * E
    x_row = x_ptr + b.to(tl.int64) * stride_xb + e.to(tl.int64) * stride_xe
    dy_row = dy_ptr + row.to(tl.int64) * L
    R: tl.constexpr = BLOCK_L // VEC
    pos = tile * BLOCK_L + tl.arange(0, R)[:, None] * VEC + tl.arange(0, VEC)[None, :]  # [R, VEC]
    ws = _load_weights(w_ptr, e, W)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e).to(tl.float32)

    # x at the row before (halo), the row, and the row after (for g at the W - 1 positions
    # after the row, which dx needs); positions outside [0, L) read as 0.
    xp = tl.load(x_row + pos - VEC, mask=(pos >= VEC) & (pos - VEC < L), other=0.0).to(tl.float32)
    xa = tl.load(x_row + pos, mask=pos < L, other=0.0).to(tl.float32)
    cat_x = _cols(xp, VEC) + _cols(xa, VEC)  # positions pos[:, 0] - VEC ... pos[:, 0] + VEC - 1
    xs = ()  # xs[k]: the input of tap k, x[t - (W - 1) + k], for pre and dweight
    for k in tl.static_range(W):
        xs = xs + (_window(cat_x, VEC - (W - 1) + k, VEC),)
    dya = tl.load(dy_row + pos, mask=pos < L, other=0.0).to(tl.float32)
    dyn = tl.load(dy_row + pos + VEC, mask=pos + VEC < L, other=0.0).to(tl.float32)
    dyn_cols = _cols(dyn, VEC)

    # g on the row (a [R, VEC] tile) and on the first W - 1 positions of the next row (columns).
    if SILU:
        pre = tl.zeros((R, VEC), dtype=tl.float32) + bias
        for k in tl.static_range(W):
            pre += ws[k] * xs[k]
        ga = dya * _silu_grad(pre, FAST)
        xn = tl.load(x_row + pos + VEC, mask=pos + VEC < L, other=0.0).to(tl.float32)
        cat_n = _cols(xa, VEC) + _cols(xn, VEC)
        gn = ()
        for i in tl.static_range(W - 1):
            pre_i = tl.zeros((R,), dtype=tl.float32) + bias
            for k in tl.static_range(W):
                pre_i += ws[k] * cat_n[VEC + i - (W - 1) + k]
            gn = gn + (dyn_cols[i] * _silu_grad(pre_i, FAST),)
    else:
        ga = dya
        gn = ()
        for i in tl.static_range(W - 1):
            gn = gn + (dyn_cols[i],)
    # Positions past L have dy = 0, hence g = 0: they add nothing below.
    cat_g = _cols(ga, VEC) + gn  # positions pos[:, 0] ... pos[:, 0] + VEC + W - 2

    dx = tl.zeros((R, VEC), dtype=tl.float32)
    for k in tl.static_range(W):
        dx += ws[k] * _window(cat_g, W - 1 - k, VEC)  # g[t + W-1-k]
    dx_row = dx_ptr + b.to(tl.int64) * stride_dxb + e.to(tl.int64) * stride_dxe
    tl.store(dx_row + pos, dx.to(dx_ptr.dtype.element_ty), mask=pos < L)

    part = dpart_ptr + ((b.to(tl.int64) * n_tiles + tile) * E + e) * (W + 1)
    for k in tl.static_range(W):
        tl.store(part + k, tl.sum(tl.sum(ga * xs[k], axis=1), axis=0))
    tl.store(part + W, tl.sum(tl.sum(ga, axis=1), axis=0))


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

# Positions per program on a GPU: 2048 (B=1, E=512, L=2^20 gives 262144 programs). Positions
# per thread: 16 in the forward (4 warps at 2048), 32 in the backward (2 warps), which spreads the
# backward's five tile reductions over twice the positions (sm_90 SASS per position and thread:
# 39.5 instructions at 128 registers, against 48 at 80 registers with 16). On an H100 these
# defaults reach 2.6 / 2.5 TB/s (forward / forward + backward) at B=1, E=512, L=2^20 bf16
# (benchmarks/RESULTS.md); other tile sizes are not swept yet (`python -m benchmarks.causal_conv
# --block-l 1024 2048 4096 --warps ...`).
_BLOCK_L = 2048
_FWD_POSITIONS_PER_THREAD = 16
_BWD_POSITIONS_PER_THREAD = 32
# Under the interpreter small tiles, so CPU tests cross tile boundaries at small L.
_BLOCK_L_INTERPRETER = 16
MIN_BLOCK_L = 16


_interpreting = interpreting


def _vec(dtype: torch.dtype, width: int) -> int:
    """Positions per row of a tile: 16 bytes of 2-byte data; for float32 4 (one 16-byte vector)
    when the halo W - 1 fits in a row, else 8 (two vectors; Triton then spreads a row over two
    threads and moves columns through shared memory: slower, still correct)."""
    if dtype.itemsize <= 2 or width - 1 > 4:
        return 8
    return 4


class _Plan:
    """Tiling of one call, shared by forward and backward: positions per program ``block_l``,
    ``n_tiles`` per row, and the warps of each kernel."""

    def __init__(self, x: Tensor, width: int, block_l: int | None, num_warps: tuple[int, int] | None):
        L = x.shape[-1]
        self.vec = _vec(x.dtype, width)
        if block_l is None:
            block_l = _BLOCK_L_INTERPRETER if _interpreting() else _BLOCK_L
            # Short sequences: one tile per row, no longer than needed.
            block_l = min(block_l, max(MIN_BLOCK_L, triton.next_power_of_2(L)))
        self.block_l = block_l
        self.n_tiles = triton.cdiv(L, block_l)
        if num_warps is None:
            num_warps = tuple(max(1, min(8, block_l // (32 * ppt)))
                              for ppt in (_FWD_POSITIONS_PER_THREAD, _BWD_POSITIONS_PER_THREAD))
        self.fwd_warps, self.bwd_warps = num_warps


def _div(vec: int, *tensors: Tensor) -> int:
    """VEC when L and the batch and channel strides of every tensor are multiples of it (rows of
    VEC positions then start 16-byte aligned wherever the tensors do), else 1."""
    ok = all(t.shape[-1] % vec == 0 and t.stride(0) % vec == 0 and t.stride(1) % vec == 0 for t in tensors)
    return vec if ok else 1


def _fwd(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, plan: _Plan) -> Tensor:
    """y [B, E, L] contiguous in x's dtype; x has unit position stride."""
    batch, dim, L = x.shape
    y = torch.empty(batch, dim, L, device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    div = _div(plan.vec, x)
    _causal_conv_fwd_kernel[(batch * dim * plan.n_tiles,)](
        x, weight, bias, y,
        dim, L // div, plan.n_tiles,
        x.stride(0) // div, x.stride(1) // div,
        W=weight.shape[1], VEC=plan.vec, BLOCK_L=plan.block_l, HAS_BIAS=bias is not None, SILU=silu,
        FAST=not _interpreting(), DIV=div, num_warps=plan.fwd_warps,
    )
    return y


def _bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool,
         plan: _Plan, dx_out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(dx [B, E, L] in x's dtype, dweight [E, W] fp32, dbias [E] fp32); dy contiguous. dx is
    written into ``dx_out`` when given (any batch and channel strides, unit position stride),
    else into a new contiguous tensor."""
    batch, dim, L = x.shape
    width = weight.shape[1]
    dx = dx_out if dx_out is not None else torch.empty(batch, dim, L, device=x.device, dtype=x.dtype)
    # Per-program partial sums [B, tiles, E, W + 1] (W taps, then the bias), summed here in a
    # fixed order: deterministic, and small (B=1, E=512, L=2^20: 5 MB against 1 GB of x).
    dpart = torch.empty(batch, plan.n_tiles, dim, width + 1, device=x.device, dtype=torch.float32)
    if dx.numel() > 0:
        div = _div(plan.vec, x, dx)
        _causal_conv_bwd_kernel[(batch * dim * plan.n_tiles,)](
            x, weight, bias, dy, dx, dpart,
            dim, L // div, plan.n_tiles,
            x.stride(0) // div, x.stride(1) // div, dx.stride(0) // div, dx.stride(1) // div,
            W=width, VEC=plan.vec, BLOCK_L=plan.block_l, HAS_BIAS=bias is not None, SILU=silu,
            FAST=not _interpreting(), DIV=div, num_warps=plan.bwd_warps,
        )
    part = dpart.sum((0, 1))  # [E, W + 1]; zeros when B = 0
    return dx, part[:, :width], part[:, width]


# --------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, block_l: int | None,
                num_warps: tuple[int, int] | None):
        if x.stride(-1) != 1:
            x = x.contiguous()
        weight = weight.contiguous()
        bias = bias.contiguous() if bias is not None else None
        plan = _Plan(x, weight.shape[1], block_l, num_warps)
        y = _fwd(x, weight, bias, silu, plan)
        # Only the inputs are saved: the backward recomputes the pre-activation.
        ctx.save_for_backward(x, weight, bias)
        ctx.meta = (silu, plan)
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor):
        x, weight, bias = ctx.saved_tensors
        silu, plan = ctx.meta
        dx, dweight, dbias = _bwd(dy.contiguous(), x, weight, bias, silu, plan)
        needs = ctx.needs_input_grad
        return (
            dx if needs[0] else None,
            dweight.to(weight.dtype) if needs[1] else None,
            dbias.to(bias.dtype) if bias is not None and needs[2] else None,
            None,
            None,
            None,
        )


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


@torch.compiler.disable
def causal_conv1d_triton(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = "silu",
    block_l: int | None = None,
    num_warps: tuple[int, int] | None = None,
) -> Tensor:
    """Fused Triton causal depthwise conv1d, forward and backward.

    Arguments are validated (and cast under autocast) by the caller
    (``seqmodels.kernels.causal_conv1d``); semantics and shapes are those of
    ``causal_conv1d_ref``: x ``[B, E, L]`` fp32 / bf16 / fp16 with unit position stride (any
    other strides; copied otherwise), weight ``[E, W]``, bias ``[E]`` or None, activation
    "silu" or None. Returns y ``[B, E, L]`` contiguous in x's dtype; arithmetic is fp32.

    block_l: positions per program, a power of two >= 16 (default 2048 on a GPU, 16 under the
    interpreter, at most the next power of two of L). num_warps: (forward, backward) warps per
    program (default: 16 positions per thread forward, 32 backward). Both are tuning knobs for
    ``benchmarks.causal_conv``. Gradients of weight and bias are summed from per-program
    partials in a fixed order (deterministic).

    torch.compile: a deliberate graph break (``torch.compiler.disable``); the kernels run eagerly
    between compiled regions.
    """
    if block_l is not None and (block_l < MIN_BLOCK_L or block_l & (block_l - 1)):
        raise ValueError(f"block_l: expected a power of two >= {MIN_BLOCK_L}, got {block_l}")
    if num_warps is not None and (len(num_warps) != 2 or not all(w in (1, 2, 4, 8, 16) for w in num_warps)):
        raise ValueError(f"num_warps: expected (forward, backward) powers of two up to 16, got {num_warps}")
    return _CausalConv1dTriton.apply(x, weight, bias, activation == "silu", block_l, num_warps)
