"""data/species/pretrain_split.py: the pretraining FASTA/BED covers only the regions the species
classifier's fractional split puts in each split, with unique record names."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from seqmodels.data.bed import read_bed
from seqmodels.data.fasta import FastaFile

SCRIPT = Path(__file__).resolve().parents[2] / "data" / "species" / "pretrain_split.py"


def _write_genome(path: Path, name: str, length: int, seed: int) -> str:
    rng = random.Random(seed)
    seq = "".join(rng.choice("ACGT") for _ in range(length))
    path.write_text(f">{name} a test genome\n" + "\n".join(seq[i : i + 60] for i in range(0, length, 60)) + "\n")
    return seq


def test_regions_follow_the_classifier_split(tmp_path: Path) -> None:
    genomes = tmp_path / "genomes"
    genomes.mkdir()
    seqs = {"A": _write_genome(genomes / "A.fa", "chr|1|", 10_000, 0),
            "B": _write_genome(genomes / "B.fa", "chr|1|", 7_000, 1)}  # same record name in both
    out = tmp_path / "lm"
    subprocess.run([sys.executable, str(SCRIPT), str(genomes), str(out), "--interval", "512"], check=True,
                   capture_output=True)

    fasta = FastaFile(out / "genomes.fa")
    names = {"A": "A__chr_1_", "B": "B__chr_1_"}
    for strain, seq in seqs.items():
        assert fasta.fetch(names[strain], 0, len(seq)) == seq
    rows = read_bed(out / "regions.bed")
    assert {r.split for r in rows} == {"train", "valid", "test"}
    for strain, seq in seqs.items():
        n = len(seq)
        bounds = {"train": (0, round(0.8 * n)), "valid": (round(0.8 * n), round(0.9 * n)), "test": (round(0.9 * n), n)}
        mine = [r for r in rows if r.chrom == names[strain]]
        for r in mine:
            lo, hi = bounds[r.split]
            assert lo <= r.start < r.end <= hi and r.end - r.start == 512
        # whole intervals tile each region from its start; only a remainder shorter than one is left out
        for split, (lo, hi) in bounds.items():
            starts = sorted(r.start for r in mine if r.split == split)
            assert starts == list(range(lo, hi - 511, 512))
