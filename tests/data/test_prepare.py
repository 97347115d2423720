from __future__ import annotations

import gzip
import re
import urllib.error
import urllib.request

import pytest

from seqmodels.data import prepare
from seqmodels.data.prepare import BED_NAME, FASTA_NAME, prepare_hg38
from tests.data.conftest import write_fasta


@pytest.fixture
def served(tmp_path, genome):
    """A gzip FASTA and a BED as file:// URLs, standing in for the real servers."""
    src = tmp_path / "server"
    src.mkdir()
    plain = write_fasta(src / "plain.fa", genome)
    with open(plain, "rb") as fh, gzip.open(src / "hg38.ml.fa.gz", "wb") as out:
        out.write(fh.read())
    (src / "sequences_human.bed").write_text("chr1\t0\t4096\ttrain\nchr2\t0\t1024\tvalid\nchr2\t1024\t2048\ttest\n")
    return {
        "fasta_url": (src / "hg38.ml.fa.gz").as_uri(),
        "bed_url": (src / "sequences_human.bed").as_uri(),
        "plain": plain,
    }


def test_download_decompress_index_and_check(tmp_path, served):
    root = tmp_path / "hg38"
    out = prepare_hg38(root, fasta_url=served["fasta_url"], bed_url=served["bed_url"])
    assert out["fasta"] == root / FASTA_NAME and out["bed"] == root / BED_NAME
    assert out["splits"] == {"train": 1, "valid": 1, "test": 1}
    assert (root / FASTA_NAME).read_bytes() == served["plain"].read_bytes()
    assert (root / (FASTA_NAME + ".fai")).is_file()
    assert not (root / (FASTA_NAME + ".gz")).exists()  # removed after decompression
    assert not list(root.glob(".*.part"))  # no temporary files left
    # A second run downloads nothing (the URLs are now unreachable) and checks again.
    again = prepare_hg38(root, fasta_url="file:///nonexistent/x.gz", bed_url="file:///nonexistent/x.bed")
    assert again["splits"] == out["splits"]


def test_offline_lists_missing_files_with_paths(tmp_path, served, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    root = tmp_path / "hg38"
    with pytest.raises(FileNotFoundError) as err:
        prepare_hg38(root)
    msg = str(err.value)
    assert "network unreachable" in msg
    assert str(root / FASTA_NAME) in msg and str(root / BED_NAME) in msg
    assert prepare.HG38_FASTA_URL in msg and prepare.HG38_BED_URL in msg
    # The user places the BED by hand: now only the FASTA is reported missing.
    (root / BED_NAME).write_text("chr1\t0\t4096\ttrain\n")
    with pytest.raises(FileNotFoundError) as err:
        prepare_hg38(root, download=False)
    assert str(root / FASTA_NAME) in str(err.value) and str(root / BED_NAME) not in str(err.value)
    # A hand-placed .gz is decompressed without any network.
    (root / (FASTA_NAME + ".gz")).write_bytes(open(served["fasta_url"][len("file://"):], "rb").read())
    assert prepare_hg38(root, download=False)["splits"] == {"train": 1}


def test_offline_validation_reports_bad_bed_line(tmp_path, genome):
    root = tmp_path / "hg38"
    root.mkdir()
    write_fasta(root / FASTA_NAME, genome)
    (root / BED_NAME).write_text("chr1\t0\t4096\ttrain\nchr9\t0\t10\ttest\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / BED_NAME}, line 2") + ".*chr9"):
        prepare_hg38(root, download=False)


def test_corrupt_gzip_is_reported(tmp_path):
    root = tmp_path / "hg38"
    root.mkdir()
    (root / (FASTA_NAME + ".gz")).write_bytes(b"\x1f\x8b\x08\x00garbage")
    (root / BED_NAME).write_text("chr1\t0\t10\ttrain\n")
    with pytest.raises(ValueError, match="cannot decompress"):
        prepare_hg38(root, download=False)
    assert not (root / FASTA_NAME).exists()
