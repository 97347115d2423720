"""A prototype forward scan with one channel per thread, measured against the library's kernel.

    python -m benchmarks.scan_per_thread                         # 2^20 and the first shape
    python -m benchmarks.scan_per_thread --shapes 3 --chunks 4096 2048

The library's kernels scan along the sequence across the 32 threads of a warp (shuffles between
threads, an associative scan per state index). Here a thread owns one channel of one batch row
and its N states, and walks the positions one after another: per element one exponential and
three multiply-adds, no shuffles, no reduction across threads (y sums the N states inside the
thread). The parallelism comes from channels and chunks: the rows are cut into chunks of
``--chunks`` positions, a first pass computes every chunk's end state from zero, the library's
carry kernel chains them, and a second pass scans every chunk from its entering state and writes
y. The prototype covers what the speed targets' real shapes use (real A, input-dependent B and C
of shape (batch, N, L), D, z, delta_bias, softplus) and shapes that divide evenly; it has no
backward. ``forward`` checks its arguments; the CPU tests compare it with the plain reference
under the interpreter.
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

from seqmodels.kernels.selective_scan import triton_scan as ts

_LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


@triton.jit
def _per_thread_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, hin_ptr, y_ptr, S_ptr, dtsum_ptr,
    dim, L, K,
    CHUNK: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr, P: tl.constexpr,
    HAS_HIN: tl.constexpr, STATE_ONLY: tl.constexpr, FAST: tl.constexpr,
):
    """Chunk ``program_id(0)`` of BLOCK_D channels (one per thread) of batch row
    ``program_id(2)``. Positions are read P at a time as a [BLOCK_D, P] tile whose rows each live
    in one thread (one 16-byte load per row), split into P column vectors. STATE_ONLY: write the
    chunk's end state from zero and its sum of dt (the library's chunk-state format); else scan
    from ``hin`` (or zero) and write y."""
    k = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_p = tl.arange(0, P)
    chan = (tl.program_id(2) * dim + offs_d).to(tl.int64)
    bias = tl.load(bias_ptr + offs_d)
    As = ()
    hs = ()
    for n in tl.static_range(N):
        As = As + (tl.load(A_ptr + offs_d * N + n) * _LOG2E,)
        if HAS_HIN:
            hs = hs + (tl.load(hin_ptr + (chan * K + k) * N + n),)
        else:
            hs = hs + (tl.zeros([BLOCK_D], dtype=tl.float32),)
    # B and C rows are shared by the channels: every thread loads the same P positions
    same_row = tl.zeros([BLOCK_D, P], dtype=tl.int64)
    bc_base = tl.program_id(2).to(tl.int64) * N * L
    dtsum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t0 in range(k * CHUNK, k * CHUNK + CHUNK, P):
        off = (chan * L)[:, None] + (t0 + offs_p)[None, :]
        u = tl.load(u_ptr + off).to(tl.float32)
        dt = ts._softplus(tl.load(delta_ptr + off).to(tl.float32) + bias[:, None], FAST)
        dt_cols = ts._cols(dt)
        dtu_cols = ts._cols(dt * u)
        if STATE_ONLY:
            dtsum += tl.sum(dt, axis=1)
        ys = ()
        for j in tl.static_range(P):
            ys = ys + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        new_hs = ()
        for n in tl.static_range(N):
            bc_off = same_row + (bc_base + n * L + t0 + offs_p)[None, :]
            b_cols = ts._cols(tl.load(B_ptr + bc_off).to(tl.float32))
            h = hs[n]
            if STATE_ONLY:
                for j in tl.static_range(P):
                    h = tl.exp2(dt_cols[j] * As[n]) * h + dtu_cols[j] * b_cols[j]
            else:
                c_cols = ts._cols(tl.load(C_ptr + bc_off).to(tl.float32))
                ys_n = ()
                for j in tl.static_range(P):
                    h = tl.exp2(dt_cols[j] * As[n]) * h + dtu_cols[j] * b_cols[j]
                    ys_n = ys_n + (ys[j] + c_cols[j] * h,)
                ys = ys_n
            new_hs = new_hs + (h,)
        hs = new_hs
        if not STATE_ONLY:
            zt = tl.load(z_ptr + off).to(tl.float32)
            y = ts._from_cols(ys) + tl.load(D_ptr + offs_d)[:, None] * u
            tl.store(y_ptr + off, (y * zt * tl.sigmoid(zt)).to(y_ptr.dtype.element_ty))
    if STATE_ONLY:
        for n in tl.static_range(N):
            tl.store(S_ptr + (chan * K + k) * N + n, hs[n])
        tl.store(dtsum_ptr + chan * K + k, dtsum)


def forward(u, delta, A, B, C, D, z, delta_bias, chunk: int, warps: int = 1):
    """y of the selective scan with softplus(delta + delta_bias), for the shapes above; ``chunk``
    positions per chunk (the whole row when it equals L)."""
    batch, dim, L = u.shape
    n = A.shape[1]
    P = 16 // u.element_size()
    block_d = 32 * warps
    problems = []
    if A.is_complex() or A.shape != (dim, n):
        problems.append(f"A must be real (dim, N) = ({dim}, N), got {tuple(A.shape)} {A.dtype}")
    if B.shape != (batch, n, L) or C.shape != (batch, n, L):
        problems.append(f"B and C must be (batch, N, L) = ({batch}, {n}, {L}), got {tuple(B.shape)}, {tuple(C.shape)}")
    if chunk <= 0 or L % chunk or chunk % P:
        problems.append(f"chunk={chunk} must divide L={L} and be a multiple of {P}")
    if dim % block_d:
        problems.append(f"dim={dim} must be a multiple of 32 x warps = {block_d}")
    if problems:
        raise ValueError("benchmarks.scan_per_thread.forward: " + "; ".join(problems))
    u, delta, z, B, C = (x.contiguous() for x in (u, delta, z, B, C))
    A, D, delta_bias = (x.float().contiguous() for x in (A, D, delta_bias))
    fast = u.element_size() == 2 and not ts._interpreting()
    K = L // chunk
    grid = (K, dim // block_d, batch)
    meta = dict(CHUNK=chunk, N=n, BLOCK_D=block_d, P=P, FAST=fast, num_warps=warps)
    y = torch.empty_like(u)
    hin = None
    if K > 1:
        S = torch.empty(batch, dim, K, n, 1, device=u.device, dtype=torch.float32)
        dtsum = torch.empty(batch, dim, K, device=u.device, dtype=torch.float32)
        _per_thread_kernel[grid](u, delta, delta_bias, A, B, C, D, z, None, y, S, dtsum, dim, L, K,
                                 HAS_HIN=False, STATE_ONLY=True, **meta)
        hin = torch.empty_like(S)
        ts._carry_kernel[(ts._cdiv(dim, ts._CARRY_BLOCK_D), batch)](
            S, dtsum, A, None, hin, dim, K, n, IS_COMPLEX=False, REVERSE=False, HAS_INIT=False,
            BLOCK_D=ts._CARRY_BLOCK_D, BLOCK_N=ts._next_pow2(n), num_warps=2)
    _per_thread_kernel[grid](u, delta, delta_bias, A, B, C, D, z, hin, y, None, None, dim, L, K,
                             HAS_HIN=hin is not None, STATE_ONLY=False, **meta)
    return y


def main() -> None:
    from benchmarks.selective_scan import SHAPES, make_inputs
    from benchmarks.timing import median_cuda_ms
    from seqmodels.kernels.selective_scan import selective_scan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, nargs="+", default=[3, 0],
                        help="indices into benchmarks.selective_scan.SHAPES (real ones)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[4096, 2048, 1024, 512],
                        help="chunk lengths to time (those that divide L)")
    parser.add_argument("--warps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.scan_per_thread times the GPU: it needs a CUDA device")
    print(f"{torch.cuda.get_device_name()}, GPU time alone (ms), forward alone")
    for i in args.shapes:
        batch, dim, n, L, cplx, dtype = SHAPES[i]
        if cplx:
            raise SystemExit(f"--shapes {i}: the prototype is for real scans")
        x = make_inputs(batch, dim, n, L, cplx, dtype)
        x = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
        with torch.no_grad():
            ref = selective_scan(**x, impl="triton")
            t_lib = median_cuda_ms(lambda: selective_scan(**x, impl="triton"), args.reps, device_time=True)
        inputs = {k: x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")}
        print(f"shape {batch},{dim},{n},{L} {str(dtype)[6:]}: library {t_lib:.3f}")
        for c in args.chunks:
            if L % c:
                continue
            for w in args.warps:
                if dim % (32 * w):
                    continue
                y = forward(**inputs, chunk=c, warps=w)
                diff = ((y.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                t = median_cuda_ms(lambda: forward(**inputs, chunk=c, warps=w), args.reps, device_time=True)
                print(f"  chunk {c:>6} warps {w}: {t:.3f}  ({t_lib / t:.2f}x the library; "
                      f"max |y - library| / max |y| {diff:.1e})", flush=True)


if __name__ == "__main__":
    main()
