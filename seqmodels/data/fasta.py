"""Random access to FASTA files through pyfaidx's ``.fai`` index.

Coordinates are 0-based, half-open (BED convention) throughout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyfaidx

from seqmodels.data.tokenizer import PAD_CHAR

_GZIP_MAGIC = b"\x1f\x8b"


def check_fasta_file(path: str | os.PathLike) -> Path:
    """Check that ``path`` exists and looks like an uncompressed FASTA file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is gzip-compressed (not random-access), empty, or its first
            non-blank line does not start with ``>``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            first = b""
            for line in fh:
                if line.strip():
                    first = line.strip()
                    break
    except OSError as err:
        raise ValueError(f"FASTA file {path} cannot be read: {err}") from err
    if head == _GZIP_MAGIC:
        # Plain gzip has no random access; bgzip would, but hg38.ml.fa.gz is plain gzip, and
        # decompressing once is simpler than asking users to recompress.
        raise ValueError(
            f"FASTA file {path} is gzip-compressed, which does not allow random access; "
            f"decompress it first (gunzip -k {path}) and pass the .fa file"
        )
    if not first.startswith(b">"):
        what = "is empty" if not first else f"line 1 starts with {first[:20]!r}, not '>'"
        raise ValueError(f"{path} is not a FASTA file: {what}")
    return path


class FastaFile:
    """A FASTA file opened for random access; builds the ``.fai`` index next to it if absent.

    The pyfaidx handle is opened lazily and reopened in each process, because a file
    descriptor inherited through ``fork`` (DataLoader workers) shares its seek position with
    the parent and the other workers.

    Args:
        path: an uncompressed FASTA file (see :func:`check_fasta_file`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_fasta_file(path)
        self._fasta: pyfaidx.Fasta | None = None
        self._pid: int | None = None
        # Open once now so that index problems surface at construction, not in a worker.
        fasta = self._handle()
        self._lengths = {name: len(rec) for name, rec in fasta.records.items()}
        if not self._lengths:
            raise ValueError(f"FASTA file {self.path} contains no sequences")

    def _handle(self) -> pyfaidx.Fasta:
        if self._fasta is None or self._pid != os.getpid():
            try:
                # sequence_always_upper: hg38 soft-masks repeats in lower case; the models
                # see one alphabet. pyfaidx rebuilds an index older than the FASTA.
                self._fasta = pyfaidx.Fasta(str(self.path), sequence_always_upper=True, as_raw=True)
            except (pyfaidx.FastaIndexingError, pyfaidx.FastaNotFoundError, ValueError, OSError) as err:
                raise ValueError(f"cannot index FASTA file {self.path}: {err}") from err
            self._pid = os.getpid()
        return self._fasta

    def __getstate__(self) -> dict:
        # Spawned workers get a pickled copy: drop the open handle, it is reopened on demand.
        state = self.__dict__.copy()
        state["_fasta"], state["_pid"] = None, None
        return state

    @property
    def chrom_lengths(self) -> dict[str, int]:
        """Sequence name -> length in bases, in file order (a new dict each call)."""
        return dict(self._lengths)

    def __contains__(self, chrom: str) -> bool:
        return chrom in self._lengths

    def fetch(self, chrom: str, start: int, end: int, pad_char: str = PAD_CHAR) -> str:
        """Upper-cased bases of ``chrom[start:end]`` (0-based, half-open), length ``end - start``.

        Parts of the range before 0 or past the chromosome end are filled with ``pad_char``
        (default ``PAD_CHAR``, which the tokenizer maps to ``[PAD]``), so windows may extend
        beyond chromosome ends.

        Raises:
            KeyError: ``chrom`` is not in the file.
            ValueError: ``end < start`` or ``pad_char`` is not one character.
        """
        if chrom not in self._lengths:
            raise KeyError(f"sequence {chrom!r} not in FASTA file {self.path}")
        if end < start:
            raise ValueError(f"fetch needs start <= end, got {start} > {end}")
        if len(pad_char) != 1:
            raise ValueError(f"pad_char must be one character, got {pad_char!r}")
        length = self._lengths[chrom]
        lo, hi = max(start, 0), min(end, length)
        body = self._handle()[chrom][lo:hi] if lo < hi else ""
        left = min(max(0, -start), end - start)
        right = end - start - left - len(body)
        return pad_char * left + body + pad_char * right
