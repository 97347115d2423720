"""CPU speed of the chunked PyTorch selective scan against the per-position reference.

    python -m benchmarks.selective_scan_cpu [--batch 2 --dim 64 --state 16 --length 4096] [--threads N]

Prints median wall-clock times (forward, and forward + backward) of ``impl="ref"`` and
``impl="torch"`` on float32 inputs with input-dependent B and C, and the speed-ups.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seqmodels.kernels import selective_scan


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--complex", action="store_true", help="complex scan (S4D-Lin-like A)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    b, d, n, L = args.batch, args.dim, args.state, args.length
    u = torch.randn(b, d, L, generator=g)
    delta = torch.rand(b, d, L, generator=g) * 0.1
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    bc_len = L
    if args.complex:
        A = torch.complex(torch.full((d, n), -0.5), torch.pi * torch.arange(n, dtype=torch.float32).repeat(d, 1))
        bc_len = 2 * L
    B, C = torch.randn(b, n, bc_len, generator=g), torch.randn(b, n, bc_len, generator=g)
    D = torch.randn(d, generator=g)
    leaves = [t.requires_grad_() for t in (u, delta, A, B, C, D)]

    def forward(impl: str):
        with torch.no_grad():
            selective_scan(u, delta, A, B, C, D=D, impl=impl)

    def forward_backward(impl: str):
        y = selective_scan(u, delta, A, B, C, D=D, impl=impl)
        torch.autograd.grad(y.sum(), leaves)

    print(f"selective_scan on CPU, float32{' complex' if args.complex else ''}, (batch, dim, N, L) = "
          f"({b}, {d}, {n}, {L}), {torch.get_num_threads()} threads, median of {args.repeats}")
    rows = {}
    for impl in ("ref", "torch"):
        rows[impl] = (_median_time(lambda: forward(impl), args.repeats),
                      _median_time(lambda: forward_backward(impl), args.repeats))
    print(f"{'impl':<8}{'forward ms':>14}{'fwd+bwd ms':>14}")
    for impl, (f, fb) in rows.items():
        print(f"{impl:<8}{f * 1e3:>14.1f}{fb * 1e3:>14.1f}")
    (rf, rfb), (tf, tfb) = rows["ref"], rows["torch"]
    print(f"speed-up of torch over ref: forward {rf / tf:.2f}x, forward+backward {rfb / tfb:.2f}x")


if __name__ == "__main__":
    main()
