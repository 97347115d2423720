"""``benchmarks.scan_floor``: its kernel computes the recurrence it claims to time (checked against
float64 torch through the interpreter on the CPU, on the GPU when there is one), and bad
arguments are refused."""

from __future__ import annotations

import pytest
import torch

from benchmarks.scan_floor import floor_pass, floor_reference


def _inputs(threads: int, dstate: int, device: str):
    g = torch.Generator().manual_seed(0)
    dt0 = (torch.rand(threads, generator=g) * 0.1).to(device)
    A = -torch.arange(1, dstate + 1, dtype=torch.float32).to(device)
    B = torch.randn(dstate, generator=g).to(device)
    C = torch.randn(dstate, generator=g).to(device)
    return dt0, A, B, C


@pytest.mark.parametrize("mode", ["state", "scan"])
@pytest.mark.parametrize("num_warps", [1, 2])
def test_floor_kernel_matches_float64(mode: str, num_warps: int) -> None:
    dt0, A, B, C = _inputs(64, 4, "cuda" if torch.cuda.is_available() else "cpu")
    out = floor_pass(dt0, A, B, C, 7, mode, num_warps)
    ref = floor_reference(dt0, A, B, C, 7, mode)
    assert ref.abs().max() > 0.01
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


def test_floor_pass_refuses_bad_arguments() -> None:
    dt0, A, B, C = _inputs(48, 4, "cpu")
    with pytest.raises(ValueError, match="mode must be one of"):
        floor_pass(dt0, A, B, C, 3, "both")
    with pytest.raises(ValueError, match="48 threads, not a multiple of 64"):
        floor_pass(dt0, A, B, C, 3, "scan", num_warps=2)
