"""How much strain signal do windows of length L carry? A k-mer composition baseline.

    python -m benchmarks.species_kmer_baseline --genome-dir data/species/full/pylori --lengths 1024 16384

For each FASTA of ``--genome-dir`` (one class each), windows are drawn from the first 80% of the
genome for training and from the last 10% for testing (the split of
``benchmarks/species_context.py``); each window becomes its normalised k-mer frequency vector,
and a softmax regression (standardised features, L2, full-batch gradient descent) is fitted.
Test accuracy above chance says the windows carry composition signal a sequence model can use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from seqmodels.data.fasta import FastaFile

_CODE = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i


def kmer_frequencies(seq: str, k: int) -> np.ndarray:
    """Normalised counts of the 4^k k-mers of ``seq`` (k-mers with a non-ACGT base skipped)."""
    codes = _CODE[np.frombuffer(seq.encode(), dtype=np.uint8)]
    n = len(codes) - k + 1
    idx = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for j in range(k):
        window = codes[j : j + n]
        valid &= window < 4
        idx = idx * 4 + np.minimum(window, 3)
    counts = np.bincount(idx[valid], minlength=4**k).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def windows(fasta: FastaFile, lo: float, hi: float, length: int, count: int, k: int, rng) -> np.ndarray:
    """``count`` random windows from the fraction [lo, hi) of the longest sequence."""
    chrom, size = max(fasta.chrom_lengths.items(), key=lambda kv: kv[1])
    start, end = int(lo * size), int(hi * size) - length
    if end <= start:
        raise ValueError(f"{chrom}: a {length}-base window does not fit in [{lo}, {hi}) of {size} bases")
    return np.stack([kmer_frequencies(fasta.fetch(chrom, s, s + length), k) for s in rng.integers(start, end, count)])


def softmax_regression(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 300, lr: float = 0.05,
                       l2: float = 1e-2) -> np.ndarray:
    w = np.zeros((x.shape[1], classes))
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        w -= lr * (x.T @ p / len(y) + l2 * w)
    return w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genome-dir", type=Path, default=Path("data/species/full/pylori"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--train-windows", type=int, default=300, help="per class")
    parser.add_argument("--test-windows", type=int, default=100, help="per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted(args.genome_dir.glob("*.fa"))
    if len(files) < 2:
        raise SystemExit(f"{args.genome_dir}: need at least two .fa files (one per class)")
    genomes = [FastaFile(f) for f in files]
    print(f"{args.genome_dir.name}: {len(files)} classes ({', '.join(f.stem for f in files)}), k = {args.k}")
    print(f"{'L':>8}  {'test accuracy':>13}  (chance {1 / len(files):.2f})")
    for length in args.lengths:
        rng = np.random.default_rng(args.seed)
        xtr, ytr, xte, yte = [], [], [], []
        for c, fasta in enumerate(genomes):
            xtr.append(windows(fasta, 0.0, 0.8, length, args.train_windows, args.k, rng))
            xte.append(windows(fasta, 0.9, 1.0, length, args.test_windows, args.k, rng))
            ytr += [c] * args.train_windows
            yte += [c] * args.test_windows
        xtr, xte = np.concatenate(xtr), np.concatenate(xte)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
        w = softmax_regression((xtr - mu) / sd, np.array(ytr), len(files))
        acc = float(((((xte - mu) / sd) @ w).argmax(1) == np.array(yte)).mean())
        print(f"{length:>8}  {acc:>13.3f}")


if __name__ == "__main__":
    main()
