"""Small FASTA / BED files written per test (tmp_path), with known content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FASTA = REPO_ROOT / "data" / "dna" / "sample.fa"
SAMPLE_BED = REPO_ROOT / "data" / "dna" / "sample.bed"


def random_dna(length: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=length))


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    with open(path, "w") as fh:
        for name, seq in records.items():
            fh.write(f">{name} test record\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i : i + width] + "\n")
    return path


@pytest.fixture
def genome(tmp_path: Path) -> dict[str, str]:
    """Two chromosomes with soft-masked (lower-case) stretches, as in UCSC FASTA."""
    chr1 = random_dna(5000, 1)
    chr1 = chr1[:100] + chr1[100:200].lower() + chr1[200:]
    return {"chr1": chr1, "chr2": random_dna(3000, 2)}


@pytest.fixture
def fasta_path(tmp_path: Path, genome: dict[str, str]) -> Path:
    return write_fasta(tmp_path / "genome.fa", genome)


@pytest.fixture
def bed_path(tmp_path: Path) -> Path:
    path = tmp_path / "genome.bed"
    path.write_text(
        "track name=test\n"
        "# chrom start end split\n"
        "chr1\t0\t2048\ttrain\n"
        "chr1 2048 4096 train\n"
        "chr2\t0\t1024\tval\n"
        "chr2\t1024\t2048\tvalidation\n"
        "chr2\t2048\t3000\ttest\n"
    )
    return path


@pytest.fixture
def sample_files(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the shipped sample, so that its .fai index is built outside the repository."""
    import shutil

    fasta = Path(shutil.copy(SAMPLE_FASTA, tmp_path / SAMPLE_FASTA.name))
    bed = Path(shutil.copy(SAMPLE_BED, tmp_path / SAMPLE_BED.name))
    return fasta, bed
