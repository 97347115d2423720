"""The fused Triton causal conv1d against its reference, forward and every gradient; the
reference against nn.Conv1d as the Mamba mixer uses it; autocast; argument validation.

On a CPU-only machine the kernels run through the Triton interpreter (``TRITON_INTERPRET=1``,
set by tests/conftest.py before any kernel module is imported), with tiles of 16 positions so
that small L crosses tile boundaries; rows marked ``gpu`` run the speed shapes where CUDA is
present. Each row compares y and the gradients of x, weight and bias with ``assert_close``: the
error against a float64 reference may be at most twice the error of the reference run in the
row's dtype, plus a small floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqmodels.kernels import causal_conv1d, causal_conv1d_ref
from tests.kernels.tolerance import assert_close

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Case:
    batch: int
    dim: int
    L: int
    width: int = 4
    dtype: str = "fp32"
    silu: bool = True
    bias: bool = True
    layout: str = "slice"  # "slice": channels 0..E-1 of a [B, 2E, L] tensor; "contig"; "transposed"
    conv_weight: bool = False  # weight in nn.Conv1d's [E, 1, W] layout
    block_l: int | None = None  # positions per program (None: the default, 16 under the interpreter)


def _make_inputs(case: Case, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
    """x [B, E, L] in the row's layout and dtype; fp32 weight (scale 1/sqrt(W)) and bias as
    nn.Conv1d holds them, so pre-activations are O(1) and SiLU's curvature matters.
    Drawn on the device, so the GPU rows' large inputs are not built on the host."""
    g = torch.Generator(device=device).manual_seed(seed)
    B, E, L, W = case.batch, case.dim, case.L, case.width
    dt = DTYPES[case.dtype]

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device)

    if case.layout == "slice":
        x = randn(B, 2 * E, L).to(dt)[:, :E]
    elif case.layout == "transposed":  # position stride != 1: the kernel gets a contiguous copy
        x = randn(B, L, E).to(dt).transpose(1, 2)
    else:
        x = randn(B, E, L).to(dt)
    weight = randn(E, W) / W**0.5
    if case.conv_weight:
        weight = weight.unsqueeze(1)
    bias = randn(E) * 0.5 if case.bias else None
    return x, weight, bias


def _weights(case: Case, device: torch.device) -> torch.Tensor:
    """Fixed random float64 weights of the loss sum(y * wy)."""
    g = torch.Generator(device=device).manual_seed(1)
    return torch.randn(case.batch, case.dim, case.L, generator=g, device=device, dtype=torch.float64)


def _run(fn, x, weight, bias, wy: torch.Tensor, **kw):
    """y and the gradients (x, weight, bias) of sum(y * wy), on fresh leaves that keep the
    inputs' strides (the channel slice stays a slice)."""
    leaf = x.detach().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    b = bias.detach().clone().requires_grad_() if bias is not None else None
    y = fn(leaf, w, b, **kw)
    (y.double() * wy).sum().backward()
    return y, {"x": leaf.grad, "weight": w.grad, "bias": b.grad if b is not None else None}


def _triton(x, w, b, activation, block_l=None):
    if block_l is None:
        return causal_conv1d(x, w, b, activation, impl="triton")
    from seqmodels.kernels.causal_conv.triton_conv import causal_conv1d_triton

    return causal_conv1d_triton(x, w.reshape(w.shape[0], -1), b, activation, block_l=block_l)


