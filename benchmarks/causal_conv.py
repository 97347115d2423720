"""Median forward and forward+backward time of the causal depthwise conv1d on the GPU.

    python -m benchmarks.causal_conv                          # both speed shapes, triton vs torch
    python -m benchmarks.causal_conv --impls triton torch ref --shapes 1
    python -m benchmarks.causal_conv --block-l 1024 2048 4096 # sweep the Triton tile length
    python -m benchmarks.causal_conv --block-l 2048 --warps 4 4     # and the (forward, backward) warps

Shapes are the speed targets (batch, E, L, W) in bfloat16, with x the channel slice of a
[B, 2E, L] tensor and float32 Conv1d parameters under bf16 autocast, as in the Mamba mixer.
Implementations:

- ``triton``: ``causal_conv1d(..., impl="triton")`` (one kernel forward, one backward);
- ``torch``: what the mixer runs today, ``F.silu(conv1d(x)[..., :L])`` (cuDNN / PyTorch's
  depthwise kernels in bf16, a separate SiLU);
- ``ref``: ``causal_conv1d_ref`` (the same conv1d in float32, with casts around it).

Each time is the median of ``--reps`` runs timed with CUDA events after a warm-up call, with the
L2 cache flushed before every run. GB/s counts the least DRAM traffic the op needs: forward
reads x and writes y (2 x B E L elements); forward + backward adds reading x and dy and writing
dx (5 x B E L in all).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.timing import bench_row, median_cuda_ms
from seqmodels.kernels import causal_conv1d_ref

SHAPES = [  # batch, E, L, W
    (1, 512, 2**20, 4),
    (64, 512, 1024, 4),
]
DTYPE = torch.bfloat16


def make_inputs(batch: int, dim: int, length: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    xz = torch.randn(batch, 2 * dim, length, generator=g, device=dev, dtype=DTYPE)
    x = xz[:, :dim].requires_grad_()  # strides (2E L, L, 1), as the mixer's u
    weight = (torch.randn(dim, 1, width, generator=g, device=dev) / width**0.5).requires_grad_()
    bias = (torch.randn(dim, generator=g, device=dev) * 0.5).requires_grad_()
    return x, weight, bias


def conv_fn(impl: str, block_l: int | None = None, num_warps: tuple[int, int] | None = None):
    """The op as f(x, weight, bias) -> y for one implementation."""
    if impl == "torch":
        return lambda x, w, b: F.silu(F.conv1d(x, w, b, padding=w.shape[-1] - 1, groups=x.shape[1])[..., : x.shape[-1]])
    if impl == "ref":
        return lambda x, w, b: causal_conv1d_ref(x, w, b, "silu")
    from seqmodels.kernels.causal_conv.ref import autocast_inputs
    from seqmodels.kernels.causal_conv.triton_conv import causal_conv1d_triton

    def triton_fn(x, w, b):
        # What causal_conv1d(impl="triton") does after validation, with a tile length to sweep.
        x, w, b = autocast_inputs(x, w, b)
        return causal_conv1d_triton(x, w.reshape(w.shape[0], -1), b, "silu", block_l=block_l, num_warps=num_warps)

    return triton_fn


def bench(impl: str, shape: tuple, block_l: int | None, num_warps: tuple[int, int] | None, reps: int) -> dict:
    x, weight, bias = make_inputs(*shape)
    f = conv_fn(impl, block_l, num_warps)
    with torch.autocast("cuda", dtype=DTYPE):
        y = f(x, weight, bias)
    dy = torch.randn_like(y)

    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=DTYPE):
            f(x, weight, bias)

    def fwd_bwd():
        with torch.autocast("cuda", dtype=DTYPE):
            out = f(x, weight, bias)
        torch.autograd.grad(out, (x, weight, bias), dy)

    t_fwd = median_cuda_ms(fwd, reps, flush_l2=True)
    t_all = median_cuda_ms(fwd_bwd, reps, flush_l2=True)
    n = x.numel() * x.element_size()
    return {"fwd_ms": t_fwd, "fwd_bwd_ms": t_all, "fwd_GBps": 2 * n / t_fwd / 1e6, "fwd_bwd_GBps": 5 * n / t_all / 1e6,
            "y_max_abs_diff_vs_torch": _diff_vs_torch(y, x, weight, bias)}


def _diff_vs_torch(y: torch.Tensor, x, weight, bias) -> float:
    with torch.no_grad(), torch.autocast("cuda", dtype=DTYPE):
        y_torch = conv_fn("torch")(x, weight, bias)
    return (y.float() - y_torch.float()).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", nargs="+", default=["triton", "torch"], choices=["triton", "torch", "ref"])
    parser.add_argument("--shapes", type=int, nargs="*", help="indices into the shape list")
    parser.add_argument("--block-l", type=int, nargs="*", default=[None],
                        help="Triton positions per program (powers of two >= 16); default: the launcher's")
    parser.add_argument("--warps", type=int, nargs=2, metavar=("FWD", "BWD"),
                        help="Triton warps per program, forward and backward; default: the launcher's")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement (the median is kept)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.causal_conv needs a CUDA GPU (none is visible); the CPU tests are "
                         "in tests/kernels/test_causal_conv.py")

    rows = []
    for i, shape in enumerate(SHAPES):
        if args.shapes and i not in args.shapes:
            continue
        for impl in args.impls:
            for block_l in (args.block_l if impl == "triton" else [None]):
                warps = tuple(args.warps) if impl == "triton" and args.warps else None
                label = impl + (f"/BL={block_l}" if block_l else "") + (f"/w={warps[0]},{warps[1]}" if warps else "")
                rows.append(bench_row(i, label, lambda: bench(impl, shape, block_l, warps, args.reps)))

    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}  bf16, x a channel slice, SiLU, bias")
    print(f"{'B,E,L,W':>18} {'impl':>20} {'fwd ms':>8} {'fwd GB/s':>9} {'fwd+bwd ms':>11} {'fwd+bwd GB/s':>13} "
          f"{'max|y-torch|':>13}")
    for r in rows:
        dims = ",".join(str(v) for v in SHAPES[r["shape"]])
        head = f"{dims:>18} {r['impl']:>20}"
        if "error" in r:
            print(f"{head} {r['error']}")
            continue
        print(f"{head} {r['fwd_ms']:8.3f} {r['fwd_GBps']:9.0f} {r['fwd_bwd_ms']:11.3f} {r['fwd_bwd_GBps']:13.0f} "
              f"{r['y_max_abs_diff_vs_torch']:13.2e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
