"""The fused RMSNorm kernel against its PyTorch reference: output and both gradients.

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

from seqmodels.kernels import rms_norm, rms_norm_ref  # noqa: E402
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