def _no_tf32():
    """cuDNN without TF32 (on by default for float32 convolutions on Ampere and later), so the
    float32 conv1d on a GPU is a float32 computation; cuDNN's other settings unchanged."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                       allow_tf32=False)


def _to64(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.to(torch.float64) if t is not None else None


def check_case(case: Case, device: torch.device) -> None:
    x, weight, bias = _make_inputs(case, device)
    act = "silu" if case.silu else None
    wy = _weights(case, device)
    y, grads = _run(_triton, x, weight, bias, wy, activation=act, block_l=case.block_l)
    with _no_tf32():
        y_ref, grads_ref = _run(causal_conv1d_ref, x, weight, bias, wy, activation=act)
    y64, grads64 = _run(causal_conv1d_ref, _to64(x), _to64(weight), _to64(bias), wy, activation=act)

    ulp = case.dtype == "bf16" and device.type == "cpu"  # the interpreter rounds to bf16 by truncation
    assert y.dtype == x.dtype and y.shape == x.shape and y.is_contiguous()
    assert_close("y", y, y_ref, y64, bf16_ulp=ulp)
    for name, like in (("x", x), ("weight", weight), ("bias", bias)):
        if like is None:
            assert grads[name] is None
            continue
        grad = grads[name]
        assert grad is not None and grad.dtype == like.dtype and grad.shape == like.shape, name
        assert_close(f"d{name}", grad, grads_ref[name], grads64[name], bf16_ulp=ulp)


# ---- CPU rows (interpreter) ------------------------------------------------------------------
# Odd L crosses three 16-position tiles; L = 48 is a whole number of tiles with VEC-aligned
# rows (the vector-load path); L < W leaves positions with no full window.
_CPU_CASES = [
    pytest.param(Case(2, 3, 37, 4, "fp32"), id="fp32-W4-silu-slice-L37"),
    pytest.param(Case(2, 3, 37, 3, "fp32", silu=False), id="fp32-W3-none-slice-L37"),
    pytest.param(Case(1, 5, 37, 2, "fp32", bias=False, layout="contig"), id="fp32-W2-silu-nobias-L37"),
    pytest.param(Case(2, 3, 48, 4, "fp32", conv_weight=True), id="fp32-W4-silu-aligned-L48-conv-weight"),
    pytest.param(Case(1, 3, 37, 5, "fp32", silu=False, bias=False), id="fp32-W5-none-nobias"),
    pytest.param(Case(1, 3, 37, 8, "fp32"), id="fp32-W8-silu"),
    pytest.param(Case(2, 3, 3, 4, "fp32"), id="fp32-W4-L3-shorter-than-W"),
    pytest.param(Case(2, 3, 37, 4, "bf16"), id="bf16-W4-silu-slice-L37"),
    pytest.param(Case(2, 3, 37, 3, "bf16", bias=False), id="bf16-W3-silu-nobias"),
    pytest.param(Case(1, 5, 37, 2, "bf16", silu=False), id="bf16-W2-none"),
    pytest.param(Case(2, 3, 48, 4, "bf16", silu=False, bias=False), id="bf16-W4-none-nobias-aligned-L48"),
    pytest.param(Case(2, 2, 1, 4, "bf16"), id="bf16-W4-L1"),
    pytest.param(Case(1, 3, 37, 4, "fp16", layout="transposed"), id="fp16-W4-silu-transposed"),
    pytest.param(Case(1, 2, 100, 4, "bf16", block_l=32), id="bf16-W4-silu-L100-block32"),
]


@pytest.mark.parametrize("case", _CPU_CASES)
def test_triton_conv_matches_reference(case: Case, device: torch.device) -> None:
    check_case(case, device)


def test_triton_conv_writes_every_output(nan_empty, device: torch.device) -> None:
    """torch.empty returns NaN here: an output or gradient the kernels forget to write shows up."""
    x, weight, bias = _make_inputs(Case(2, 3, 37), device)
    y, grads = _run(_triton, x, weight, bias, _weights(Case(2, 3, 37), device), activation="silu")
    for name, t in [("y", y), *grads.items()]:
        assert not torch.isnan(t).any(), name


@pytest.mark.parametrize("impl", ["ref", "triton"])
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "none"])
def test_matches_mixer_conv1d(impl: str, silu: bool, device: torch.device) -> None:
    """causal_conv1d(x, conv.weight, conv.bias) is the mixer's F.silu(conv(u)[..., :L]) on its
    channel slice u of in_proj's [B, 2E, L] output (the reference exactly: the same conv1d)."""
    torch.manual_seed(0)
    E, W, L = 6, 4, 37
    conv = nn.Conv1d(E, E, kernel_size=W, groups=E, padding=W - 1, bias=True).to(device)
    xz = torch.randn(2, 2 * E, L, device=device)
    u = xz[:, :E].detach().requires_grad_()
    with _no_tf32():
        y_mixer = conv(u)[..., :L]
        y_mixer = F.silu(y_mixer) if silu else y_mixer
        dy = torch.randn_like(y_mixer)
        g_mixer = torch.autograd.grad(y_mixer, (u, conv.weight, conv.bias), dy)
        y = causal_conv1d(u, conv.weight, conv.bias, "silu" if silu else None, impl=impl)
        g = torch.autograd.grad(y, (u, conv.weight, conv.bias), dy)
    assert g[1].shape == conv.weight.shape
    if impl == "ref" and device.type == "cpu":  # the same conv1d call (cuDNN may pick other algorithms)
        assert torch.equal(y, y_mixer)
        for a, b in zip(g, g_mixer):
            assert torch.equal(a, b)
    else:
        torch.testing.assert_close(y, y_mixer, rtol=1e-5, atol=1e-6)
        for a, b in zip(g, g_mixer):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_autocast_casts_like_conv1d(impl: str, device: torch.device) -> None:
    """Under autocast the conv runs in the autocast dtype, as nn.Conv1d does: y in bfloat16,
    gradients in the dtypes of the float32 leaves."""
    torch.manual_seed(0)
    E, W, L = 4, 4, 37
    conv = nn.Conv1d(E, E, kernel_size=W, groups=E, padding=W - 1, bias=True).to(device)
    x = torch.randn(2, E, L, device=device, requires_grad=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y_mixer = F.silu(conv(x)[..., :L])
        y = causal_conv1d(x, conv.weight, conv.bias, "silu", impl=impl)
    assert y.dtype == y_mixer.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_mixer.float(), rtol=2e-2, atol=2e-2)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, conv.weight, conv.bias), dy)
    g_mixer = torch.autograd.grad(y_mixer, (x, conv.weight, conv.bias), dy)
    for a, b in zip(g, g_mixer):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)


