"""The fused RMSNorm kernels against their PyTorch references: outputs and every gradient, for
the norm alone and with the residual add fused in front of it (``add_rms_norm``).

On a CPU-only machine the kernel runs through the Triton interpreter (``TRITON_INTERPRET=1``, set
before any kernel module is imported); ``gpu`` rows use the widths of the DNA presets at a
training-sized number of rows. Outputs and gradients follow ``assert_close``'s rule against a
float64 run of the reference.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from seqmodels.kernels import add_rms_norm, add_rms_norm_ref, rms_norm, rms_norm_ref  # noqa: E402
from tests.kernels.tolerance import assert_close  # noqa: E402


def _check(shape: tuple[int, ...], x_dtype: torch.dtype, out_dtype: torch.dtype | None, device: torch.device,
           eps: float = 1e-5) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    d = shape[-1]
    x0 = (torch.randn(*shape, generator=g) * 3 + 0.5).to(device)
    w0 = (torch.rand(d, generator=g) + 0.5).to(device)
    dy0 = torch.randn(*shape, generator=g).to(device)
    results = {}
    for name, impl, xd, wd in (("triton", "triton", x_dtype, torch.float32), ("ref", "ref", x_dtype, torch.float32),
                               ("ref64", "ref", torch.float64, torch.float64)):
        x = x0.to(xd).clone().requires_grad_(True)
        w = w0.to(wd).clone().requires_grad_(True)
        od = torch.float64 if name == "ref64" else out_dtype
        y = rms_norm(x, w, eps, od, impl=impl)
        (y.to(torch.float64) * dy0.to(torch.float64)).sum().backward()
        results[name] = (y, x.grad, w.grad)
    assert results["triton"][0].dtype == (out_dtype or torch.float32)
    assert results["triton"][1].dtype == x_dtype
    for i, what in enumerate(("y", "dx", "dweight")):
        assert_close(what, results["triton"][i], results["ref"][i], results["ref64"][i])


@pytest.mark.parametrize("shape", [(3, 5, 24), (7, 128), (1, 33), (2, 0, 16)], ids=str)
@pytest.mark.parametrize("x_dtype, out_dtype", [(torch.float32, None), (torch.float32, torch.bfloat16),
                                                (torch.bfloat16, torch.float32)], ids=["fp32", "fp32-to-bf16", "bf16-in"])
def test_kernel_equals_reference(shape, x_dtype, out_dtype, device):
    _check(shape, x_dtype, out_dtype, device)


def test_module_uses_the_op_and_keeps_its_contract(device):
    """RMSNorm returns the weight's dtype by default and the asked dtype otherwise."""
    from seqmodels.models import RMSNorm

    norm = RMSNorm(16).to(device)
    x = torch.randn(2, 3, 16, device=device)
    assert norm(x).dtype == torch.float32
    assert norm(x, out_dtype=torch.bfloat16).dtype == torch.bfloat16
    torch.testing.assert_close(norm(x), rms_norm_ref(x, norm.weight, norm.eps))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight=torch.ones(3)), "weight must be"),
        (dict(eps=0.0), "eps must be positive"),
        (dict(impl="cuda"), "impl must be one of"),
        (dict(out_dtype=torch.int32, impl="triton"), "out_dtype must be"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(x=torch.randn(2, 4), weight=torch.ones(4), eps=1e-5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rms_norm(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [128, 256], ids=["1.4m", "7m"])
def test_gpu_training_sized(d):
    _check((64, 1024, d), torch.float32, torch.bfloat16, torch.device("cuda"))


def _check_add(shape, hidden_dtype, residual_dtype, sum_dtype, out_dtype, sum_grad, device, eps=1e-5):
    """add_rms_norm against its reference: normed, the sum, and the gradients of hidden, residual
    and weight, with a gradient reaching the sum from later blocks (``sum_grad``) or not."""
    g = torch.Generator().manual_seed(sum(shape) + 7)
    d = shape[-1]
    h0 = (torch.randn(*shape, generator=g) * 2).to(device)
    r0 = (torch.randn(*shape, generator=g) * 3 + 0.5).to(device)
    w0 = (torch.rand(d, generator=g) + 0.5).to(device)
    dy0 = torch.randn(*shape, generator=g).to(device, torch.float64)
    ds0 = torch.randn(*shape, generator=g).to(device, torch.float64)
    results = {}
    for name, impl in (("triton", "triton"), ("ref", "ref"), ("ref64", "ref")):
        wide = name == "ref64"
        h = h0.to(torch.float64 if wide else hidden_dtype).clone().requires_grad_(True)
        r = None if residual_dtype is None else r0.to(torch.float64 if wide else residual_dtype).clone().requires_grad_(True)
        w = w0.to(torch.float64 if wide else torch.float32).clone().requires_grad_(True)
        y, s = add_rms_norm(h, r, w, eps, torch.float64 if wide else out_dtype,
                            torch.float64 if wide else sum_dtype, impl=impl)
        loss = (y.to(torch.float64) * dy0).sum()
        if sum_grad:
            loss = loss + (s.to(torch.float64) * ds0).sum()
        loss.backward()
        results[name] = (y, s, h.grad, w.grad) + ((r.grad,) if r is not None else ())
    out = results["triton"]
    assert (out[0].dtype, out[1].dtype, out[2].dtype) == (out_dtype or torch.float32, sum_dtype, hidden_dtype)
    if residual_dtype is not None:
        assert out[4].dtype == residual_dtype
    for i, what in enumerate(("normed", "sum", "dhidden", "dweight", "dresidual")[:len(out)]):
        assert_close(what, out[i], results["ref"][i], results["ref64"][i])


@pytest.mark.parametrize("shape", [(3, 5, 24), (1, 33), (2, 0, 16)], ids=str)
@pytest.mark.parametrize(
    "hidden_dtype, residual_dtype, sum_dtype, out_dtype",
    [
        (torch.bfloat16, torch.float32, torch.float32, torch.bfloat16),  # a block of the bf16 model
        (torch.float32, None, torch.float32, torch.bfloat16),  # the first block: no residual yet
        (torch.float32, torch.float32, torch.float32, None),  # the CPU model
        (torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.bfloat16),  # a bf16 stream
    ],
    ids=["bf16-into-fp32", "first", "fp32", "bf16-stream"],
)
@pytest.mark.parametrize("sum_grad", [True, False], ids=["sum-used", "sum-unused"])
def test_add_kernel_equals_reference(shape, hidden_dtype, residual_dtype, sum_dtype, out_dtype, sum_grad, device):
    _check_add(shape, hidden_dtype, residual_dtype, sum_dtype, out_dtype, sum_grad, device)


def test_add_reference_is_the_sum_then_the_norm():
    h, r, w = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(4, 8), torch.rand(8) + 0.5
    y, s = add_rms_norm_ref(h, r, w, 1e-5, torch.bfloat16)
    torch.testing.assert_close(s, r + h.float(), rtol=0, atol=0)
    torch.testing.assert_close(y, rms_norm_ref(r + h.float(), w, 1e-5, torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(residual=torch.randn(2, 5)), "residual must have hidden's shape"),
        (dict(weight=torch.ones(3)), "weight must be"),
        (dict(eps=-1.0), "eps must be positive"),
        (dict(sum_dtype=torch.int64, impl="triton"), "sum_dtype must be"),
        (dict(hidden=torch.zeros(())), "hidden must be a tensor"),
    ],
)
def test_add_bad_arguments_name_the_argument(kwargs, match):
    args = dict(hidden=torch.randn(2, 4), residual=torch.randn(2, 4), weight=torch.ones(4), eps=1e-5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        add_rms_norm(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [128, 256], ids=["1.4m", "7m"])
def test_gpu_add_training_sized(d):
    _check_add((64, 1024, d), torch.bfloat16, torch.float32, torch.float32, torch.bfloat16, True, torch.device("cuda"))
