"""The reference CUDA selective scan (state-spaces/mamba), built from its sources on the GPU
machine, for ``python -m benchmarks.selective_scan --impls triton cuda --reference-src DIR``.

``DIR`` is a checkout of state-spaces/mamba (or any folder holding its ``csrc/selective_scan``),
kept outside the repository; nothing of it is copied here. :func:`build` compiles the extension
with ``torch.utils.cpp_extension.load`` for the GPU at hand (ninja; ``MAX_JOBS`` jobs, 16 by
default; a few minutes for one architecture) with the compiler flags of mamba's own build.
:func:`reference_scan` calls it through a small autograd Function of ours, with the argument
conventions of ``seqmodels.kernels.selective_scan`` (which follow the reference's).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

_NVCC_FLAGS = [
    "-O3", "-std=c++17", "--use_fast_math", "--expt-relaxed-constexpr", "--expt-extended-lambda",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
]
_MODULE = None


def build(src: str | os.PathLike):
    """Compile (or load from torch's extension cache) the reference extension from ``src``."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    root = Path(src)
    csrc = root / "csrc" / "selective_scan" if (root / "csrc").is_dir() else root
    sources = sorted(str(p) for p in csrc.glob("selective_scan*.c*") if p.suffix in (".cpp", ".cu"))
    if not any(s.endswith("selective_scan.cpp") for s in sources):
        raise SystemExit(f"--reference-src {src}: no csrc/selective_scan/selective_scan.cpp there")
    from torch.utils.cpp_extension import load

    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("MAX_JOBS", "16")
    _MODULE = load(name="selective_scan_cuda_ref", sources=sources, extra_include_paths=[str(csrc)],
                   extra_cflags=["-O3", "-std=c++17"],
                   extra_cuda_cflags=_NVCC_FLAGS + [f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"])
    return _MODULE


def _as_4d(X: torch.Tensor) -> torch.Tensor:
    # Variable B / C: (batch, N, L) -> (batch, 1 group, N, L), as the extension expects.
    return X.unsqueeze(1) if X.dim() == 3 else X


class _ReferenceScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ctx.squeeze = (B.dim() == 3, C.dim() == 3)
        B, C = _as_4d(B.contiguous()), _as_4d(C.contiguous())
        out, x, *rest = _MODULE.fwd(u.contiguous(), delta.contiguous(), A.contiguous(), B, C, D, z,
                                    delta_bias, delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        ctx.delta_softplus = delta_softplus
        return rest[0] if z is not None else out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = _MODULE.bwd(
            u, delta, A, B, C, D, z, delta_bias, dout.contiguous(), x, out, None, ctx.delta_softplus, False)
        dz = rest[0] if z is not None else None
        dB = dB.squeeze(1) if ctx.squeeze[0] else dB
        dC = dC.squeeze(1) if ctx.squeeze[1] else dC
        return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None


def reference_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The reference kernel's ``selective_scan_fn`` (y only), once :func:`build` has run."""
    if _MODULE is None:
        raise RuntimeError("call benchmarks.reference_scan.build(src) first")
    return _ReferenceScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
