"""Quality anchor of the DNA recipe: held-out bits per base of a Mamba trained for a fixed time,
against order-k Markov chains fitted on the same training split.

    bash data/human_segments/fetch.sh                      # 6 Mb of real human DNA (Debian package)
    python -m benchmarks.dna_quality --max-time 00:00:04:00

Runs ``seqmodels fit`` (configs/dna/hg38_7m.yaml by default, with the data, length and time
overridden) and ``seqmodels test`` on the best checkpoint, prints the exact commands, then fits
Markov chains of orders 1..K with add-one smoothing on the training intervals, chooses the order
on the validation intervals and reports test bits per base for both.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from seqmodels.data.bed import read_bed, select_split
from seqmodels.data.fasta import FastaFile
from seqmodels.tasks.callbacks import read_metrics_csv

_CODE = np.full(256, 4, dtype=np.int64)  # A C G T -> 0..3, anything else -> 4 (breaks contexts)
for i, base in enumerate(b"ACGT"):
    _CODE[base] = i


def _codes(fasta: FastaFile, chrom: str, start: int, end: int) -> np.ndarray:
    return _CODE[np.frombuffer(fasta.fetch(chrom, start, end).encode(), dtype=np.uint8)]


def _kmer_index(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every position t >= k whose k preceding bases and itself are ACGT: (context * 4 + base)."""
    n = len(codes) - k
    if n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    idx = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for j in range(k + 1):
        window = codes[j : j + n]
        valid &= window < 4
        idx = idx * 4 + np.minimum(window, 3)
    return idx, valid


def markov_bits_per_base(fasta: FastaFile, train, evals: dict, orders: list[int]) -> dict:
    """Bits per base of order-k chains (add-one smoothing) on each evaluation split.

    Evaluation scores every ACGT base of an interval that has k ACGT bases before it, reading the
    context from the chromosome (it may start before the interval)."""
    out = {}
    train_codes = [_codes(fasta, iv.chrom, iv.start, iv.end) for iv in train]
    for k in orders:
        counts = np.zeros(4 ** (k + 1), dtype=np.float64)
        for codes in train_codes:
            idx, valid = _kmer_index(codes, k)
            counts += np.bincount(idx[valid], minlength=counts.size)
        table = counts.reshape(-1, 4) + 1.0
        logp = np.log2(table / table.sum(1, keepdims=True)).reshape(-1)
        out[k] = {}
        for split, intervals in evals.items():
            total, n = 0.0, 0
            for iv in intervals:
                codes = _codes(fasta, iv.chrom, max(0, iv.start - k), iv.end)
                idx, valid = _kmer_index(codes, k)
                total -= logp[idx[valid]].sum()
                n += int(valid.sum())
            out[k][split] = total / max(n, 1)
    return out


def run(cmd: list[str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", default="data/human_segments/segments.fa")
    parser.add_argument("--bed", default="data/human_segments/segments.bed")
    parser.add_argument("--config", default="configs/dna/hg38_7m.yaml")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=16, help="at --seq-len (the warmup scales it up)")
    parser.add_argument("--train-windows", type=int, default=4096, help="training windows per epoch")
    parser.add_argument("--max-time", default="00:00:04:00", help="training budget, DD:HH:MM:SS")
    parser.add_argument("--orders", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--out", type=Path, default=Path("runs/dna_quality"))
    parser.add_argument("--skip-model", action="store_true", help="only the Markov baselines")
    args = parser.parse_args()

    fasta = FastaFile(args.fasta)
    intervals = read_bed(args.bed, fasta.chrom_lengths)
    splits = {s: select_split(intervals, s, args.bed) for s in ("train", "valid", "test")}
    result: dict = {"fasta": args.fasta, "bed": args.bed, "bases": {s: sum(i.end - i.start for i in v) for s, v in splits.items()}}

    if not args.skip_model:
        exe = [sys.executable, "-m", "seqmodels"]
        common = [
            "--config", args.config, "--data.fasta", args.fasta, "--data.bed", args.bed,
            "--data.seq_len", str(args.seq_len), "--data.batch_size", str(args.batch_size),
            "--data.num_workers", "4", "--trainer.logger.init_args.save_dir", str(args.out),
        ]
        start = time.time()
        run([*exe, "fit", *common, "--data.max_train_windows", str(args.train_windows),
             "--trainer.max_time", args.max_time, "--trainer.max_epochs", "1000"])
        result["fit_s"] = time.time() - start
        runs = sorted((args.out).glob("*/version_*"), key=lambda p: p.stat().st_mtime)
        ckpt = runs[-1] / "checkpoints" / "best.ckpt"
        run([*exe, "test", *common, "--ckpt_path", str(ckpt)])
        test_run = sorted((args.out).glob("*/version_*"), key=lambda p: p.stat().st_mtime)[-1]
        metrics = read_metrics_csv(test_run / "metrics.csv")
        result["mamba_test_bits_per_base"] = metrics["test/bits_per_base"][-1][1]
        fit_metrics = read_metrics_csv(runs[-1] / "metrics.csv")
        result["mamba_best_val_bits_per_base"] = min(v for _, v in fit_metrics["val/bits_per_base"])
        result["mamba_train_steps"] = max(s for s, _ in fit_metrics["train/loss_step"])
        result["checkpoint"] = str(ckpt)

    markov = markov_bits_per_base(fasta, splits["train"], {"valid": splits["valid"], "test": splits["test"]}, args.orders)
    best_k = min(markov, key=lambda k: markov[k]["valid"])
    result["markov"] = {str(k): v for k, v in markov.items()}
    result["markov_best_order"] = best_k
    result["markov_test_bits_per_base"] = markov[best_k]["test"]

    print("\norder  valid bits/base  test bits/base")
    for k, v in markov.items():
        print(f"{k:5d}  {v['valid']:15.4f}  {v['test']:14.4f}{'  <- chosen on valid' if k == best_k else ''}")
    print(f"\nbases: {result['bases']}")
    if "mamba_test_bits_per_base" in result:
        print(f"Mamba ({args.config}, {args.max_time}): test {result['mamba_test_bits_per_base']:.4f} bits/base "
              f"(best val {result['mamba_best_val_bits_per_base']:.4f}, {result['mamba_train_steps']} steps)")
    print(f"Markov order {best_k}: test {result['markov_test_bits_per_base']:.4f} bits/base (uniform: 2.0)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dna_quality.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
