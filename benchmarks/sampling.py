"""Generation and training speed of the Mamba U-Net (random weights; speed only).

    python -m benchmarks.sampling                          # the 6.1M SC09 model on the GPU
    python -m benchmarks.sampling --device cpu --preset sc09-6.1m --batches 1 --steps 64

Rows:
* generation samples/s per clip and in all (``batch * samples / s``) at batch 1, 16 and 64, one
  sample at a time through :func:`seqmodels.generate.generate_codes` (sampling included), for
  each path: ``unfused`` (``MambaBlock.step`` per block, eager), ``fused`` (one stage kernel per
  stage, eager), ``unfused+graph`` and ``fused+graph`` (one 16-sample period replayed from a
  CUDA graph; the default on a GPU). The rate is ``steps / (t(warmup + steps) - t(warmup))``, so
  packing the weights and capturing the graph (once per call) are left out;
* the wall time of 16 one-second clips at batch 16 with the default path, everything included
  (what ``seqmodels generate`` does by default, less loading the checkpoint and writing WAVs);
* training tokens/s on 16,000-sample clips at batch 16 (bf16 autocast forward, backward, AdamW).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seqmodels.data.audio import SAMPLE_RATE
from seqmodels.generate import generate_codes
from seqmodels.models import MambaUNet, MambaUNetConfig
from seqmodels.tasks.optim import param_groups


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# name -> generate_codes keyword arguments; on a CPU only the eager paths run.
PATHS = {
    "unfused": {"fused": False, "cuda_graph": False},
    "fused": {"fused": True, "cuda_graph": False},
    "unfused+graph": {"fused": False, "cuda_graph": True},
    "fused+graph": {"fused": True, "cuda_graph": True},
}


def generation_rate(
    model: MambaUNet, batch: int, steps: int, warmup: int, device: torch.device, **path: bool
) -> float:
    """Samples per second of one clip (each of ``batch`` clips advances this fast)."""

    def timed(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        generate_codes(model, batch, n, progress=False, **path)
        _sync(device)
        return time.perf_counter() - start

    timed(warmup)  # compiles the kernels of this batch size
    return steps / (timed(warmup + steps) - timed(warmup))


def training_rate(model: MambaUNet, batch: int, length: int, steps: int, device: torch.device) -> float:
    """Labelled samples per second of full training steps (median over ``steps`` after 2 warm-up)."""
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=2e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for i in range(steps + 2):
        ids = torch.randint(0, 256, (batch, length), device=device)
        _sync(device)
        start = time.perf_counter()
        with autocast:
            logits = model(ids)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    model.eval()
    return batch * length / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sc09-6.1m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=2048, help="timed generation samples per graph row")
    parser.add_argument("--eager-steps", type=int, default=256, help="timed generation samples per eager row")
    parser.add_argument("--warmup", type=int, default=64, help="a multiple of 16 exercises every stage")
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=list(PATHS))
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-length", type=int, default=16_000)
    parser.add_argument("--train-steps", type=int, default=10, help="0 skips the training row")
    parser.add_argument("--skip-clips", action="store_true", help="skip the 16 one-second clips row")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MambaUNet(MambaUNetConfig.from_name(args.preset, scan_impl="auto")).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.preset} ({n_params:,} parameters) on {name}, torch {torch.__version__}")
    print(f"{'measurement':<52} {'value':>14}")
    paths = [p for p in args.paths if device.type == "cuda" or not PATHS[p]["cuda_graph"]]
    for path in paths:
        steps = args.steps if PATHS[path]["cuda_graph"] else args.eager_steps
        for batch in args.batches:
            rate = generation_rate(model, batch, steps, args.warmup, device, **PATHS[path])
            print(f"{f'generation {path}, batch {batch}: samples/s per clip':<52} {rate:>14,.0f}")
            print(f"{f'generation {path}, batch {batch}: samples/s in all':<52} {rate * batch:>14,.0f}", flush=True)
    if not args.skip_clips:
        _sync(device)
        start = time.perf_counter()
        generate_codes(model, 16, SAMPLE_RATE, progress=False)
        _sync(device)
        print(f"{'16 one-second clips (batch 16, default path): wall s':<52} {time.perf_counter() - start:>14,.2f}")
    if args.train_steps > 0:
        rate = training_rate(model, args.train_batch, args.train_length, args.train_steps, device)
        label = f"training, {args.train_batch} x {args.train_length}: tokens/s"
        print(f"{label:<52} {rate:>14,.0f}")


if __name__ == "__main__":
    main()
