"""Cost of one decode step per call, replayed in a CUDA graph (GPU only).

    python -m benchmarks.decode_step                 # the table below, batch 16
    python -m benchmarks.decode_step --sweep         # also the stage kernel's launch parameters
    python -m benchmarks.decode_step --profile       # also GPU time by kernel of one sampling period

Each row captures ``--calls`` consecutive calls in one CUDA graph, replays it ``--replays`` times
after a warm-up replay, and divides the time (CUDA events) by the number of calls, so launch
latency inside a graph is included and Python is not. States advance in place as in decoding.

Rows (random weights, float32):
* ``selective_state_update`` at batch x dim x N = 16 x 128 x 16, real and complex;
* the unfused ``MambaBlock.step`` (norm, projections, conv, state update as separate kernels) at
  widths 64 and 128;
* the fused stage step (``mamba_stage_step``, 8 blocks: 17 launches in split mode, the default, or
  one launch with one program per row) at widths 64, 128 and 256 (the stages of the 6.1M SC09
  U-Net), real and complex, per stage and per block, at batch 1, 16 and 64, with the default launch
  parameters (split mode with programmatic dependent launch on sm_90+), and at batch 16 with plain
  launches for comparison; ``--sweep`` times the alternatives at batch 16, for one program per row with the
  weight bytes it reads and the rate at which it reads them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from seqmodels.kernels import selective_state_update
from seqmodels.kernels.mamba_stage import triton_stage
from seqmodels.kernels.mamba_stage.triton_stage import mamba_stage_step_triton
from seqmodels.models.mamba import MambaBlock, pack_stage_weights


# Launch parameters timed by --sweep (and checked by tests/kernels/test_mamba_stage.py on a GPU):
# (width, complex) -> [(split, BLOCK_E, num_warps, layer_stages, slice_stages)]. One program per
# row (split False): BLOCK_E = 2 x width is one slice (every channel at once, the layer loop
# pipelined when layer_stages = 2), smaller ones walk the channels in slices (the slice loops
# pipelined when slice_stages = 2). Split: BLOCK_E channels per program, two launches per layer.
SWEEP = {
    (64, False): [(False, 128, 8, 1, 1), (False, 128, 8, 2, 1), (False, 128, 16, 1, 1), (False, 128, 16, 2, 1),
                  (False, 128, 4, 1, 1), (True, 16, 4, 1, 1), (True, 32, 4, 1, 1)],
    (128, False): [(False, 64, 8, 1, 1), (False, 64, 8, 1, 2), (True, 16, 4, 1, 1), (True, 32, 4, 1, 1),
                   (True, 32, 8, 1, 1), (True, 64, 4, 1, 1)],
    (256, False): [(False, 32, 8, 1, 2), (True, 16, 4, 1, 1), (True, 32, 4, 1, 1), (True, 32, 8, 1, 1),
                   (True, 64, 8, 1, 1)],
    (64, True): [(False, 64, 8, 1, 1), (False, 128, 16, 1, 1), (True, 16, 4, 1, 1), (True, 32, 4, 1, 1)],
    (128, True): [(False, 32, 8, 1, 1), (True, 16, 4, 1, 1), (True, 32, 4, 1, 1)],
    (256, True): [(False, 16, 8, 1, 1), (True, 16, 4, 1, 1), (True, 32, 4, 1, 1)],
}


def launch_kwargs(cfg: tuple[bool, int, int, int, int]) -> dict:
    split, block_e, warps, layer_stages, slice_stages = cfg
    return dict(split=split, block_e=block_e, num_warps=warps, layer_stages=layer_stages, slice_stages=slice_stages)


def describe(cfg: tuple[bool, int, int, int, int]) -> str:
    split, block_e, warps, layer_stages, slice_stages = cfg
    if split:
        return f"split, BLOCK_E {block_e}, {warps} warps"
    return f"one program per row, BLOCK_E {block_e}, {warps} warps, stages {layer_stages}/{slice_stages}"


def per_call_us(fn: Callable[[], object], calls: int, replays: int) -> float:
    """Microseconds per call of ``fn`` captured ``calls`` times in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * calls)


def state_update_row(batch: int, dim: int, n: int, is_complex: bool) -> Callable[[], object]:
    dev = torch.device("cuda")
    state = torch.zeros(batch, dim, n, device=dev, dtype=torch.complex64 if is_complex else torch.float32)
    A = -torch.rand(dim, n, device=dev) - 0.5
    if is_complex:
        A = torch.complex(A, torch.rand(dim, n, device=dev))
    x, dt, z = (torch.randn(batch, dim, device=dev) for _ in range(3))
    bc = 2 * n if is_complex else n
    B, C = torch.randn(batch, bc, device=dev), torch.randn(batch, bc, device=dev)
    D, bias = torch.randn(dim, device=dev), torch.randn(dim, device=dev)
    return lambda: selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=bias, dt_softplus=True,
                                          impl="triton")


