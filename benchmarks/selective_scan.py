"""Median forward and backward time of the selective scan on the GPU, per implementation.

    python -m benchmarks.selective_scan                 # every shape, impls triton and torch
    python -m benchmarks.selective_scan --impls triton --shapes 0 3
    python -m benchmarks.selective_scan --impls triton cuda --reference-src ~/src/mamba

Shapes are those of the speed targets (batch, dim, N, L, complex, dtype). Inputs are random
(never zeros), B and C input-dependent, with D, z, delta_bias and softplus as in a Mamba block.
Three timings, each the median of ``--reps`` runs timed with CUDA events after a warm-up call (fewer
when one call takes seconds): ``fwd``, the forward alone (no gradient can follow); ``bwd``, the
backward alone, run again and again on one recorded forward (``retain_graph``); ``step``, a
training forward and its backward. Our training forward saves tile states for the backward and
runs on narrower tiles than the forward alone, so ``step`` is more than ``fwd + bwd``; the
reference's forward is the same call either way. (Until 2026-11-24 ``bwd`` was ``step - fwd``,
which charged that difference to the backward.)
``cuda`` is the reference kernel of state-spaces/mamba, built from a checkout of its sources
(``--reference-src``, kept outside this repository; see ``benchmarks/reference_scan.py``) and timed
the same way in the same run; without it the table compares with that kernel's recorded times.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.timing import bench_row, median_cuda_ms
from seqmodels.kernels import selective_scan

SHAPES = [  # batch, dim, N, L, complex, dtype
    (8, 1536, 16, 4096, False, torch.bfloat16),
    (8, 1536, 16, 16384, False, torch.bfloat16),
    (8, 1536, 16, 4096, True, torch.bfloat16),
    (1, 256, 16, 1048576, False, torch.bfloat16),
    (16, 128, 16, 16000, True, torch.float32),
    (16, 128, 16, 16000, False, torch.float32),
    (64, 512, 16, 1024, False, torch.bfloat16),  # the 7M DNA model's scan at L = 1024 x batch 64
]
# state-spaces/mamba's CUDA kernel on one H100, median ms (fwd, bwd), measured for the same shapes
# (None: not measured)
REFERENCE_CUDA_MS = [(0.90, 3.72), (4.22, 14.87), (2.32, 8.17), (10.66, 26.73), (2.32, 6.00), (1.46, 4.13), None]


def make_inputs(batch: int, dim: int, n: int, length: int, is_complex: bool, dtype: torch.dtype) -> dict:
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape, dt=dtype, scale=1.0):
        return (torch.randn(*shape, generator=g, device=dev) * scale).to(dt).requires_grad_()

    bc_len = 2 * length if is_complex else length
    if is_complex:
        a = torch.complex(-0.5 * torch.ones(dim, n, device=dev), torch.pi * torch.arange(n, device=dev).expand(dim, n))
        A = a.requires_grad_()
    else:
        A = (-torch.arange(1, n + 1, device=dev, dtype=torch.float32).expand(dim, n)).contiguous().requires_grad_()
    return dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length, scale=0.5),
        A=A,
        B=randn(batch, n, bc_len),
        C=randn(batch, n, bc_len),
        D=randn(dim, dt=torch.float32),
        z=randn(batch, dim, length),
        delta_bias=(torch.rand(dim, generator=g, device=dev) * -4).requires_grad_(),
        delta_softplus=True,
    )


def bench(impl: str, shape: tuple, reps: int, device_time: bool = False) -> tuple[float, float, float]:
    """(fwd, bwd, step) ms, see the module's docstring."""
    inputs = make_inputs(*shape)
    if impl == "cuda":
        from benchmarks.reference_scan import reference_scan

        def scan():
            return reference_scan(**inputs)
    else:
        def scan():
            return selective_scan(**inputs, impl=impl)
    y = scan()
    dy = torch.randn_like(y)
    grads = [v for v in inputs.values() if isinstance(v, torch.Tensor)]

    def fwd():
        with torch.no_grad():
            scan()

    def bwd():
        torch.autograd.grad(y, grads, dy, retain_graph=True)

    def step():
        torch.autograd.grad(scan(), grads, dy)

    # few repetitions when one call is slow (the torch path)
    return tuple(median_cuda_ms(fn, reps, budget_ms=2000, device_time=device_time) for fn in (fwd, bwd, step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", nargs="+", default=["triton", "torch"], choices=["triton", "torch", "cuda"],
                        help="cuda: the reference kernel, built from --reference-src")
    parser.add_argument("--reference-src", type=Path, help="a checkout of state-spaces/mamba (for --impls cuda)")
    parser.add_argument("--shapes", type=int, nargs="*", help="indices into the shape list")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement (the median is kept)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--device-time", action="store_true",
                        help="time the GPU's work alone: each timed call is queued behind a sleep "
                             "kernel, so the time the host takes to launch it is not counted")
    parser.add_argument("--train-tile", type=int, help="override the Triton scan's tile when a backward follows")
    parser.add_argument("--fwd-unroll", type=int, help="override the state indices per forward loop iteration")
    parser.add_argument("--bwd-unroll", type=int, help="override the state indices per backward loop iteration")
    parser.add_argument("--fwd-two-pass", choices=["auto", "on", "off"], default="auto",
                        help="the forward kernel: two passes per thread (on, also for the training "
                             "forward), version 4 (off), or the launcher's rule")
    parser.add_argument("--per-thread", choices=["auto", "on", "off"], default="auto",
                        help="the forward alone of real scans with one channel per thread (on: wherever it "
                             "applies), the tile kernels (off), or the launcher's rule")
    parser.add_argument("--bwd-two-pass", choices=["auto", "on", "off"], default="auto",
                        help="the backward kernel: two passes per thread (on), version 4 (off), or the "
                             "launcher's rule")
    parser.add_argument("--bwd-maxnreg", type=int, help="register cap of the two-pass backward")
    args = parser.parse_args()
    from seqmodels.kernels.selective_scan import triton_scan

    if args.train_tile:
        triton_scan._SCAN_TILE[True] = args.train_tile
    if args.fwd_unroll:
        triton_scan._FWD_N_UNROLL = args.fwd_unroll
    if args.bwd_unroll:
        triton_scan._BWD_N_UNROLL = args.bwd_unroll
    if args.fwd_two_pass != "auto":
        triton_scan._FWD_TWO_PASS = args.fwd_two_pass == "on"
    if args.per_thread != "auto":
        triton_scan._FWD_PER_THREAD = args.per_thread == "on"
    if args.bwd_two_pass != "auto":
        triton_scan._BWD_TWO_PASS = args.bwd_two_pass == "on"
    if args.bwd_maxnreg:
        triton_scan._BWD_MAXNREG = args.bwd_maxnreg
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.selective_scan needs a CUDA GPU")
    if "cuda" in args.impls:
        if args.reference_src is None:
            raise SystemExit("--impls cuda needs --reference-src (a checkout of state-spaces/mamba)")
        from benchmarks.reference_scan import build

        build(args.reference_src)

    rows = []
    for i, shape in enumerate(SHAPES):
        if args.shapes and i not in args.shapes:
            continue
        for impl in args.impls:
            rows.append(bench_row(i, impl, lambda: dict(zip(("fwd_ms", "bwd_ms", "step_ms"),
                                                            bench(impl, shape, args.reps, args.device_time)))))

    timing = "GPU time alone (--device-time)" if args.device_time else "whole calls, host launch included"
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}  ({timing})")
    print(f"{'batch,dim,N,L':>22} {'scan':>8} {'dtype':>9} {'impl':>7} {'fwd ms':>8} {'bwd ms':>8} {'step ms':>8} "
          f"{'ref fwd/bwd':>12} {'ratio fwd/bwd':>14}")
    for r in rows:
        b, d, n, length, cplx, dtype = SHAPES[r["shape"]]
        ref_f, ref_b = REFERENCE_CUDA_MS[r["shape"]] or (float("nan"), float("nan"))
        dims = f"{b},{d},{n},{length}"
        kind = "complex" if cplx else "real"
        head = f"{dims:>22} {kind:>8} {str(dtype)[6:]:>9} {r['impl']:>7}"
        if "error" in r:
            print(f"{head} {r['error']}")
            continue
        ref = f"{ref_f}/{ref_b}"
        ratio = f"{r['fwd_ms'] / ref_f:.2f}/{r['bwd_ms'] / ref_b:.2f}"
        print(f"{head} {r['fwd_ms']:8.2f} {r['bwd_ms']:8.2f} {r['step_ms']:8.2f} {ref:>12} {ratio:>14}")
    cuda = {r["shape"]: r for r in rows if r["impl"] == "cuda" and "error" not in r}
    if cuda:
        print("\nours / reference, both measured in this run:")
        for r in rows:
            ref = cuda.get(r["shape"])
            if r["impl"] != "cuda" and ref is not None and "error" not in r:
                b, d, n, length, cplx, dtype = SHAPES[r["shape"]]
                print(f"{f'{b},{d},{n},{length}':>22} {'complex' if cplx else 'real':>8} {str(dtype)[6:]:>9} "
                      f"{r['impl']:>7}  fwd {r['fwd_ms'] / ref['fwd_ms']:.2f}  bwd {r['bwd_ms'] / ref['bwd_ms']:.2f}"
                      f"  step {r['step_ms'] / ref['step_ms']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
