from __future__ import annotations

import gzip
import re

import pytest

from seqmodels.data.bed import count_splits, read_bed, select_split
from seqmodels.data.fasta import FastaFile
from seqmodels.data.tokenizer import PAD_CHAR


def test_fasta_builds_index_and_fetches_upper_case(fasta_path, genome):
    assert not fasta_path.with_suffix(".fa.fai").exists()
    fa = FastaFile(fasta_path)
    assert fasta_path.with_suffix(".fa.fai").exists()
    assert fa.chrom_lengths == {"chr1": 5000, "chr2": 3000}
    assert fa.fetch("chr1", 90, 210) == genome["chr1"][90:210].upper()
    assert fa.fetch("chr2", 0, 3000) == genome["chr2"]


def test_fetch_pads_beyond_chromosome_ends(fasta_path, genome):
    fa = FastaFile(fasta_path)
    assert fa.fetch("chr2", -3, 4) == PAD_CHAR * 3 + genome["chr2"][:4]
    assert fa.fetch("chr2", 2998, 3002) == genome["chr2"][2998:] + PAD_CHAR * 2
    assert fa.fetch("chr2", 3005, 3008) == PAD_CHAR * 3
    assert fa.fetch("chr2", -10, -5) == PAD_CHAR * 5
    with pytest.raises(KeyError, match="chrX"):
        fa.fetch("chrX", 0, 1)


def test_fasta_errors_name_the_file(tmp_path, genome):
    missing = tmp_path / "nope.fa"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        FastaFile(missing)
    gz = tmp_path / "genome.fa.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(">chr1\nACGT\n")
    with pytest.raises(ValueError, match=r"gzip.*decompress"):
        FastaFile(gz)
    bad = tmp_path / "bad.fa"
    bad.write_text("chr1 0 10 train\n")
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*not a FASTA"):
        FastaFile(bad)
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        FastaFile(empty)


def test_bed_reads_splits_and_skips_headers(bed_path, fasta_path):
    rows = read_bed(bed_path, FastaFile(fasta_path).chrom_lengths)
    assert [(r.chrom, r.start, r.end, r.split, r.line) for r in rows][:3] == [
        ("chr1", 0, 2048, "train", 3),
        ("chr1", 2048, 4096, "train", 4),
        ("chr2", 0, 1024, "valid", 5),  # 'val' and 'validation' read as 'valid'
    ]
    assert count_splits(rows) == {"train": 2, "valid": 2, "test": 1}
    assert [r.start for r in select_split(rows, "validation")] == [0, 1024]


BAD_LINES = [
    ("chr1\t0\n", "line 2: expected 3 columns"),
    ("chr1\t0\t10\ttrain\textra\n", "line 2: expected 3 columns"),
    ("chr1\tzero\t10\ttrain\n", "line 2: start and end must be integers"),
    ("chr1\t10\t10\ttrain\n", "line 2: start 10 must be less than end 10"),
    ("chr1\t-5\t10\ttrain\n", "line 2: negative start"),
    ("chr1\t0\t10\ttraining\n", "line 2: unknown split 'training'"),
    ("chrZ\t0\t10\ttrain\n", "line 2: sequence 'chrZ' is not in the FASTA"),
    ("chr2\t0\t3001\ttrain\n", "line 2: end 3001 is beyond the length of 'chr2'"),
    ("chr1\t0\t10\n", "line 2: has 3 columns but earlier lines have 4"),
]


@pytest.mark.parametrize("line,message", BAD_LINES, ids=[m.split(": ")[1][:25] for _, m in BAD_LINES])
def test_bed_errors_name_file_and_line(tmp_path, fasta_path, line, message):
    path = tmp_path / "bad.bed"
    path.write_text("chr1\t0\t100\ttrain\n" + line)
    with pytest.raises(ValueError, match=re.escape(f"{path}, {message}")):
        read_bed(path, FastaFile(fasta_path).chrom_lengths)


def test_bed_missing_empty_and_empty_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bed"):
        read_bed(tmp_path / "nope.bed")
    only_headers = tmp_path / "headers.bed"
    only_headers.write_text("# nothing\ntrack name=x\n\n")
    with pytest.raises(ValueError, match="contains no intervals"):
        read_bed(only_headers)
    train_only = tmp_path / "train.bed"
    train_only.write_text("chr1\t0\t10\ttrain\n")
    rows = read_bed(train_only)
    with pytest.raises(ValueError, match=r"train.bed has no intervals in split 'test'"):
        select_split(rows, "test", train_only)
    three = tmp_path / "three.bed"
    three.write_text("chr1\t0\t10\n")
    rows3 = read_bed(three)
    assert rows3[0].split is None and select_split(rows3, None) == rows3
    with pytest.raises(ValueError, match="no split column"):
        select_split(rows3, "train", three)


def test_shipped_sample_is_valid(sample_files):
    fasta, bed = sample_files
    fa = FastaFile(fasta)
    rows = read_bed(bed, fa.chrom_lengths)
    counts = count_splits(rows)
    assert set(counts) == {"train", "valid", "test"}
    assert sum(fa.chrom_lengths.values()) > 200_000
    # Splits are region-disjoint: no two intervals of different splits overlap.
    for a in rows:
        for b in rows:
            if a.split != b.split and a.chrom == b.chrom:
                assert a.end <= b.start or b.end <= a.start
    assert set(fa.fetch(rows[0].chrom, 0, 100_000)) <= set("ACGTN")
