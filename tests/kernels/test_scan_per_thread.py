"""The prototype forward with one channel per thread (``benchmarks.scan_per_thread``) against the
plain sequential reference, under the Triton interpreter on a CPU-only machine: chunked and
whole rows, several state counts, two warps per program; bad arguments are named."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from benchmarks import scan_per_thread  # noqa: E402
from seqmodels.kernels.selective_scan import selective_scan_ref  # noqa: E402


def _inputs(batch, dim, n, L, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(batch * 1000 + dim + n + L)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    return dict(
        u=r(batch, dim, L), delta=r(batch, dim, L, scale=0.5),
        A=-(torch.rand(dim, n, generator=g) * 3 + 0.1).to(device),
        B=r(batch, n, L), C=r(batch, n, L), D=torch.randn(dim, generator=g).to(device), z=r(batch, dim, L),
        delta_bias=(torch.rand(dim, generator=g) * -4).to(device),
    )


@pytest.mark.parametrize("batch, dim, n, L, chunk, warps", [
    (2, 32, 4, 48, 48, 1),   # one chunk per row
    (2, 32, 4, 48, 16, 1),   # three chunks: end states, carry, scan from the carried states
    (1, 64, 3, 32, 8, 2),    # N not a power of two, two warps per program
])
def test_per_thread_forward_matches_reference(batch, dim, n, L, chunk, warps, device) -> None:
    x = _inputs(batch, dim, n, L, device=device)
    y = scan_per_thread.forward(**x, chunk=chunk, warps=warps)
    y64 = selective_scan_ref(**{k: v.double() for k, v in x.items()}, delta_softplus=True)
    y32 = selective_scan_ref(**x, delta_softplus=True)
    err, ref_err = ((y.double() - y64).abs().max().item(), (y32.double() - y64).abs().max().item())
    assert err <= 4 * ref_err + 1e-5, (err, ref_err)


def test_per_thread_forward_names_bad_arguments(device) -> None:
    x = _inputs(1, 32, 4, 32, device=device)
    with pytest.raises(ValueError, match="chunk=12 must divide L=32"):
        scan_per_thread.forward(**x, chunk=12)
    with pytest.raises(ValueError, match="dim=32 must be a multiple of 32 x warps = 64"):
        scan_per_thread.forward(**x, chunk=16, warps=2)
    with pytest.raises(ValueError, match=r"B and C must be \(batch, N, L\)"):
        scan_per_thread.forward(**{**x, "B": x["B"][..., :16]}, chunk=16)
    with pytest.raises(ValueError, match="A must be real"):
        scan_per_thread.forward(**{**x, "A": x["A"].to(torch.complex64)}, chunk=16)
