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
