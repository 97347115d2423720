"""What the compiled scan kernels look like, without a GPU: registers, spills, layout
conversions and the instruction mix of the loop over state indices.

    python -m benchmarks.kernel_ptx                              # forward and backward, real bf16
    python -m benchmarks.kernel_ptx --kernels bwd --complex --tile 256 --unroll 2

The Triton kernels of ``seqmodels.kernels.selective_scan.triton_scan`` are compiled ahead of time
for an H100 (sm_90) with the specialisation a launch at the benchmark's first shape gets (one
chunk per row, variable B and C, D, z, delta_bias and softplus; integer arguments that are
multiples of 16 marked so, as Triton's launcher does), and the PTX is assembled by the ptxas
that ships with Triton for the register and spill counts. The loop over state indices is the
loop of depth 2 in the PTX (inside the loop over tiles); its instructions are counted by opcode
in the static code, once per iteration: per state index (or ``--unroll`` of them) and tile, per
thread, i.e. for ``tile / 32`` positions. Slow paths inside it (libdevice sin / cos range
reduction, complex scans) are counted too though they rarely run.

Why: the scan kernels are bound by instruction issue or by memory traffic depending on these
numbers; this is how the reverse scan's cost (``tl.associative_scan(reverse=True)`` reverses
every input and output across the warp with five shuffles per register) and the layouts Triton
picks for multi-channel tiles were found. Runs on the CPU machine; needs TRITON_INTERPRET unset.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys

# Positions, channels and strides of the specialised launch that are multiples of 16.
_DIVISIBLE = {"dim", "L", "n_tiles", "dstate", "group_b", "group_c", "sB0", "sB1", "sB2", "sBri",
              "sC0", "sC1", "sC2", "sCri", "n_slots"}
# Pointer arguments a one-chunk launch without initial or final state passes as None.
_ABSENT = {"fwd": {"hin_ptr", "last_ptr"}, "fwd2": {"hin_ptr", "last_ptr"}, "bwd": {"cin_ptr", "dinit_ptr", "y_ptr"},
           "bwd2": {"cin_ptr", "dinit_ptr", "y_ptr"}}
_LOW_PRECISION = {"u_ptr", "delta_ptr", "z_ptr", "dout_ptr", "y_ptr", "du_ptr", "ddelta_ptr", "dz_ptr"}


def compile_kernel(role: str, tile: int, is_complex: bool, dtype: str, unroll: int | None,
                   save_states: bool, num_warps: int, split: int = 1, maxnreg: int | None = None):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import torch

    from seqmodels.kernels.selective_scan import triton_scan as ts

    fn = {"fwd": ts._scan1_fwd_kernel, "fwd2": ts._scan2_fwd_kernel, "bwd": ts._scan1_bwd_kernel,
          "bwd2": ts._scan2_bwd_kernel}[role]
    consts = dict(
        IS_COMPLEX=is_complex, VAR_B=True, VAR_C=True, HAS_D=True, HAS_Z=True, HAS_BIAS=True,
        SOFTPLUS=True, HAS_HIN=role.startswith("bwd"), HAS_CIN=False, WRITE_DINIT=False, WRITE_Y=False, WRITE_LAST=False,
        P=tile // (32 * num_warps),  # fwd2, bwd2: a row of P positions per thread
        WRITE_STATES=save_states, BLOCK_N=16, BLOCK_T=tile, TILES=4096 // tile,
        N_UNROLL=unroll or (ts._FWD_N_UNROLL if role == "fwd" else ts._BWD_N_UNROLL),
        PREFETCH=ts._PREFETCH and not is_complex, SPLIT=split,
        # The launcher's rule: every fwd (there it is only the cos / sin); else 16-bit inputs,
        # applied to an empty tensor of the chosen dtype.
        FAST_MATH=ts._FAST_MATH if role == "fwd" else
        ts._fast_math(torch.empty(0, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)),
    )
    options = dict(num_warps=num_warps)
    if maxnreg is None and role in ("fwd2", "bwd2"):
        maxnreg = ts._FWD_MAXNREG if role == "fwd2" else ts._BWD_MAXNREG  # the launcher's cap
    if maxnreg:
        options["maxnreg"] = maxnreg
    names = fn.arg_names
    consts = {k: v for k, v in consts.items() if k in names}
    consts.update({n: None for n in _ABSENT[role] if n in names})
    low = "*bf16" if dtype == "bf16" else "*fp32"
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        elif n.endswith("_ptr"):
            # B and C arrive in the activations' dtype (planar copies of the model's x_proj output)
            sig[n] = low if n in _LOW_PRECISION or n in ("B_ptr", "C_ptr") else "*fp32"
        else:
            sig[n] = "i32"
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if n not in consts and (n.endswith("_ptr") or n in _DIVISIBLE)}
    return triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                          options=options)


def ptxas_counts(ptx: str) -> tuple[str, str]:
    """(registers, spill-store bytes) from the ptxas that ships with Triton, or n/a."""
    import tempfile

    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        return "n/a", "n/a"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        r = subprocess.run([ptxas, "--gpu-name", "sm_90a", "-v", f.name, "-o", os.devnull],
                           capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    regs = re.findall(r"Used (\d+) registers", r.stderr)
    spill = re.findall(r"(\d+) bytes spill stores", r.stderr)
    return (regs[0] if regs else "n/a"), (spill[0] if spill else "n/a")


def state_loop_ops(ptx: str, depth: int = 2) -> collections.Counter:
    """Opcode counts of the loop of depth ``depth``: 2, the loop over state indices inside the
    tile loop; 1, the tile loop (the two-pass forward, whose state loop is unrolled).

    LLVM annotates every basic block of a loop in the PTX: the header with "Loop Header:
    Depth=d", the other blocks with "in Loop: Header=BBx Depth=d", and the headers of nested
    loops with their "Parent Loop BBx" chain. Blocks are gathered by those annotations (the
    block order in the PTX is not the loop order)."""
    blocks: list[tuple[str, list[str], list[str]]] = []  # label, annotations, instructions
    for line in ptx.splitlines():
        s = line.strip()
        m = re.match(r"(\$L__(BB\d+_\d+)):", s)
        if m:
            blocks.append((m.group(2), [s], []))
        elif blocks and s.startswith("//"):
            if not blocks[-1][2]:
                blocks[-1][1].append(s)
        elif blocks and s and s[0] not in "${}.":
            blocks[-1][2].append(s)
    headers = [lab for lab, notes, _ in blocks if any(f"Loop Header: Depth={depth}" in n for n in notes)]
    if not headers:
        return collections.Counter()
    inner = {headers[0]}
    for lab, notes, _ in blocks:  # nested loop headers
        if any(re.search(r"Parent Loop %s Depth" % headers[0], n) for n in notes):
            inner.add(lab)
    ops: collections.Counter = collections.Counter()
    for lab, notes, instrs in blocks:
        text = " ".join(notes)
        member = lab in inner or any(re.search(r"Header=%s Depth" % h, text) for h in inner)
        if not member:
            continue
        for s in instrs:
            if s.startswith("//"):
                continue
            op = s.split()[1] if s.startswith("@") else s.split()[0]
            ops[op.split(".")[0].rstrip(";")] += 1
    return ops


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", nargs="+", default=["fwd", "bwd"], choices=["fwd", "fwd2", "bwd", "bwd2"],
                   help="fwd2 / bwd2: the two-pass kernels (fwd2's state loop is unrolled in the tile "
                        "loop: its counts are that loop's divided by the 16 state indices)")
    p.add_argument("--maxnreg", type=int, help="register cap passed to the compiler (fwd2, bwd2: "
                   "default the launcher's)")
    p.add_argument("--tile", type=int, default=128, help="positions per tile (power of two, >= 32)")
    p.add_argument("--complex", action="store_true", help="complex scan")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="u, delta, z, y dtype")
    p.add_argument("--unroll", type=int, help="state indices per loop iteration (default: the launcher's)")
    p.add_argument("--no-states", action="store_true", help="forward alone: no tile states saved")
    p.add_argument("--num-warps", type=int, default=1)
    p.add_argument("--split", type=int, default=1, choices=[1, 2],
                   help="forward: backward tiles per forward tile (2: also save the middle state)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("benchmarks.kernel_ptx compiles for the GPU: unset TRITON_INTERPRET first")
    if args.tile < 32 or args.tile & (args.tile - 1):
        raise SystemExit(f"--tile must be a power of two >= 32, got {args.tile}")

    rows = []
    for role in args.kernels:
        k = compile_kernel(role, args.tile, args.complex, args.dtype, args.unroll, not args.no_states,
                           args.num_warps, args.split if not role.startswith("bwd") else 1, args.maxnreg)
        ptx, ttgir = k.asm["ptx"], k.asm["ttgir"]
        regs, spill = ptxas_counts(ptx)
        ops = state_loop_ops(ptx, 1 if role == "fwd2" else 2)
        if role == "fwd2":
            ops = collections.Counter({k: round(v / 16, 1) for k, v in ops.items()})
        rows.append(dict(kernel=role, registers=regs, spill_bytes=spill, shared_bytes=k.metadata.shared,
                         convert_layout=ttgir.count("ttg.convert_layout"), loop_ops=sum(ops.values()),
                         loop_shuffles=ops.get("shfl", 0), loop_mix=dict(ops.most_common(12))))
    kind = "complex" if args.complex else "real"
    print(f"scan kernels for sm_90, {kind} {args.dtype}, tile {args.tile}, {args.num_warps} warp(s); "
          f"loop counts per state iteration and tile, per thread ({args.tile // 32} positions)")
    print(f"{'kernel':>6} {'regs':>5} {'spill B':>7} {'smem B':>6} {'layout cvt':>10} {'loop ops':>8} {'shuffles':>8}  mix")
    for r in rows:
        mix = " ".join(f"{k}:{v}" for k, v in r["loop_mix"].items())
        print(f"{r['kernel']:>6} {r['registers']:>5} {r['spill_bytes']:>7} {r['shared_bytes']:>6} "
              f"{r['convert_layout']:>10} {r['loop_ops']:>8} {r['loop_shuffles']:>8}  {mix}")
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
