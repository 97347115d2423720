"""``selective_scan_linear``: the scan and a linear map over its channels, for checkpointed blocks.

Against the reference scan followed by the same product, forward and every gradient (the
first pass's backward writes y itself and starts from the kept tile states), and against the
unfused Triton scan followed by the product; the recompute pass runs no scan; a second backward
and bad arguments raise. CPU rows run the Triton interpreter.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from seqmodels.kernels import selective_scan_linear  # noqa: E402
from seqmodels.kernels.selective_scan import selective_scan_ref  # noqa: E402
from seqmodels.kernels.selective_scan.triton_scan import selective_scan_triton  # noqa: E402
from tests.kernels.test_selective_scan_triton import _ORDER, Case, _make_inputs, _to64  # noqa: E402
from tests.kernels.tolerance import assert_close  # noqa: E402

_NAMES = _ORDER[:8] + ["weight"]


def _inputs(case: Case, device: torch.device, out_features: int) -> dict:
    inputs = _make_inputs(case, device)
    del inputs["initial_state"]
    g = torch.Generator(device="cpu").manual_seed(5)
    weight = torch.randn(out_features, case.dim, generator=g) / case.dim**0.5
    inputs["weight"] = weight.to(device=device, dtype=inputs["u"].dtype)
    return inputs


def _ref(u, delta, A, B, C, D, z, delta_bias, weight, delta_softplus):
    y = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return torch.einsum("oe,bel->blo", weight, y.to(weight.dtype))


def _plain(u, delta, A, B, C, D, z, delta_bias, weight, delta_softplus):
    """The same kernels without the fusion: the Triton scan (training forward), then the product."""
    y = selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return torch.einsum("oe,bel->blo", weight, y.to(weight.dtype))


def _fused(u, delta, A, B, C, D, z, delta_bias, weight, delta_softplus):
    return selective_scan_linear(u, delta, A, B, C, weight, D=D, z=z, delta_bias=delta_bias,
                                 delta_softplus=delta_softplus, impl="triton", checkpoint_pass="first")


def _run(fn, inputs: dict, case: Case, w_out: torch.Tensor):
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    out = fn(*[leaves[k] for k in _NAMES], case.softplus)
    (out.double() * w_out.to(out.device)).sum().backward()
    return out, {k: v.grad for k, v in leaves.items() if v is not None}


def check(case: Case, device: torch.device, out_features: int = 5) -> None:
    inputs = _inputs(case, device, out_features)
    w_out = torch.randn(case.batch, case.L, out_features, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    out, grads = _run(_fused, inputs, case, w_out)
    # Against the unfused Triton path: the same scan arithmetic, so equal up to the order of the
    # atomic sums and of the products' reductions (and bf16 roundings of the product's operands).
    out_plain, grads_plain = _run(_plain, inputs, case, w_out)
    tight = dict(rtol=2e-2, atol=2e-2) if case.dtype == "bf16" else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, out_plain, **tight)
    for name, grad in grads.items():
        scale = max(1.0, grads_plain[name].abs().max().item())
        torch.testing.assert_close(grad / scale, grads_plain[name] / scale, **tight, msg=f"d{name} vs unfused")
    # Against the sequential reference, by the kernels' tolerance rule.
    out_ref, grads_ref = _run(_ref, inputs, case, w_out)
    out64, grads64 = _run(_ref, {k: _to64(v) for k, v in inputs.items()}, case, w_out)
    ulp = case.dtype == "bf16"
    assert out.shape == (case.batch, case.L, out_features) and out.dtype == inputs["weight"].dtype
    assert_close("out", out, out_ref, out64, bf16_ulp=ulp)
    assert set(grads) == {k for k, v in inputs.items() if v is not None}
    for name, grad in grads.items():
        assert grad.dtype == inputs[name].dtype and grad.shape == inputs[name].shape, name
        assert_close(f"d{name}", grad, grads_ref[name], grads64[name], bf16_ulp=ulp)


# Under the interpreter tiles hold 16 positions: L = 40 is three tiles, so the backward starts
# from kept tile states.
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(2, 3, 4, 40, None, b="var", c="const"), id="real-fp32-3tiles"),
        pytest.param(Case(1, 2, 3, 37, None, complex=True, b="group", c="var", groups=2, has_bias=False),
                     id="cplx-fp32-3tiles"),
        pytest.param(Case(1, 3, 2, 12, None, dtype="bf16", b="const", c="var", has_z=False, has_D=False),
                     id="real-bf16-1tile-no-z-no-D"),
    ],
)
def test_scan_linear_matches_reference(case: Case, nan_empty, device: torch.device) -> None:
    check(case, device)


def test_recompute_pass_runs_no_scan_and_has_no_backward(monkeypatch, device: torch.device) -> None:
    from seqmodels.kernels.selective_scan import triton_scan as ts

    case = Case(1, 2, 3, 20, None)
    inputs = _inputs(case, device, 3)
    calls = []
    real_fwd = ts._fwd
    monkeypatch.setattr(ts, "_fwd", lambda *a, **k: calls.append(1) or real_fwd(*a, **k))
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
    kwargs = {k: leaves[k] for k in ("D", "z", "delta_bias")}
    args = [leaves[k] for k in ("u", "delta", "A", "B", "C", "weight")]
    out = selective_scan_linear(*args, **kwargs, delta_softplus=True, impl="triton", checkpoint_pass="recompute")
    assert calls == [] and out.shape == (1, 20, 3) and not out.any()
    with pytest.raises(RuntimeError, match="recompute"):
        out.sum().backward()
    # The first pass's states serve one backward.
    out = selective_scan_linear(*args, **kwargs, delta_softplus=True, impl="triton", checkpoint_pass="first")
    assert calls == [1]
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        out.sum().backward()


def test_bad_arguments(device: torch.device) -> None:
    inputs = _inputs(Case(1, 2, 3, 8, None), device, 3)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    with pytest.raises(ValueError, match="weight"):
        selective_scan_linear(*args, inputs["weight"].t(), impl="triton")
    with pytest.raises(ValueError, match="checkpoint_pass"):
        selective_scan_linear(*args, inputs["weight"], impl="triton", checkpoint_pass="second")
    with pytest.raises(ValueError, match="Triton kernels only"):
        selective_scan_linear(*args, inputs["weight"], impl="torch")
    with pytest.raises(ValueError, match="delta"):
        selective_scan_linear(args[0], args[1][..., :-1], *args[2:], inputs["weight"], impl="triton")


_GPU_CASES = [
    # batch x dim below 8 programs per SM: the sequence is split into chunks (carry passes).
    pytest.param(Case(1, 64, 16, 8192, None, dtype="bf16", b="var", c="var"), id="real-bf16-8k-chunks"),
    # complex bf16: in fp32 at (2, 64, 16, 3000) one ddelta element of the chunked scan itself
    # (fused or not) is 1.3x past the tolerance floor (benchmarks/RESULTS.md)
    pytest.param(Case(2, 64, 16, 3000, None, complex=True, dtype="bf16", b="var", c="group", groups=2),
                 id="cplx-bf16-3000-chunks"),
    pytest.param(Case(4, 512, 16, 1024, None, dtype="bf16", b="var", c="var"), id="real-bf16-1k-one-chunk"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", _GPU_CASES)
def test_scan_linear_matches_reference_gpu(case: Case, device: torch.device) -> None:
    check(case, device, out_features=32)


def test_scan_linear_per_thread_backward_matches_reference(monkeypatch, device: torch.device) -> None:
    """The backward that also writes y (checkpointed blocks) on the per-thread backward kernel,
    forced: three tiles, so it starts from kept tile states."""
    from seqmodels.kernels.selective_scan import triton_scan as ts

    monkeypatch.setattr(ts, "_BWD_PER_THREAD", True)
    with_y = []
    real = ts._bwd_thread
    monkeypatch.setattr(ts, "_bwd_thread", lambda *a: with_y.append(a[-2] is not None) or real(*a))
    check(Case(2, 3, 4, 40, None, b="var", c="const"), device)
    assert True in with_y
