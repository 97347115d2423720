"""GPU timing shared by the kernel benchmarks."""

from __future__ import annotations

import json
import statistics
from typing import Callable

import torch

# About 10 ms of GPU time at H100 clocks: longer than the host needs to queue one timed call.
_SLEEP_CYCLES = 20_000_000
# Zeroed before each timed run when asked, so that nothing of the inputs stays in the L2 cache
# (50 MB on an H100).
_L2_FLUSH: torch.Tensor | None = None


def median_cuda_ms(fn: Callable[[], object], reps: int, *, flush_l2: bool = False,
                   budget_ms: float | None = None, device_time: bool = False) -> float:
    """Median of CUDA-event timings of ``fn()`` after one warm-up call.

    ``flush_l2``: zero a 256 MiB buffer before each timed run. ``budget_ms``: time one call first
    and run ``max(3, min(reps, budget_ms / that))`` repetitions, so a slow implementation (the
    PyTorch paths) costs about that much in all. ``device_time``: the GPU first runs a sleep
    kernel long enough for the host to queue all of ``fn``'s work behind it, so the events time
    the GPU's work alone, without the gaps where it waits for the host to launch (by default they
    are included: an idle GPU records the start event at once, then waits for the first launch).
    """
    global _L2_FLUSH
    if flush_l2 and _L2_FLUSH is None:
        _L2_FLUSH = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    n = reps
    if budget_ms is not None:
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        n = max(3, min(reps, int(budget_ms / max(start.elapsed_time(end), 1e-3))))
    times = []
    for _ in range(n):
        if flush_l2:
            _L2_FLUSH.zero_()
        if device_time:
            torch.cuda._sleep(_SLEEP_CYCLES)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_row(shape: int, impl: str, measure: Callable[[], dict]) -> dict:
    """``{"shape", "impl", **measure()}``, or an ``"error"`` row when the GPU runs out of memory;
    printed as one JSON line. The allocator's cache is emptied after each row."""
    try:
        row = {"shape": shape, "impl": impl, **measure()}
    except torch.OutOfMemoryError:
        row = {"shape": shape, "impl": impl, "error": "out of memory"}
    torch.cuda.empty_cache()
    print(json.dumps(row), flush=True)
    return row
