"""BED intervals with an optional split column, as in the Basenji/Enformer hg38 file that
HyenaDNA trains on (``chrom start end split``; 34,021 train / 2,213 valid / 1,937 test
intervals of 131,072 bp).

Format rules (all errors name the file and the 1-based line number):

* columns are separated by tabs or other whitespace; coordinates are 0-based, half-open;
* blank lines and lines starting with ``#``, ``track`` or ``browser`` are headers and skipped;
* every data line has 3 columns (no split: the file is for prediction) or 4 columns
  (``split`` in ``train``, ``valid``, ``test``); mixing the two is an error;
* ``val`` and ``validation`` are accepted and read as ``valid`` (other tools write them);
  any other split name is an error, so a typo never silently drops a split;
* ``start`` and ``end`` are non-negative integers with ``start < end``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
_HEADER_PREFIXES = ("#", "track", "browser")


class Interval(NamedTuple):
    """One BED row: ``chrom[start:end]`` (0-based, half-open), its split (None in a 3-column
    file) and the 1-based line it came from (for error messages)."""

    chrom: str
    start: int
    end: int
    split: str | None
    line: int


def normalize_split(split: str) -> str:
    """``train`` / ``valid`` / ``test`` for a split name or alias; ValueError otherwise."""
    try:
        return _SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} (or val, validation)") from None


def read_bed(path: str | os.PathLike, chrom_lengths: Mapping[str, int] | None = None) -> list[Interval]:
    """Read and check a BED file of intervals.

    Args:
        path: the BED file.
        chrom_lengths: sequence name -> length (e.g. ``FastaFile.chrom_lengths``); when given,
            every interval must lie on a known sequence and end within it.

    Returns:
        The intervals in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a malformed line, an unknown split, an unknown chromosome, an end past
            the chromosome length, or no intervals at all; the message names file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BED file not found: {path}")
    intervals: list[Interval] = []
    ncols: int | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text or text.startswith(_HEADER_PREFIXES):
                continue
            where = f"{path}, line {lineno}"
            fields = text.split()
            if len(fields) not in (3, 4):
                raise ValueError(
                    f"{where}: expected 3 columns (chrom start end) or 4 (chrom start end split), "
                    f"got {len(fields)}: {text[:80]!r}"
                )
            if ncols is None:
                ncols = len(fields)
            elif len(fields) != ncols:
                raise ValueError(f"{where}: has {len(fields)} columns but earlier lines have {ncols}")
            chrom = fields[0]
            try:
                start, end = int(fields[1]), int(fields[2])
            except ValueError:
                raise ValueError(f"{where}: start and end must be integers, got {fields[1]!r} {fields[2]!r}") from None
            if start < 0:
                raise ValueError(f"{where}: negative start {start}")
            if start >= end:
                raise ValueError(f"{where}: start {start} must be less than end {end}")
            split = None
            if ncols == 4:
                try:
                    split = normalize_split(fields[3])
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from None
            if chrom_lengths is not None:
                if chrom not in chrom_lengths:
                    raise ValueError(f"{where}: sequence {chrom!r} is not in the FASTA file")
                if end > chrom_lengths[chrom]:
                    raise ValueError(
                        f"{where}: end {end} is beyond the length of {chrom!r} ({chrom_lengths[chrom]})"
                    )
            intervals.append(Interval(chrom, start, end, split, lineno))
    if not intervals:
        raise ValueError(f"BED file {path} contains no intervals")
    return intervals


def select_split(
    intervals: Iterable[Interval], split: str | None, path: str | os.PathLike = "BED file"
) -> list[Interval]:
    """The intervals of one split (a new list).

    ``split=None`` selects every row, which is what a 3-column file (no split column) allows.

    Raises:
        ValueError: the split name is unknown, a split is requested from a file without a split
            column, or the split has no intervals.
    """
    rows = list(intervals)
    if split is None:
        return rows
    name = normalize_split(split)
    if rows and rows[0].split is None:
        raise ValueError(f"{path} has no split column (3 columns), so split {split!r} cannot be selected")
    chosen = [iv for iv in rows if iv.split == name]
    if not chosen:
        raise ValueError(f"{path} has no intervals in split {name!r}")
    return chosen


def count_splits(intervals: Iterable[Interval]) -> dict[str, int]:
    """Number of intervals per split (``None`` key for a 3-column file)."""
    counts: dict[str, int] = {}
    for iv in intervals:
        counts[iv.split] = counts.get(iv.split, 0) + 1
    return counts
