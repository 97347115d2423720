"""Training-step time, tokens/s and peak memory of the DNA presets at long contexts.

    python -m benchmarks.long_context                       # the default grid, on the GPU
    python -m benchmarks.long_context --preset 7m --lengths 1048576 --batch 1
    python -m benchmarks.long_context --preset 7m --lengths 1048576 --inference   # forward alone

Each row times full training steps (bf16 autocast forward, backward, AdamW step) after warm-up,
with fresh random tokens every step, and reports the peak GPU memory allocated during the timed
steps (``peak_gib``; ``reserved_gib`` adds what PyTorch's allocator holds unused, and it is the
figure for graphed rows, whose activations stay in the graph's memory pool, allocated before the
timed steps) and two speeds:

- ``step_s`` / ``tokens_per_s``: one step on its own, the GPU idle before it and waited for
  after it (median of ``--steps``). The host's time to launch the first kernels is in it.
- ``train_step_s`` / ``train_tokens_per_s``: ``--steps`` steps back to back, as a training loop
  runs them, with one wait at the end: total time over steps. While the GPU works on one step
  the host already launches the next, so this is the training throughput; it is the larger of
  the GPU's time per step and the host's. ``--profile`` also prints the GPU time of
one more step by kernel. ``--cuda-graph`` replays the blocks of rows without checkpointing
from CUDA graphs (``MambaConfig.cuda_graph``; captured during the warm-up steps).
``--inference`` times forward passes alone instead of training steps (model in eval mode, no
gradient: what scoring or classifying long windows costs); a "step" is then one forward pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from seqmodels.models import MambaClassifier, MambaConfig, MambaLM
from seqmodels.tasks.optim import param_groups

DEFAULT_GRID = [  # (preset, L, batch)
    ("1.4m", 1024, 64),
    ("7m", 1024, 64),
    ("1.4m", 2**14, 4),
    ("7m", 2**14, 4),
    ("1.4m", 2**17, 1),
    ("7m", 2**17, 1),
    ("1.4m", 2**20, 1),
    ("7m", 2**20, 1),
]


def time_training_step(
    preset: str, length: int, batch: int, scan_impl: str, checkpointing: bool, steps: int, warmup: int,
    task: str = "lm", profile: bool = False, checkpoint_dtype: str = "float32", scan_states: bool = True,
    cuda_graph: bool = False, inference: bool = False,
) -> dict:
    """One row: training steps, or with ``inference`` forward passes alone (no gradient, the
    model in eval mode, no optimizer)."""
    device = torch.device("cuda")
    if warmup < 3 and cuda_graph:
        raise ValueError("cuda_graph: --warmup must be at least 3 (a graph is captured at the second step)")
    config = MambaConfig.from_name(preset, scan_impl=scan_impl, checkpointing=checkpointing,
                                   checkpoint_dtype=checkpoint_dtype, checkpoint_scan_states=scan_states,
                                   cuda_graph=cuda_graph)
    if task == "lm":
        model = MambaLM(config).to(device).train()
    else:  # the great-apes classifier: 5 classes, last-position pooling
        model = MambaClassifier(config, num_classes=5, pooling="last").to(device).train()
    if inference:
        model.eval()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=True)
    times = []
    torch.cuda.reset_peak_memory_stats(device)

    def step() -> Tensor:
        tokens = torch.randint(7, 11, (batch, length + 1), device=device)  # A, C, G, T ids
        if inference:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return model(tokens[:, :-1]).float().mean()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])
        if task == "lm":
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        else:
            loss = F.cross_entropy(logits.float(), torch.randint(0, 5, (batch,), device=device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(warmup + steps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = step()
        torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if i == warmup - 1:
            torch.cuda.empty_cache()  # reserved memory: what the timed steps need, not the warm-up's cache
            torch.cuda.reset_peak_memory_stats(device)
    step_s = statistics.median(times)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize(device)
    train_step_s = (time.perf_counter() - start) / steps
    if profile:
        print_profile(step, f"{task} {preset}, L {length} x batch {batch}, checkpointing {checkpointing}")
    return {
        "task": task,
        "inference": inference,
        "preset": preset,
        "L": length,
        "batch": batch,
        "scan_impl": scan_impl,
        "checkpointing": checkpointing,
        "checkpoint_dtype": checkpoint_dtype if checkpointing else None,
        "checkpoint_scan_states": scan_states if checkpointing else None,
        "cuda_graph": cuda_graph,
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": step_s,
        "tokens_per_s": batch * length / step_s,
        "train_step_s": train_step_s,
        "train_tokens_per_s": batch * length / train_step_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
        "loss": float(loss),
    }


def print_profile(step: Callable[[], object], title: str) -> None:
    """GPU time of one more step by kernel (the 25 largest) and in all."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    total_ms = sum(e.device_time_total for e in events) / 1e3
    print(f"\nGPU time by kernel, one step, {title}: {total_ms:.1f} ms in all")
    print(events.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["1.4m", "7m", "40.7m"], help="only this preset")
    parser.add_argument("--lengths", type=int, nargs="*", help="only these lengths")
    parser.add_argument("--batch", type=int, help="override the batch size of every row")
    parser.add_argument("--scan-impl", default="auto", choices=["auto", "triton", "torch", "ref"])
    parser.add_argument(
        "--checkpointing", default="long", choices=["long", "on", "off"],
        help="activation checkpointing per block: 'long' turns it on from L >= 2^17",
    )
    parser.add_argument("--checkpoint-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="dtype of the block inputs kept by the checkpoints (MambaConfig.checkpoint_dtype)")
    parser.add_argument("--no-scan-states", action="store_true",
                        help="checkpointing recomputes the scan too (MambaConfig.checkpoint_scan_states=False)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="rows without checkpointing replay the blocks from CUDA graphs (MambaConfig.cuda_graph)")
    parser.add_argument("--task", default="lm", choices=["lm", "classifier"], help="next-base LM or species classifier")
    parser.add_argument("--inference", action="store_true",
                        help="time forward passes alone (no gradient, eval mode) instead of training steps")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--profile", action="store_true", help="also print GPU time by kernel of one step per row")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.long_context needs a CUDA GPU")

    rows = []
    for preset, length, batch in DEFAULT_GRID:
        if args.preset and preset != args.preset or args.lengths and length not in args.lengths:
            continue
        # checkpointing only acts in training (forward passes alone never checkpoint)
        ckpt = {"on": True, "off": False}.get(args.checkpointing, length >= 2**17) and not args.inference
        try:
            row = time_training_step(
                preset, length, args.batch or batch, args.scan_impl, ckpt, args.steps, args.warmup, args.task,
                args.profile, args.checkpoint_dtype, not args.no_scan_states, args.cuda_graph and not ckpt,
                args.inference,
            )
        except torch.OutOfMemoryError:
            row = {"preset": preset, "L": length, "batch": args.batch or batch, "error": "out of memory"}
        gc.collect()  # the last row's model, and any CUDA graphs it captured
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"task: {args.task}{' (inference: forward passes alone)' if args.inference else ''}, "
          f"checkpointed stream: {args.checkpoint_dtype}, scan states kept: {not args.no_scan_states}")
    print("step: one step alone (median); back to back: steps as a training loop runs them (mean)")
    print(f"{'preset':>6} {'L':>8} {'batch':>5} {'ckpt':>5} {'graph':>5} {'step s':>8} {'tokens/s':>11} "
          f"{'b2b step s':>10} {'b2b tokens/s':>12} {'peak GiB':>9} {'reserved':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:>6} {r['L']:>8} {r['batch']:>5} {'':>5} {r['error']}")
            continue
        print(
            f"{r['preset']:>6} {r['L']:>8} {r['batch']:>5} {str(r['checkpointing']):>5} {str(r['cuda_graph']):>5} "
            f"{r['step_s']:8.3f} {r['tokens_per_s']:11.3e} {r['train_step_s']:10.4f} "
            f"{r['train_tokens_per_s']:12.3e} {r['peak_gib']:9.2f} {r['reserved_gib']:9.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
