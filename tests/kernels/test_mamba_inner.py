"""``mamba_inner``: the real Mamba mixer from in_proj's output to out_proj's, as one node.

The Triton path against the plain reference (``mamba_inner_ref``, float64 and same dtype) on the
forward and the gradient of every input, by the kernels' tolerance rule; the model's mixer
against its composed steps; dx and dz written into one gradient; bad arguments raise. CPU rows
run the Triton interpreter (scan tiles of 16 positions, so L = 40 is three tiles and the
backward starts from saved tile states).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from seqmodels.kernels import mamba_inner, mamba_inner_ref  # noqa: E402
from tests.kernels.tolerance import assert_close  # noqa: E402

_NAMES = ["xz", "conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log", "D",
          "out_proj_weight"]


def _inputs(batch: int, e: int, n: int, rank: int, L: int, d_model: int, device: torch.device,
            dtype: torch.dtype) -> dict:
    """A mixer's parameters at their usual scales (float32, as a model keeps them) and xz in
    ``dtype`` (bfloat16: the in_proj output under autocast)."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    dt = torch.exp(torch.rand(e, generator=g) * 4.6 - 6.9)  # 1e-3 .. 1e-1
    params = {
        "xz": rnd(batch, 2 * e, L),
        "conv_weight": rnd(e, 1, 4, scale=0.5),
        "conv_bias": rnd(e, scale=0.1),
        "x_proj_weight": rnd(rank + 2 * n, e, scale=e**-0.5),
        "dt_proj_weight": rnd(e, rank, scale=rank**-0.5),
        "dt_proj_bias": dt + torch.log(-torch.expm1(-dt)),
        "A_log": torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1),
        "D": 1.0 + rnd(e, scale=0.1),
        "out_proj_weight": rnd(d_model, e, scale=e**-0.5),
    }
    params = {k: v.to(device) for k, v in params.items()}
    params["xz"] = params["xz"].to(dtype)
    return params


def _run(fn, inputs: dict, w_out: torch.Tensor):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = fn(*[leaves[k] for k in _NAMES])
    (out.double() * w_out.to(out.device)).sum().backward()
    return out, {k: v.grad for k, v in leaves.items()}


def _triton(*args):
    return mamba_inner(*args, impl="triton")


@pytest.mark.parametrize(
    "batch, e, n, rank, L, dtype",
    [
        pytest.param(2, 3, 4, 2, 40, torch.float32, id="fp32-3tiles"),
        pytest.param(1, 4, 3, 1, 13, torch.float32, id="fp32-1tile-odd"),
        pytest.param(2, 3, 2, 2, 24, torch.bfloat16, id="bf16-2tiles"),
        # GPU: batch x channels below 8 programs per SM splits the sequence into chunks (the
        # backward's first pass reads z in place too); the 7M model's width runs one chunk per row.
        pytest.param(2, 64, 16, 4, 3000, torch.bfloat16, id="gpu-bf16-chunks", marks=pytest.mark.gpu),
        pytest.param(4, 512, 16, 16, 1024, torch.bfloat16, id="gpu-bf16-7m-width", marks=pytest.mark.gpu),
        pytest.param(2, 64, 16, 4, 2000, torch.float32, id="gpu-fp32-chunks", marks=pytest.mark.gpu),
    ],
)
def test_matches_reference(batch, e, n, rank, L, dtype, nan_empty, device: torch.device) -> None:
    inputs = _inputs(batch, e, n, rank, L, 5, device, dtype)
    w_out = torch.randn(batch, L, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, grads = _run(_triton, inputs, w_out)
    out_ref, grads_ref = _run(mamba_inner_ref, inputs, w_out)
    out64, grads64 = _run(mamba_inner_ref, {k: v.double() for k, v in inputs.items()}, w_out)
    ulp = dtype == torch.bfloat16
    # The interpreter rounds float32 to bfloat16 by truncation, a bias that sums up over the
    # positions in the parameter gradients: twice the usual factor there (GPU rows: the usual).
    factor = 4.0 if ulp and device.type == "cpu" else 2.0
    assert out.shape == (batch, L, 5) and out.dtype == dtype
    assert_close("out", out, out_ref, out64, bf16_ulp=ulp)
    for name in _NAMES:
        grad = grads[name]
        assert grad is not None and grad.dtype == inputs[name].dtype and grad.shape == inputs[name].shape, name
        assert torch.isfinite(grad).all(), name
        assert_close(f"d{name}", grad, grads_ref[name], grads64[name], factor=factor, bf16_ulp=ulp)


def test_strided_xz_no_grad_and_autocast(device: torch.device) -> None:
    """xz given as a transposed view (copied first), without autograd, under autocast: the same
    output."""
    inputs = _inputs(2, 3, 2, 1, 20, 4, device, torch.float32)
    args = [inputs[k] for k in _NAMES]
    ref = mamba_inner_ref(*args)
    xz_t = inputs["xz"].transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(mamba_inner(xz_t, *args[1:], impl="triton"), ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(mamba_inner(*args, impl="triton"), ref, rtol=1e-4, atol=1e-5)
    # Without a convolution bias.
    leaves = [a.detach().clone().requires_grad_() if a is not None else None
              for a in [*args[:2], None, *args[3:]]]
    out = mamba_inner(*leaves, impl="triton")
    torch.testing.assert_close(out, mamba_inner_ref(*[a.detach() if a is not None else None for a in leaves]),
                               rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(a.grad is not None for a in leaves if a is not None)
    # Autocast does not reach inside: products run in xz's dtype (float32 here).
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = mamba_inner(*args, impl="triton")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_model_mixer_uses_it_and_matches_the_composed_steps(monkeypatch, device: torch.device) -> None:
    from seqmodels.kernels.mamba_inner import triton_inner
    from seqmodels.models import Mamba

    torch.manual_seed(0)
    fused = Mamba(8, d_state=4, scan_impl="triton").to(device)
    plain = Mamba(8, d_state=4, scan_impl="ref").to(device)
    plain.load_state_dict(fused.state_dict())
    calls = []
    real = triton_inner.mamba_inner_triton
    monkeypatch.setattr(triton_inner, "mamba_inner_triton", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 24, 8, device=device)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = fused(x1), plain(x2)
    assert calls == [1]
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        scale = max(1.0, q.grad.abs().max().item())
        torch.testing.assert_close(p.grad / scale, q.grad / scale, rtol=1e-4, atol=1e-5, msg=name)


def test_bad_arguments(device: torch.device) -> None:
    inputs = _inputs(1, 3, 2, 1, 8, 4, device, torch.float32)

    def call(impl="triton", **over):
        args = {**inputs, **over}
        return mamba_inner(*[args[k] for k in _NAMES], impl=impl)

    with pytest.raises(ValueError, match="xz"):
        call(xz=inputs["xz"][:, :5])
    with pytest.raises(ValueError, match="x_proj_weight"):
        call(x_proj_weight=inputs["x_proj_weight"][:-1])
    with pytest.raises(ValueError, match="A_log"):
        call(A_log=inputs["A_log"][:2])
    with pytest.raises(ValueError, match="out_proj_weight"):
        call(out_proj_weight=inputs["out_proj_weight"].t())
    with pytest.raises(ValueError, match="conv_bias"):
        call(conv_bias=inputs["conv_bias"][:2])
    with pytest.raises(ValueError, match="Triton kernels only"):
        call(impl="torch")