def test_training_with_triton_matches_reference(device: torch.device) -> None:
    """Convergence: a small conv-only model (conv + SiLU, a pointwise mix, a second conv) fitted
    to a teacher for 15 Adam steps gives the same losses with the fused kernels and the
    reference."""
    E, W, L = 4, 4, 16
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, E, L, generator=g, device=device)
    teacher = [torch.randn(E, W, generator=g, device=device) for _ in range(2)]
    target = causal_conv1d_ref(causal_conv1d_ref(x, teacher[0], None, "silu"), teacher[1], None, None)
    init = [torch.randn(E, W, generator=g, device=device) * 0.5, torch.randn(E, generator=g, device=device),
            torch.randn(E, E, generator=g, device=device) / E**0.5, torch.randn(E, W, generator=g, device=device) * 0.5]
    losses = {}
    for impl in ("ref", "triton"):
        w1, b1, mix, w2 = (t.clone().requires_grad_() for t in init)
        opt = torch.optim.Adam([w1, b1, mix, w2], lr=0.1)
        losses[impl] = []
        for _ in range(15):
            h = causal_conv1d(x, w1, b1, "silu", impl=impl)
            out = causal_conv1d(torch.einsum("fe,bel->bfl", mix, h), w2, None, None, impl=impl)
            loss = F.mse_loss(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[impl].append(loss.item())
    assert losses["ref"][-1] < 0.5 * losses["ref"][0]  # it learns
    torch.testing.assert_close(torch.tensor(losses["triton"]), torch.tensor(losses["ref"]), rtol=1e-4, atol=1e-6)


def test_empty_batch(device: torch.device) -> None:
    x = torch.randn(0, 3, 9, device=device, requires_grad=True)
    w = torch.randn(3, 4, device=device, requires_grad=True)
    y = causal_conv1d(x, w, None, "silu", impl="triton")
    assert y.shape == (0, 3, 9)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_auto_picks_ref_on_cpu() -> None:
    x, weight, bias = _make_inputs(Case(1, 3, 9), torch.device("cpu"))
    y = causal_conv1d(x, weight, bias)
    assert torch.equal(y, causal_conv1d_ref(x, weight, bias))


# ---- argument validation ---------------------------------------------------------------------
_b, _e, _l, _w = 2, 3, 7, 4


def _good() -> dict:
    return dict(x=torch.randn(_b, _e, _l), weight=torch.randn(_e, _w), bias=torch.randn(_e), activation="silu")


_BAD = [
    ("x-2d", "x", dict(x=torch.randn(_e, _l))),
    ("x-4d", "x", dict(x=torch.randn(_b, _e, _l, 1))),
    ("x-int", "x", dict(x=torch.ones(_b, _e, _l, dtype=torch.int64))),
    ("x-empty-L", "x", dict(x=torch.randn(_b, _e, 0))),
    ("x-no-channels", "x", dict(x=torch.randn(_b, 0, _l), weight=torch.randn(0, _w), bias=torch.randn(0))),
    ("x-not-tensor", "x", dict(x=[[1.0]])),
    ("weight-channels", "weight", dict(weight=torch.randn(_e + 1, _w))),
    ("weight-conv-layout-groups", "weight", dict(weight=torch.randn(_e, 2, _w))),
    ("weight-1d", "weight", dict(weight=torch.randn(_w))),
    ("weight-W1", "weight", dict(weight=torch.randn(_e, 1))),
    ("weight-W9", "weight", dict(weight=torch.randn(_e, 9))),
    ("weight-other-device", "weight", dict(weight=torch.randn(_e, _w, device="meta"))),
    ("bias-shape", "bias", dict(bias=torch.randn(1, _e))),
    ("bias-channels", "bias", dict(bias=torch.randn(_e + 1))),
    ("bias-int", "bias", dict(bias=torch.ones(_e, dtype=torch.int32))),
    ("activation-name", "activation", dict(activation="relu")),
    ("impl-name", "impl", dict(impl="cuda")),
    ("float64-triton", "x", dict(x=torch.randn(_b, _e, _l, dtype=torch.float64), impl="triton")),
    ("float64-weight-triton", "weight", dict(weight=torch.randn(_e, _w, dtype=torch.float64), impl="triton")),
]


@pytest.mark.parametrize("fn", ["op", "ref"])
@pytest.mark.parametrize("arg,changes", [(a, c) for _, a, c in _BAD], ids=[i for i, _, _ in _BAD])
def test_bad_argument_is_named(arg: str, changes: dict, fn: str, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so the float64 rows fail on dtype, not on device
    kw = _good() | changes
    if fn == "ref":
        if "impl" in kw:
            pytest.skip("the reference has no impl argument")
        op = causal_conv1d_ref
    else:
        op = causal_conv1d
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        op(**kw)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"^impl: 'triton' needs CUDA tensors"):
        causal_conv1d(**_good(), impl="triton")


def test_bad_block_l_is_named() -> None:
    from seqmodels.kernels.causal_conv.triton_conv import causal_conv1d_triton

    kw = _good()
    for block_l in (8, 24):
        with pytest.raises(ValueError, match=r"^block_l:"):
            causal_conv1d_triton(kw["x"], kw["weight"], kw["bias"], "silu", block_l=block_l)


# ---- GPU rows (the speed shapes) ---------------------------------------------------------------
_GPU_CASES = [
    pytest.param(Case(1, 512, 2**18, 4, "bf16"), id="bf16-B1-E512-L2^18-slice"),  # 2^20 in the benchmark
    pytest.param(Case(64, 512, 1024, 4, "bf16"), id="bf16-B64-E512-L1024-slice"),
    pytest.param(Case(8, 96, 1000, 4, "bf16", layout="contig"), id="bf16-B8-E96-L1000-rows-not-16-divisible"),
    pytest.param(Case(4, 64, 4093, 3, "fp32", bias=False, silu=False), id="fp32-W3-odd-L-unaligned"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", _GPU_CASES)
def test_triton_conv_matches_reference_gpu(case: Case, device: torch.device) -> None:
    check_case(case, device)


@pytest.mark.gpu
def test_triton_conv_backward_is_deterministic_gpu(device: torch.device) -> None:
    """dweight and dbias are summed from per-program partials in a fixed order: bitwise repeatable."""
    case = Case(4, 256, 2**16, 4, "bf16")
    x, weight, bias = _make_inputs(case, device)
    wy = _weights(case, device)
    first = _run(_triton, x, weight, bias, wy, activation="silu")[1]
    second = _run(_triton, x, weight, bias, wy, activation="silu")[1]
    for name in ("x", "weight", "bias"):
        assert torch.equal(first[name], second[name]), name
