"""Test NLL (bits per sample) of a waveform LM against context length: the YouTubeMix figure of
the Mamba paper (section 4.4.1), for one checkpoint.

    python -m benchmarks.nll_context --checkpoint runs/audio_youtubemix/version_0/checkpoints/best.ckpt \
        --data.root data/youtubemix --lengths 8192 32768 131072 524288 --output nll_context

For each length ``L`` the test split is cut into the dataset's fixed, non-overlapping windows of
``L`` samples (:class:`~seqmodels.data.audio_datasets.YouTubeMixDataset`, ``train=False``, the
checkpoint's mu-law variant) and the NLL is averaged over every sample of up to
``--max-windows`` windows. Longer windows give every sample, on average, more context. Writes
``OUTPUT.json`` (rows of ``length, windows, bits_per_sample``) and ``OUTPUT.png``. The paper's
figure trains one model per length; run this once per checkpoint to reproduce it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from seqmodels.data.audio_datasets import YouTubeMixDataset
from seqmodels.generate import load_waveform_model


@torch.inference_mode()
def nll_by_context(
    model: torch.nn.Module,
    root: str,
    lengths: list[int],
    mu_law: str,
    max_windows: int,
    batch_size: int,
    device: torch.device,
) -> list[dict]:
    """Rows ``{"length", "windows", "bits_per_sample"}``, one per entry of ``lengths``."""
    rows = []
    for length in lengths:
        dataset = YouTubeMixDataset(root, "test", seq_len=length, train=False, mu_law=mu_law)
        n = min(len(dataset), max_windows)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            items = [dataset[i] for i in range(start, min(n, start + batch_size))]
            ids = torch.stack([item["input_ids"] for item in items]).to(device)
            labels = torch.stack([item["labels"] for item in items]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(ids)
            total += F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum").item()
            count += labels.numel()
        rows.append({"length": length, "windows": n, "bits_per_sample": total / count / math.log(2)})
        print(f"length {length:>9}: {n:>4} windows, {rows[-1]['bits_per_sample']:.4f} bits/sample")
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot([r["length"] for r in rows], [r["bits_per_sample"] for r in rows], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (samples)")
    ax.set_ylabel("test NLL (bits per sample)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data.root", dest="root", required=True, help="YouTubeMix WAV directory")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072, 262144, 524288])
    parser.add_argument("--max-windows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="nll_context", help="writes OUTPUT.json and OUTPUT.png")
    args = parser.parse_args(argv)
    bad = [n for n in args.lengths if n < 16 or n % 16]
    if bad:
        print(f"nll_context: --lengths must be multiples of 16, got {bad}", file=sys.stderr)
        return 1
    try:
        model, mu_law = load_waveform_model(args.checkpoint, torch.device(args.device))
        rows = nll_by_context(model, args.root, sorted(args.lengths), mu_law, args.max_windows, args.batch_size, torch.device(args.device))
    except (FileNotFoundError, ValueError) as err:
        print(f"nll_context: {err}", file=sys.stderr)
        return 1
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"), Path(args.checkpoint).name)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
