"""The arithmetic floor of a sequence-parallel scan forward, measured: ``python -m benchmarks.scan_floor``.

A chunked forward (rows cut into chunks so that batch 1 x 256 channels fill the GPU) computes the
decay ``exp(dt A)`` of every state element twice: once in the pass that finds each chunk's end
state from zero, once in the pass that rescans the chunk from its entering state. This benchmark
times that arithmetic alone, with no memory traffic at all, so no scan kernel can beat it on
the same GPU: one thread per channel and chunk, its N states in registers, and per position and
state index only

- ``state``: ``a = exp2(dt A)``, ``h = a h + x B`` (the end-state pass: a multiply, an
  exponential, a multiply and a multiply-add);
- ``scan``: the same and ``y += C h`` (the rescan: one more multiply-add),

with ``dt`` (and ``x = dt``) changed per position by one multiply-add, shared by the N states.
What a real kernel adds (loads of u, delta, B, C; their conversion; softplus; the stores of y)
only adds to this. The default size is the (1, 256, 16, 2^20) row of ``benchmarks.selective_scan``
(4.29 G state elements per pass): 256 x 512 threads of 2,048 positions each.

Prints, per pass and number of warps per program, the median GPU time (``--device-time``
method of ``benchmarks.timing``), the state elements per ns and the exponentials per SM and clock
cycle at ``--clock-mhz`` (the H100's special-function units give at most 16), then the sum of the
two passes' best times.
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

from seqmodels.kernels.selective_scan.triton_scan import LOG2E

MODES = ("state", "scan")


@triton.jit
def _floor_kernel(out_ptr, dt0_ptr, A_ptr, B_ptr, C_ptr, steps, N: tl.constexpr, SCAN: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Thread i runs ``steps`` positions of the recurrence from ``dt0[i]`` (see the module
    docstring) and writes y (``SCAN``) or the sum of its final states to ``out[i]``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    dt = tl.load(dt0_ptr + offs)
    As = ()
    Bs = ()
    Cs = ()
    hs = ()
    for n in tl.static_range(N):
        As = As + (tl.load(A_ptr + n) * LOG2E,)
        Bs = Bs + (tl.load(B_ptr + n),)
        Cs = Cs + (tl.load(C_ptr + n),)
        hs = hs + (tl.zeros([BLOCK], dtype=tl.float32),)
    y = tl.zeros([BLOCK], dtype=tl.float32)
    for _ in range(steps):
        dt = dt * 0.9990234375 + 0.0009765625
        new_hs = ()
        for n in tl.static_range(N):
            h = tl.exp2(dt * As[n]) * hs[n] + dt * Bs[n]
            if SCAN:
                y += Cs[n] * h
            new_hs = new_hs + (h,)
        hs = new_hs
    if not SCAN:
        for n in tl.static_range(N):
            y += hs[n]
    tl.store(out_ptr + offs, y)


def floor_pass(dt0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, steps: int, mode: str,
               num_warps: int = 2) -> torch.Tensor:
    """Run the floor kernel: one thread per element of ``dt0`` (its length a multiple of
    32 x ``num_warps``), ``steps`` positions, states as long as A; returns ``out``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    block = 32 * num_warps
    if dt0.numel() % block:
        raise ValueError(f"dt0 has {dt0.numel()} threads, not a multiple of {block} (32 x num_warps)")
    out = torch.empty_like(dt0)
    _floor_kernel[(dt0.numel() // block,)](out, dt0, A, B, C, steps, N=A.numel(), SCAN=mode == "scan",
                                           BLOCK=block, num_warps=num_warps)
    return out


def floor_reference(dt0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, steps: int,
                    mode: str) -> torch.Tensor:
    """The same recurrence in float64 with torch, for the tests."""
    dt = dt0.double()
    A, B, C = A.double(), B.double(), C.double()
    h = torch.zeros(dt.numel(), A.numel(), dtype=torch.float64, device=dt.device)
    y = torch.zeros_like(dt)
    for _ in range(steps):
        dt = dt * 0.9990234375 + 0.0009765625
        h = torch.exp(dt[:, None] * A) * h + dt[:, None] * B
        y = y + h @ C
    return y if mode == "scan" else h.sum(1)


def main(argv=None) -> None:
    from benchmarks.timing import median_cuda_ms

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=256 * 512, help="channels x chunks (default 256 x 512)")
    p.add_argument("--steps", type=int, default=2048, help="positions per thread (default 2,048)")
    p.add_argument("--dstate", type=int, default=16)
    p.add_argument("--warps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--clock-mhz", type=float, default=1980.0, help="SM clock for the per-cycle rate "
                   "(default 1980, the H100 SXM's maximum)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.scan_floor needs a CUDA GPU")
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    dt0 = torch.rand(args.threads, generator=g, device=dev) * 0.1
    A = -torch.arange(1, args.dstate + 1, dtype=torch.float32, device=dev)
    B = torch.randn(args.dstate, generator=g, device=dev)
    C = torch.randn(args.dstate, generator=g, device=dev)
    elements = args.threads * args.steps * args.dstate
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    print(f"{torch.cuda.get_device_name(dev)}: {args.threads} threads x {args.steps} positions x "
          f"{args.dstate} states = {elements / 1e9:.2f} G state elements per pass, GPU time")
    print(f"{'pass':>6} {'warps':>5} {'ms':>8} {'elem/ns':>8} {'exp/SM/clk':>10}")
    best = {}
    for mode in MODES:
        for w in args.warps:
            ms = median_cuda_ms(lambda: floor_pass(dt0, A, B, C, args.steps, mode, w), args.reps,
                                device_time=True)
            rate = elements / (ms * 1e6)
            per_clk = elements / (ms * 1e-3) / (sms * args.clock_mhz * 1e6)
            best[mode] = min(best.get(mode, float("inf")), ms)
            print(f"{mode:>6} {w:>5} {ms:>8.3f} {rate:>8.1f} {per_clk:>10.2f}")
    print(f"two passes (best of each): {best['state'] + best['scan']:.3f} ms")


if __name__ == "__main__":
    main()
