"""Generation and training speed of the Mamba U-Net (random weights; speed only).

    python -m benchmarks.sampling                          # the 6.1M SC09 model on the GPU
    python -m benchmarks.sampling --device cpu --preset sc09-6.1m --batches 1 --steps 64

Rows:
* generation samples/s per clip and in all (``batch * samples / s``) at batch 1, 16 and 64:
  ``MambaUNet.step`` one sample at a time through :func:`seqmodels.generate.generate_codes`
  (sampling included), timed over ``--steps`` samples after ``--warmup``;
* the wall time of 16 one-second clips at batch 16 (what ``seqmodels generate`` does by default);
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


def generation_rate(model: MambaUNet, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Samples per second of one clip (each of ``batch`` clips advances this fast)."""
    generate_codes(model, batch, warmup, progress=False)  # a multiple of 16 exercises every stage
    _sync(device)
    start = time.perf_counter()
    generate_codes(model, batch, steps, progress=False)
    _sync(device)
    return steps / (time.perf_counter() - start)


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
    parser.add_argument("--steps", type=int, default=1024, help="timed generation samples per row")
    parser.add_argument("--warmup", type=int, default=64)
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
    print(f"{'measurement':<44} {'value':>14}")
    for batch in args.batches:
        rate = generation_rate(model, batch, args.steps, args.warmup, device)
        print(f"{f'generation, batch {batch}: samples/s per clip':<44} {rate:>14,.0f}")
        print(f"{f'generation, batch {batch}: samples/s in all':<44} {rate * batch:>14,.0f}")
    if not args.skip_clips:
        _sync(device)
        start = time.perf_counter()
        generate_codes(model, 16, SAMPLE_RATE, progress=False)
        _sync(device)
        print(f"{'16 one-second clips (batch 16): wall s':<44} {time.perf_counter() - start:>14,.1f}")
    if args.train_steps > 0:
        rate = training_rate(model, args.train_batch, args.train_length, args.train_steps, device)
        label = f"training, {args.train_batch} x {args.train_length}: tokens/s"
        print(f"{label:<44} {rate:>14,.0f}")


if __name__ == "__main__":
    main()
