"""Where a whole call of the Triton selective scan spends its time: the host or the GPU.

    python -m benchmarks.scan_host            # the first speed-target shape, inference forward
    python -m benchmarks.scan_host --shape 6

Times three ways of running the same inference forward, each as CUDA events around a call on an
idle GPU (whole call), on GPU time alone (queued behind a sleep kernel) and as host microseconds
per call with the GPU kept busy (so the host never waits): the public ``selective_scan``; the
forward kernel launched alone through Triton with the arguments the public call passed it; and
a CUDA graph replaying the public call. Then the host time of the wrapper's stages (argument
checks, B / C layouts, tile plan, output allocation). The difference between the first two rows
is our Python around the launch; between the last two, Triton's launcher.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from benchmarks.selective_scan import SHAPES, make_inputs
from benchmarks.timing import median_cuda_ms


def host_us(fn: Callable[[], object], n: int = 50) -> float:
    """Host microseconds per call of ``fn``, the GPU kept busy by a long sleep kernel first."""
    torch.cuda.synchronize()
    torch.cuda._sleep(400_000_000)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    dt = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, default=0, help="index into benchmarks.selective_scan's shapes")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.scan_host needs a CUDA GPU")
    from seqmodels.kernels import selective_scan
    from seqmodels.kernels.selective_scan import triton_scan as ts
    from seqmodels.kernels.selective_scan.checks import check_scan_args

    inputs = make_inputs(*SHAPES[args.shape])

    def call() -> None:
        with torch.no_grad():
            selective_scan(**inputs, impl="triton")

    call()
    # Record the forward kernel's launch (whichever version the launcher picks) to replay it alone.
    launches = []
    kernels = {name: getattr(ts, name) for name in ("_scan1_fwd_kernel", "_scan2_fwd_kernel")}

    class _Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*a, **k):
                launches.append((self.kernel, grid, a, k))
                return self.kernel[grid](*a, **k)
            return launch

    for name, k in kernels.items():
        setattr(ts, name, _Recorder(k))
    try:
        call()
    finally:
        for name, k in kernels.items():
            setattr(ts, name, k)
    kernel, grid, a, k = launches[-1]

    def kernel_alone() -> None:
        kernel[grid](*a, **k)

    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        call()

    rows = [(label, median_cuda_ms(fn, args.reps), median_cuda_ms(fn, args.reps, device_time=True), host_us(fn))
            for label, fn in (("selective_scan (public call)", call),
                              (f"{kernel.fn.__name__} launched alone", kernel_alone),
                              ("CUDA graph replaying the call", graph.replay))]
    b, d, n, length, cplx, dtype = SHAPES[args.shape]
    print(f"{torch.cuda.get_device_name()}, shape {b},{d},{n},{length} {'complex' if cplx else 'real'} "
          f"{str(dtype)[6:]}, inference forward")
    print(f"{'':>36} {'whole ms':>9} {'GPU ms':>8} {'host us/call':>13}")
    for label, whole, gpu, host in rows:
        print(f"{label:>36} {whole:9.3f} {gpu:8.3f} {host:13.1f}")

    x = {key: v for key, v in inputs.items() if key != "delta_softplus"}

    def stage(fn: Callable[[], object], reps: int = 200) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps * 1e6

    torch.cuda._sleep(800_000_000)
    u = x["u"]
    stages = {
        "argument checks": lambda: check_scan_args(u, x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                                   x["delta_bias"], None),
        "B / C layouts": lambda: (ts._prep_bc(x["B"], cplx), ts._prep_bc(x["C"], cplx)),
        "tile plan": lambda: ts._Plan(b, d, length, False, cplx, None, u.device),
        "output allocation": lambda: torch.empty_like(u),
    }
    for label, fn in stages.items():
        print(f"{label:>36} {stage(fn):8.1f} us")
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
