"""benchmarks/species_kmer_baseline.py: linear probes on k-mer counts and on backbone embeddings (CPU)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from benchmarks import species_kmer_baseline as probe
from seqmodels.data.tokenizer import DNATokenizer
from tests.species_task.conftest import REPO, STRAINS


@pytest.fixture
def genome_dir(tmp_path):
    d = tmp_path / "aureus"
    d.mkdir()
    for strain in STRAINS:  # the 60 kb samples, one class each
        os.symlink(REPO / f"data/species/aureus_{strain}.fa", d / f"{strain}.fa")
    return d


def test_embedding_features_are_mean_pooled_hidden_states(pretrained):
    _, lm = pretrained
    model = lm.model.eval()
    seqs = [("ACGTNACGTTGCA" * 4)[:48], ("GGGCCCAAATTT" * 4)[:48]]  # one window length, an N included
    got = probe.embedding_features(model, seqs)
    ids = torch.stack([DNATokenizer().encode_tensor(s) for s in seqs])
    with torch.no_grad():
        want = model.hidden_states(ids).mean(1).double().numpy()
    assert got.shape == (2, model.config.d_model)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_probe_runs_on_kmers_and_on_a_checkpoints_embeddings(genome_dir, pretrained, capsys):
    path, _ = pretrained
    common = ["--genome-dir", str(genome_dir), "--lengths", "128", "256", "--train-windows", "12", "--test-windows", "6"]
    for extra in ([], ["--features", "embedding", "--checkpoint", str(path)]):
        rows = probe.main(common + extra)
        assert [length for length, _ in rows] == [128, 256]
        assert all(0.0 <= acc <= 1.0 for _, acc in rows)
    out = capsys.readouterr().out
    assert "k = 6" in out and "embeddings of" in out and "chance 0.20" in out


def test_probe_needs_one_backbone_for_embeddings(genome_dir, pretrained):
    path, _ = pretrained
    with pytest.raises(SystemExit, match="exactly one"):
        probe.main(["--genome-dir", str(genome_dir), "--features", "embedding"])
    with pytest.raises(SystemExit, match="exactly one"):
        probe.main(["--genome-dir", str(genome_dir), "--features", "embedding", "--checkpoint", str(path),
                    "--random-preset", "1.4m"])


def test_block_split_alternates_training_and_test_regions(genome_dir):
    """With B blocks every window lies inside one block's [lo, hi) fraction, windows come from
    several blocks, and one block gives the windows of the plain split."""
    from seqmodels.data.fasta import FastaFile

    fasta = FastaFile(genome_dir / f"{STRAINS[0]}.fa")
    chrom, size = max(fasta.chrom_lengths.items(), key=lambda kv: kv[1])
    span = size // 4
    seqs = probe.windows(fasta, 0.9, 1.0, 100, 40, np.random.default_rng(0), blocks=4)
    full = fasta.fetch(chrom, 0, size)
    starts = set()
    for s in seqs:
        hits = [i for i in range(size - 99) if full[i : i + 100] == s]
        assert hits and any(0.9 * span <= h % span and h % span + 100 <= span for h in hits)
        starts.add(hits[0] // span)
    assert len(starts) > 1
    one = probe.windows(fasta, 0.0, 0.8, 50, 5, np.random.default_rng(1))
    plain = [fasta.fetch(chrom, s, s + 50) for s in np.random.default_rng(1).integers(0, int(0.8 * size) - 50, 5)]
    assert one == plain


def test_markov_classifier_labels_windows_by_likelihood(genome_dir, capsys):
    """The generative classifier: each class's chain scores its own composition highest."""
    a, c = "ACGTTGCA" * 50, "GGGCCCAT" * 50
    chains = np.stack([probe.markov_log_probs([a], 3), probe.markov_log_probs([c], 3)])
    for label, seq in ((0, a[5:205]), (1, c[3:203])):
        assert chains[:, probe.kmer_indices(seq, 3)].sum(1).argmax() == label
    rows = probe.main(["--genome-dir", str(genome_dir), "--lengths", "256", "--train-windows", "8",
                       "--test-windows", "4", "--classifier", "markov", "--k", "4", "--blocks", "2"])
    assert len(rows) == 1 and 0.0 <= rows[0][1] <= 1.0
    assert "order-3 Markov chain per class, 2 blocks per genome" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="k-mers"):
        probe.main(["--genome-dir", str(genome_dir), "--classifier", "markov", "--features", "embedding",
                    "--random-preset", "1.4m"])
    with pytest.raises(SystemExit, match="blocks"):
        probe.main(["--genome-dir", str(genome_dir), "--blocks", "0"])
