"""The one tolerance rule for kernel tests.

A tested output may be at most ``factor`` (2) times as far from a float64 run of the reference as
the same-dtype reference is, plus a small absolute floor (scaled by the magnitude of the values):
the kernel is allowed the error its dtype forces on the reference, not more.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Absolute floor per dtype of the tested output, relative to max(1, max |ref64|).
ATOL = {torch.float32: 1e-5, torch.complex64: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float64: 1e-12,
        torch.complex128: 1e-12}


def _real64(t: Tensor) -> Tensor:
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t.to(torch.complex128))
    return t.to(device="cpu", dtype=torch.float64)


def errors(out: Tensor, ref: Tensor, ref64: Tensor) -> tuple[float, float]:
    """(max |out - ref64|, max |ref - ref64|), complex tensors compared as pairs of reals."""
    o, r, g = _real64(out), _real64(ref), _real64(ref64)
    return (o - g).abs().max().item(), (r - g).abs().max().item()


def bf16_ulp_of(x: Tensor) -> Tensor:
    """One bfloat16 unit in the last place of |x| (8 significant bits), element-wise."""
    mag = x.abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
    return torch.exp2(torch.floor(torch.log2(mag)) - 7)


def assert_close(
    name: str,
    out: Tensor,
    ref: Tensor,
    ref64: Tensor,
    *,
    factor: float = 2.0,
    atol: float | None = None,
    bf16_ulp: bool = False,
) -> None:
    """Assert |out - ref64| <= factor * max|ref - ref64| + atol * max(1, max|ref64|) element-wise,
    plus one bf16 ulp of |ref64| when ``bf16_ulp`` (the Triton interpreter rounds float32 to
    bfloat16 by truncation, which can cost one ulp more than round-to-nearest).

    out: the tested tensor; ref: the reference run on the same inputs in the same dtype;
    ref64: the reference run on those inputs cast to float64. Prints both errors first."""
    if out.shape != ref64.shape or ref.shape != ref64.shape:
        raise AssertionError(f"{name}: shapes differ: out {tuple(out.shape)}, ref {tuple(ref.shape)}, "
                             f"ref64 {tuple(ref64.shape)}")
    o, r, g = _real64(out), _real64(ref), _real64(ref64)
    if atol is None:
        atol = ATOL[out.dtype]
    err_out = (o - g).abs()
    err_ref = (r - g).abs().max().item() if g.numel() else 0.0
    scale = max(1.0, g.abs().max().item() if g.numel() else 1.0)
    bound = factor * err_ref + atol * scale + (bf16_ulp_of(g) if bf16_ulp else 0.0)
    worst = err_out.max().item() if g.numel() else 0.0
    print(f"{name}: max err vs float64 {worst:.3e} (reference in same dtype {err_ref:.3e}), "
          f"floor {atol * scale:.3e}")
    assert not torch.isnan(o).any(), f"{name}: NaN in the tested output"
    bad = err_out > bound
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{name}: error {worst:.3e} exceeds {factor} x reference error {err_ref:.3e} + floor "
            f"{atol * scale:.3e} ({int(bad.sum())} of {bad.numel()} elements; first at {idx}: "
            f"out {o[idx].item():.6g}, float64 {g[idx].item():.6g})"
        )