def blocks(width: int, n: int, is_complex: bool) -> list[MambaBlock]:
    torch.manual_seed(0)
    return [MambaBlock(width, d_state=16, complex=is_complex, scan_impl="auto").cuda().eval() for _ in range(n)]


def block_step_row(batch: int, width: int) -> Callable[[], object]:
    (block,) = blocks(width, 1, False)
    state = block.allocate_inference_cache(batch)
    x = torch.randn(batch, width, device="cuda")
    return lambda: block.step(x, state)


def stage_row(batch: int, width: int, n: int, is_complex: bool, **launch) -> tuple[Callable[[], object], int | None]:
    """The fused stage step's call and (one program per row) the bytes of weights a program reads."""
    w = pack_stage_weights(blocks(width, n, is_complex))
    # States with the channels contiguous, as MambaUNet.allocate_inference_cache lays them out.
    conv = torch.zeros(n, batch, w.d_conv, w.d_inner, device="cuda").transpose(-1, -2)
    ssm = torch.zeros(n, batch, w.d_state, w.d_inner, device="cuda",
                      dtype=torch.complex64 if is_complex else torch.float32).transpose(-1, -2)
    x = torch.randn(batch, width, device="cuda")
    weight_bytes = sum(t.numel() * t.element_size() for t in vars(w).values() if isinstance(t, torch.Tensor))
    split = launch.get("split")
    if split is None:
        split = is_complex or width >= triton_stage.SPLIT_FROM_WIDTH
    return lambda: mamba_stage_step_triton(x, w, conv, ssm, **launch), None if split else weight_bytes


def profile_period(batch: int) -> None:
    """GPU time by kernel name over one sampling period (16 steps) of the 6.1M U-Net, fused, eager."""
    from torch.profiler import ProfilerActivity, profile

    from seqmodels.models import MambaUNet, MambaUNetConfig

    torch.manual_seed(0)
    model = MambaUNet(MambaUNetConfig.from_name("sc09-6.1m")).cuda().eval()
    stages = model.pack_stages()
    cache = model.allocate_inference_cache(batch)
    x = torch.full((batch,), 128, device="cuda")
    with torch.inference_mode():
        for _ in range(16):
            model.step(x, cache, stages)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(16):
                logits = model.step(x, cache, stages)
                x = torch.argmax(logits, -1)
            torch.cuda.synchronize()
    print(f"\nGPU time by kernel, one period of 16 fused steps (eager), batch {batch}:")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls captured in one graph")
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--sweep", action="store_true", help="also time the stage kernel's launch parameters")
    parser.add_argument("--profile", action="store_true", help="also profile one sampling period")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.decode_step needs a CUDA device")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; us per call in a CUDA graph "
          f"({args.calls} calls per graph, {args.replays} replays)")
    print(f"{'op':<72} {'us/call':>9} {'us/block':>9} {'GB/s/prog':>10}")

    def row(label: str, us: float, n_blocks: int = 1, weight_bytes: int | None = None) -> None:
        rate = f"{weight_bytes / us / 1e3:>10.1f}" if weight_bytes else f"{'':>10}"
        print(f"{label:<72} {us:>9.2f} {us / n_blocks:>9.2f} {rate}", flush=True)

    with torch.inference_mode():
        for is_complex in (False, True):
            kind = "complex" if is_complex else "real"
            us = per_call_us(state_update_row(16, 128, 16, is_complex), args.calls, args.replays)
            row(f"selective_state_update 16x128x16 {kind}", us)
        for width in (64, 128):
            row(f"MambaBlock.step (unfused), batch 16, width {width}",
                per_call_us(block_step_row(16, width), args.calls, args.replays))
        for is_complex in (False, True):
            kind = "complex" if is_complex else "real"
            for batch in (1, 16, 64):
                for width in (64, 128, 256):
                    fn, nbytes = stage_row(batch, width, 8, is_complex)
                    row(f"fused stage, 8 blocks, batch {batch}, width {width}, {kind}",
                        per_call_us(fn, args.calls, args.replays), 8, nbytes)
            for width in (64, 128, 256):
                fn, _ = stage_row(16, width, 8, is_complex, split=True, pdl=False)
                row(f"fused stage, 8 blocks, batch 16, width {width}, {kind}, plain launches (no PDL)",
                    per_call_us(fn, args.calls, args.replays), 8)
        if args.sweep:
            print("\nstage kernel launch parameters (batch 16, 8 blocks)")
            for (width, is_complex), configs in SWEEP.items():
                kind = "complex" if is_complex else "real"
                for cfg in configs:
                    fn, nbytes = stage_row(16, width, 8, is_complex, **launch_kwargs(cfg))
                    row(f"  {width} {kind}: {describe(cfg)}", per_call_us(fn, args.calls, args.replays), 8, nbytes)
    if args.profile:
        profile_period(16)


if __name__ == "__main__":
    main()
