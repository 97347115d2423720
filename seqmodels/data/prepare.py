"""Download and check the HG38 pretraining data (the Basenji hg38 files HyenaDNA trains on).

Layout under ``root`` (the names HyenaDNA's instructions use)::

    root/hg38.ml.fa              decompressed FASTA (3.1 GB); hg38.ml.fa.fai is built next to it
    root/human-sequences.bed     chrom start end split (34,021 / 2,213 / 1,937 intervals)
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path


from seqmodels.data.bed import count_splits, read_bed
from seqmodels.data.download import download_file, gunzip
from seqmodels.data.fasta import FastaFile

HG38_FASTA_URL = "https://storage.googleapis.com/basenji_barnyard2/hg38.ml.fa.gz"
HG38_BED_URL = "https://storage.googleapis.com/basenji_barnyard2/sequences_human.bed"
FASTA_NAME = "hg38.ml.fa"
BED_NAME = "human-sequences.bed"


def _missing_message(root: Path, missing: list[str], reason: str) -> str:
    lines = [f"HG38 data incomplete under {root} ({reason}). Missing:"]
    for what in missing:
        if what == "fasta":
            lines.append(f"  {root / FASTA_NAME}   (from {HG38_FASTA_URL}, then gunzip)")
        else:
            lines.append(f"  {root / BED_NAME}   (from {HG38_BED_URL})")
    lines.append("Place the files at those paths and run `seqmodels prepare hg38 --root DIR` again.")
    return "\n".join(lines)


def prepare_hg38(
    root: str | os.PathLike,
    download: bool = True,
    fasta_url: str = HG38_FASTA_URL,
    bed_url: str = HG38_BED_URL,
    keep_gz: bool = False,
) -> dict[str, Path | dict[str | None, int]]:
    """Fetch what is missing under ``root`` (when ``download``), decompress, index and check.

    Existing files are never downloaded again. A ``hg38.ml.fa.gz`` already in ``root`` is
    decompressed instead of downloaded. If the network fails (or ``download`` is False), the
    files present are still checked and a FileNotFoundError lists exactly what is missing,
    with the expected paths and URLs.

    Returns:
        ``{"fasta": Path, "bed": Path, "splits": {split: number of intervals}}``.

    Raises:
        FileNotFoundError: files are missing and could not be downloaded.
        ValueError: a file is present but invalid (the message names file and line).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fasta_path, bed_path = root / FASTA_NAME, root / BED_NAME
    gz_path = root / (FASTA_NAME + ".gz")
    failure: str | None = None

    if not bed_path.is_file() and download:
        try:
            download_file(bed_url, bed_path)
        except (urllib.error.URLError, OSError) as err:
            failure = f"download failed: {err}"
    if not fasta_path.is_file():
        if not gz_path.is_file() and download and failure is None:
            try:
                download_file(fasta_url, gz_path)
            except (urllib.error.URLError, OSError) as err:
                failure = f"download failed: {err}"
        if gz_path.is_file():
            gunzip(gz_path, fasta_path)
            if not keep_gz:
                gz_path.unlink()

    missing = [name for name, p in (("fasta", fasta_path), ("bed", bed_path)) if not p.is_file()]
    # Check what is there even when something is missing, so one run reports every problem.
    fasta = FastaFile(fasta_path) if "fasta" not in missing else None
    if "bed" not in missing and fasta is None:
        read_bed(bed_path)  # syntax only: the sequence names need the FASTA
    if missing:
        reason = failure or ("download disabled" if not download else "not downloaded")
        raise FileNotFoundError(_missing_message(root, missing, reason))
    assert fasta is not None
    intervals = read_bed(bed_path, fasta.chrom_lengths)
    splits = count_splits(intervals)
    print(f"hg38 ready: {fasta_path} ({len(fasta.chrom_lengths)} sequences), {bed_path} {splits}")
    return {"fasta": fasta_path, "bed": bed_path, "splits": splits}
