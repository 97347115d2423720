"""How much strain signal do windows of length L carry? Linear probes on fixed features.

    python -m benchmarks.species_kmer_baseline --genome-dir data/species/full/pylori --lengths 1024 16384
    python -m benchmarks.species_kmer_baseline --features embedding --checkpoint LM.ckpt ...   # a pretrained LM
    python -m benchmarks.species_kmer_baseline --features embedding --random-preset 1.4m ...  # untrained control

For each FASTA of ``--genome-dir`` (one class each), windows are drawn from the first 80% of the
genome for training and from the last 10% for testing (the split of
``benchmarks/species_context.py``; with ``--blocks B``, the same split inside each of B equal blocks); each
window becomes a feature vector, and a softmax regression (standardised features, L2, full-batch
gradient descent) is fitted. ``--classifier markov`` fits one order-(k-1) Markov chain per class
to its training windows instead and labels a test window with the chain of highest likelihood:
the generative view, in which evidence adds up along the window. Features: the
window's normalised k-mer frequencies (``kmer``), or the mean over positions of the final
hidden states of a Mamba backbone (``embedding``): a pretraining (``dna_lm``) checkpoint's, or a
randomly initialised preset's as the control. Test accuracy above chance says the windows carry
signal that these features expose; for embeddings, whether the backbone's representation holds
it before any fine-tuning.
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
    counts = np.bincount(kmer_indices(seq, k), minlength=4**k).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def windows(fasta: FastaFile, lo: float, hi: float, length: int, count: int, rng, blocks: int = 1) -> list[str]:
    """``count`` random windows from the fraction [lo, hi) of the longest sequence, or, with
    ``blocks`` > 1, of each of that many equal blocks of it (a block drawn uniformly per window),
    so that training and test regions alternate along the genome."""
    chrom, size = max(fasta.chrom_lengths.items(), key=lambda kv: kv[1])
    span = size // blocks
    start, end = int(lo * span), int(hi * span) - length
    if end <= start:
        raise ValueError(f"{chrom}: a {length}-base window does not fit in [{lo}, {hi}) of "
                         f"{span} bases ({blocks} block(s) of {size})")
    # One block draws no block indices, so its windows are those of a plain [lo, hi) split.
    offsets = rng.integers(0, blocks, count) * span if blocks > 1 else np.zeros(count, dtype=np.int64)
    return [fasta.fetch(chrom, o + s, o + s + length) for o, s in zip(offsets, rng.integers(start, end, count))]


def kmer_indices(seq: str, k: int) -> np.ndarray:
    """Index (base 4) of every k-mer of ``seq`` without a non-ACGT base."""
    codes = _CODE[np.frombuffer(seq.encode(), dtype=np.uint8)]
    n = len(codes) - k + 1
    idx = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for j in range(k):
        window = codes[j : j + n]
        valid &= window < 4
        idx = idx * 4 + np.minimum(window, 3)
    return idx[valid]


def markov_log_probs(seqs: list[str], k: int) -> np.ndarray:
    """log P(base | the k - 1 before it) of an order-(k - 1) Markov chain fitted to ``seqs``
    (add-1/2 smoothing), indexed by k-mer."""
    counts = np.zeros(4**k)
    for s in seqs:
        counts += np.bincount(kmer_indices(s, k), minlength=4**k)
    c = counts.reshape(-1, 4) + 0.5
    return np.log(c / c.sum(1, keepdims=True)).ravel()


def kmer_features(seqs: list[str], k: int) -> np.ndarray:
    return np.stack([kmer_frequencies(s, k) for s in seqs])


def embedding_features(model, seqs: list[str], batch_tokens: int = 2**18) -> np.ndarray:
    """Mean over positions of ``model.hidden_states`` (a MambaLM) for each window, float64."""
    import torch

    from seqmodels.data.tokenizer import DNATokenizer

    tok = DNATokenizer()
    device = next(model.parameters()).device
    batch = max(1, batch_tokens // len(seqs[0]))
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(seqs), batch):
            ids = torch.stack([tok.encode_tensor(s) for s in seqs[i : i + batch]]).to(device)
            out.append(model.hidden_states(ids).float().mean(1).double().cpu().numpy())
    return np.concatenate(out)


def load_backbone(checkpoint: Path | None, random_preset: str | None):
    """The MambaLM whose embeddings are probed: a ``dna_lm`` checkpoint, or a random preset."""
    import torch

    from seqmodels import load_checkpoint
    from seqmodels.models import MambaConfig, MambaLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if checkpoint is not None:
        model, _ = load_checkpoint(checkpoint, map_location="cpu")
        if not isinstance(model, MambaLM):
            raise SystemExit(f"{checkpoint}: not a pretraining (dna_lm) checkpoint")
    else:
        torch.manual_seed(0)
        model = MambaLM(MambaConfig.from_name(random_preset))
    return model.to(device).eval()


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


def main(argv: list[str] | None = None) -> list[tuple[int, float]]:
    """Run the probe; returns (L, test accuracy) per length."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genome-dir", type=Path, default=Path("data/species/full/pylori"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--train-windows", type=int, default=300, help="per class")
    parser.add_argument("--test-windows", type=int, default=100, help="per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="kmer", choices=["kmer", "embedding"])
    parser.add_argument("--checkpoint", type=Path, help="embedding: a pretraining (dna_lm) checkpoint")
    parser.add_argument("--random-preset", help="embedding: a randomly initialised preset instead (the control)")
    parser.add_argument("--blocks", type=int, default=1,
                        help="cut each genome into this many blocks and split every block 80 / 10 / 10 "
                             "(default 1: one training and one test region per genome)")
    parser.add_argument("--classifier", default="softmax", choices=["softmax", "markov"],
                        help="softmax regression on the features, or (k-mers only) a generative "
                             "classifier: one order-(k-1) Markov chain per class, fitted to its "
                             "training windows, picks the class of highest likelihood")
    args = parser.parse_args(argv)
    if args.blocks < 1:
        raise SystemExit(f"--blocks must be at least 1, got {args.blocks}")
    if args.classifier == "markov" and args.features != "kmer":
        raise SystemExit("--classifier markov works on k-mers: leave --features at kmer")
    if args.features == "embedding" and (args.checkpoint is None) == (args.random_preset is None):
        raise SystemExit("--features embedding needs exactly one of --checkpoint and --random-preset")
    model = load_backbone(args.checkpoint, args.random_preset) if args.features == "embedding" else None
    files = sorted(args.genome_dir.glob("*.fa"))
    if len(files) < 2:
        raise SystemExit(f"{args.genome_dir}: need at least two .fa files (one per class)")
    genomes = [FastaFile(f) for f in files]
    what = f"k = {args.k}" if model is None else f"embeddings of {args.checkpoint or 'random ' + args.random_preset}"
    if args.classifier == "markov":
        what = f"order-{args.k - 1} Markov chain per class"
    if args.blocks > 1:
        what += f", {args.blocks} blocks per genome"
    print(f"{args.genome_dir.name}: {len(files)} classes ({', '.join(f.stem for f in files)}), {what}")
    print(f"{'L':>8}  {'test accuracy':>13}  (chance {1 / len(files):.2f})")

    def featurize(seqs: list[str]) -> np.ndarray:
        return kmer_features(seqs, args.k) if model is None else embedding_features(model, seqs)

    rows = []
    for length in args.lengths:
        rng = np.random.default_rng(args.seed)
        if args.classifier == "markov":
            chains, correct = [], 0
            for fasta in genomes:
                chains.append(markov_log_probs(windows(fasta, 0.0, 0.8, length, args.train_windows, rng,
                                                       args.blocks), args.k))
            chains = np.stack(chains)
            for c, fasta in enumerate(genomes):
                for seq in windows(fasta, 0.9, 1.0, length, args.test_windows, rng, args.blocks):
                    correct += int(chains[:, kmer_indices(seq, args.k)].sum(1).argmax() == c)
            acc = correct / (len(genomes) * args.test_windows)
            print(f"{length:>8}  {acc:>13.3f}")
            rows.append((length, acc))
            continue
        xtr, ytr, xte, yte = [], [], [], []
        for c, fasta in enumerate(genomes):
            xtr.append(featurize(windows(fasta, 0.0, 0.8, length, args.train_windows, rng, args.blocks)))
            xte.append(featurize(windows(fasta, 0.9, 1.0, length, args.test_windows, rng, args.blocks)))
            ytr += [c] * args.train_windows
            yte += [c] * args.test_windows
        xtr, xte = np.concatenate(xtr), np.concatenate(xte)
        if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
            raise SystemExit(f"L = {length}: the features hold NaN or inf")
        mu, sd = xtr.mean(0), xtr.std(0)
        # Features that hardly vary (relative spread below 1e-6) carry nothing but rounding noise,
        # which standardising would blow up: they are dropped.
        keep = sd > 1e-6 * np.maximum(np.abs(mu), 1e-12)
        mu, sd, xtr, xte = mu[keep], sd[keep], xtr[:, keep], xte[:, keep]
        w = softmax_regression((xtr - mu) / sd, np.array(ytr), len(files))
        acc = float(((((xte - mu) / sd) @ w).argmax(1) == np.array(yte)).mean())
        print(f"{length:>8}  {acc:>13.3f}")
        rows.append((length, acc))
    return rows


if __name__ == "__main__":
    main()
