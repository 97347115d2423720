"""Species classification from DNA windows (the "great apes" task of Mamba, Gu & Dao 2023, sec. 4.3.3).

Each item is a window of ``seq_len`` bases drawn from one species' genome, labelled with the
species' class id. Classes are numbered in the order the ``genomes`` mapping gives them (YAML
mappings keep their order), so ``{"human": ..., "chimpanzee": ...}`` makes human 0.

Splits are by region, never by random window, so that validation and test windows never overlap
training sequence:

* ``val_chroms`` / ``test_chroms`` (per species) hold whole chromosomes out; every other kept
  sequence is training data;
* ``split_fractions = (train, val, test)`` cuts every kept sequence into three contiguous
  regions in that order (for genomes given as one or a few long records, e.g. bacteria);
* a species listed in ``val_chroms`` / ``test_chroms`` uses the lists, any other species the
  fractions; a species with neither is an error.

Windows lie entirely inside one region (no window crosses a split boundary or a sequence end,
so no padding); regions shorter than the window are skipped. A window's start is uniform over
all valid starts of the split, i.e. sequences are weighted by length.

Hygiene: sequences whose names match ``exclude`` (shell patterns, default
:data:`DEFAULT_EXCLUDE`: chrY, mitochondria, unplaced, alternate, random and fix contigs) are
dropped; bases are upper-cased (assemblies soft-mask repeats differently, which would leak the
species); windows with more than ``max_n_frac`` non-ACGT bases are redrawn, at most
``max_retries`` times before a RuntimeError.

Determinism and data parallelism: an epoch is ``num_samples`` items with global index
``j = 0 .. num_samples - 1``; item ``j`` has class ``j % num_classes`` (exact balance: an error
unless ``num_samples`` is divisible by the number of classes) and its window comes from a
generator seeded with ``(seed, split, epoch, j)``. Validation and test always use epoch 0, so
their windows are fixed by ``seed``; training windows change with the epoch. Each of the
``world_size`` ranks takes the contiguous block of ``num_samples // world_size`` global indices
starting at ``rank * num_samples // world_size``, so ranks see different windows and the union
over ranks equals a single-process epoch (class balance is exact per rank too when
``num_samples / world_size`` is a multiple of the number of classes, and over the epoch always). Under Lightning's DDP set ``use_distributed_sampler:
false`` in the Trainer (the dataset shards itself; Lightning's sampler would shard it again),
and ``reload_dataloaders_every_n_epochs: 1`` for sequence-length warmup.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from seqmodels.data.fasta import FastaFile, check_fasta_file
from seqmodels.data.tokenizer import A_ID, T_ID, DNATokenizer, reverse_complement_ids

DEFAULT_EXCLUDE: tuple[str, ...] = (
    "chrY", "Y",  # absent from female assemblies: would tell the classes apart by sex
    "chrM", "chrMT", "MT",  # mitochondria: tiny, many copies, not the nuclear genome
    "chrUn_*",  # unplaced scaffolds
    "*_alt", "*_random", "*_fix",  # alternate haplotypes, unlocalised and patch contigs
)
SPLITS = ("train", "val", "test")
# Keeps the generator streams of the three splits apart for the same seed and index.
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


class Region(NamedTuple):
    """``chrom[start:end]``, 0-based half-open."""

    chrom: str
    start: int
    end: int


class Window(NamedTuple):
    """One drawn window: species name, its class id and ``chrom[start:end]`` (0-based, half-open)."""

    species: str
    label: int
    chrom: str
    start: int
    end: int


def is_excluded(name: str, patterns: Sequence[str]) -> bool:
    """True when the sequence ``name`` matches one of the shell ``patterns`` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in split_fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"split_fractions must be three non-negative numbers (train, val, test) summing to 1, "
            f"got {tuple(split_fractions)}"
        )
    return fr  # type: ignore[return-value]


def species_regions(
    species: str,
    chrom_lengths: Mapping[str, int],
    val_chroms: Sequence[str] | None = None,
    test_chroms: Sequence[str] | None = None,
    split_fractions: Sequence[float] | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> dict[str, list[Region]]:
    """The train / val / test regions of one genome (see the module docstring for the rules).

    Args:
        species: the species name, for error messages.
        chrom_lengths: sequence name -> length, in file order.
        val_chroms, test_chroms: whole sequences held out; both or neither.
        split_fractions: ``(train, val, test)`` fractions of every sequence, used when no
            chromosome lists are given.
        exclude: shell patterns of sequence names to drop.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, regions in file order (new lists).

    Raises:
        ValueError: a held-out sequence is not in the genome, excluded, or held out twice; only
            one of the two lists is given; neither lists nor fractions are given; or no
            sequence is left after exclusion.
    """
    kept = {c: n for c, n in chrom_lengths.items() if not is_excluded(c, exclude)}
    if not kept:
        raise ValueError(f"species {species!r}: every sequence matches the exclude patterns {list(exclude)}")
    if (val_chroms is None) != (test_chroms is None):
        raise ValueError(f"species {species!r}: give both val_chroms and test_chroms for it, or neither")
    out: dict[str, list[Region]] = {s: [] for s in SPLITS}
    if val_chroms is not None and test_chroms is not None:
        held: dict[str, str] = {}
        for split, chroms in (("val", val_chroms), ("test", test_chroms)):
            for c in chroms:
                if c not in chrom_lengths:
                    some = ", ".join(list(chrom_lengths)[:8])
                    raise ValueError(
                        f"species {species!r}: {split}_chroms names {c!r}, which is not in its FASTA "
                        f"(sequences include {some})"
                    )
                if c not in kept:
                    raise ValueError(
                        f"species {species!r}: {split}_chroms names {c!r}, which the exclude patterns drop"
                    )
                if c in held:
                    raise ValueError(f"species {species!r}: {c!r} is held out for both {held[c]} and {split}")
                held[c] = split
        for c, n in kept.items():
            out[held.get(c, "train")].append(Region(c, 0, n))
        return out
    if split_fractions is None:
        raise ValueError(
            f"species {species!r}: no split given; list its held-out chromosomes in val_chroms and "
            f"test_chroms, or set split_fractions"
        )
    f_train, f_val, _ = _check_fractions(split_fractions)
    for c, n in kept.items():
        b1, b2 = round(n * f_train), round(n * (f_train + f_val))
        for split, lo, hi in (("train", 0, b1), ("val", b1, b2), ("test", b2, n)):
            if hi > lo:
                out[split].append(Region(c, lo, hi))
    return out


class _StartSampler:
    """Uniform draws over every start of a ``seq_len`` window inside a list of regions."""

    def __init__(self, regions: Sequence[Region], seq_len: int) -> None:
        self.regions = [r for r in regions if r.end - r.start >= seq_len]
        self.seq_len = seq_len
        # Number of valid starts per region; a window is uniform over their union.
        counts = np.array([r.end - r.start - seq_len + 1 for r in self.regions], dtype=np.int64)
        self.cum = np.cumsum(counts)

    def draw(self, rng: np.random.Generator) -> Region:
        k = int(rng.integers(0, int(self.cum[-1])))
        i = int(np.searchsorted(self.cum, k, side="right"))
        offset = k - (int(self.cum[i - 1]) if i else 0)
        r = self.regions[i]
        return Region(r.chrom, r.start + offset, r.start + offset + self.seq_len)


def check_seq_len(
    regions: Mapping[str, Mapping[str, Sequence[Region]]], seq_len: int, splits: Sequence[str] = SPLITS
) -> None:
    """Raise a ValueError naming species and split when no region of it holds a ``seq_len`` window.

    ``regions`` maps species -> split -> regions (as :func:`species_regions` returns).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    for species, by_split in regions.items():
        for split in splits:
            longest = max((r.end - r.start for r in by_split[split]), default=0)
            if longest < seq_len:
                raise ValueError(
                    f"species {species!r}, split {split!r}: seq_len {seq_len} is longer than every "
                    f"region (longest {longest} bases); lower seq_len or change the split"
                )


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed when it is initialised, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SpeciesWindowDataset(Dataset):
    """Class-balanced random windows of one split, sharded over data-parallel ranks.

    Args:
        genomes: species name -> opened FASTA; the order gives the class ids.
        regions: species name -> the regions of this split (same keys as ``genomes``).
        seq_len: window length ``L``.
        num_samples: items per epoch over all ranks; divisible by the number of classes and
            by ``world_size``.
        split: ``"train"`` (windows change with the epoch), ``"val"`` or ``"test"`` (fixed).
        seed: base seed.
        max_n_frac: largest allowed fraction of non-ACGT bases in a window.
        max_retries: redraws of an N-heavy window before a RuntimeError.
        rank, world_size: this process' shard; ``None`` reads torch.distributed.
        rc_aug: reverse-complement each window with probability 1/2 (training split only: an
            error otherwise). The coin comes from its own generator seeded like the window's,
            so the windows drawn are the same with and without it.

    Items (``dataset[i]`` or ``dataset[(epoch, i)]``): ``{"input_ids": LongTensor [L],
    "labels": LongTensor []}`` (the class id). ``dataset.epoch`` is used for a plain index.
    """

    def __init__(
        self,
        genomes: Mapping[str, FastaFile],
        regions: Mapping[str, Sequence[Region]],
        seq_len: int,
        num_samples: int,
        split: Literal["train", "val", "test"] = "train",
        seed: int = 0,
        max_n_frac: float = 0.1,
        max_retries: int = 100,
        rank: int | None = None,
        world_size: int | None = None,
        rc_aug: bool = False,
    ) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if rc_aug and split != "train":
            raise ValueError(
                f"rc_aug is for the training split only (validation and test windows are fixed), got split {split!r}"
            )
        if list(genomes) != list(regions):
            raise ValueError(
                f"genomes and regions must list the same species in the same order, got {list(genomes)} and {list(regions)}"
            )
        self.class_names = list(genomes)
        k = len(self.class_names)
        if rank is None or world_size is None:
            rank, world_size = dist_rank_world()
        if num_samples < 1 or num_samples % k:
            raise ValueError(
                f"{split} samples per epoch ({num_samples}) must be a positive multiple of the "
                f"number of species ({k}) so that every class gets the same count"
            )
        if num_samples % world_size:
            raise ValueError(
                f"{split} samples per epoch ({num_samples}) must be divisible by the world size ({world_size})"
            )
        if not 0.0 <= max_n_frac <= 1.0:
            raise ValueError(f"max_n_frac must lie in [0, 1], got {max_n_frac}")
        check_seq_len({s: {split: list(r)} for s, r in regions.items()}, seq_len, splits=(split,))
        self.genomes = dict(genomes)
        self.samplers = [_StartSampler(regions[s], seq_len) for s in self.class_names]
        self.seq_len, self.split, self.seed = seq_len, split, seed
        self.max_n_frac, self.max_retries = max_n_frac, max_retries
        self.rank, self.world_size = rank, world_size
        self.rc_aug = rc_aug
        self.num_samples = num_samples
        self.per_rank = num_samples // world_size
        self.epoch = 0
        self.tokenizer = DNATokenizer()

    def __len__(self) -> int:
        return self.per_rank

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices (ignored for val/test)."""
        self.epoch = epoch

    def _resolve(self, index: int | tuple[int, int]) -> tuple[int, int]:
        epoch, i = index if isinstance(index, tuple) else (self.epoch, index)
        if not 0 <= i < self.per_rank:
            raise IndexError(f"index {i} out of range for {self.per_rank} items")
        # Validation and test windows must not move between epochs.
        return (epoch if self.split == "train" else 0), self.rank * self.per_rank + i

    def _load(self, index: int | tuple[int, int]) -> tuple[Window, np.ndarray]:
        epoch, j = self._resolve(index)
        label = j % len(self.class_names)
        species = self.class_names[label]
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], epoch, j])
        fasta = self.genomes[species]
        for _ in range(self.max_retries):
            r = self.samplers[label].draw(rng)
            ids = self.tokenizer.encode(fasta.fetch(r.chrom, r.start, r.end))
            not_acgt = np.count_nonzero((ids < A_ID) | (ids > T_ID))
            if not_acgt <= self.max_n_frac * self.seq_len:
                return Window(species, label, r.chrom, r.start, r.end), ids
        raise RuntimeError(
            f"species {species!r}, split {self.split!r}: {self.max_retries} windows of {self.seq_len} bases "
            f"in a row had more than {self.max_n_frac:.0%} N; raise max_n_frac, lower seq_len or "
            f"exclude the N-rich sequences"
        )

    def window(self, index: int | tuple[int, int]) -> Window:
        """The coordinates of item ``index`` (reads the sequence, to apply the N filter)."""
        return self._load(index)[0]

    def flips(self, index: int | tuple[int, int]) -> bool:
        """Whether item ``index`` is reverse-complemented (always False without ``rc_aug``)."""
        if not self.rc_aug:
            return False
        epoch, j = self._resolve(index)
        return bool(np.random.default_rng([self.seed, _SPLIT_CODE[self.split], epoch, j, 1]).random() < 0.5)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Tensor]:
        w, ids = self._load(index)
        if self.flips(index):
            ids = reverse_complement_ids(ids)
        return {"input_ids": torch.from_numpy(ids), "labels": torch.tensor(w.label, dtype=torch.long)}


class EpochSampler(Sampler):
    """Yields ``(epoch, i)`` for a shuffled ``range(n)``; Lightning calls :meth:`set_epoch`.

    Passing the epoch with each index (rather than setting it on the dataset) keeps it right in
    persistent DataLoader workers, which hold their own copy of the dataset.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Shuffled so that batches do not follow the class cycle j % num_classes.
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return iter((self.epoch, int(i)) for i in order)


def read_bed_windows(path: str | os.PathLike, chrom_lengths: Mapping[str, int]) -> list[tuple[str, int, int, str]]:
    """Rows ``chrom start end [name ...]`` of a BED file (0-based, half-open; extra columns ignored).

    Returns:
        ``(chrom, start, end, name)`` per row in file order; ``name`` is ``""`` without a 4th column.

    Raises:
        FileNotFoundError / ValueError naming the file and line (bad columns, unknown sequence,
        an interval past the sequence end, no rows).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BED file not found: {path}")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text or text.startswith(("#", "track", "browser")):
                continue
            fields, where = text.split(), f"{path}, line {lineno}"
            if len(fields) < 3:
                raise ValueError(f"{where}: expected chrom start end [name], got {text[:80]!r}")
            try:
                start, end = int(fields[1]), int(fields[2])
            except ValueError:
                raise ValueError(
                    f"{where}: start and end must be integers, got {fields[1]!r} {fields[2]!r}"
                ) from None
            chrom = fields[0]
            if chrom not in chrom_lengths:
                raise ValueError(f"{where}: sequence {chrom!r} is not in the FASTA file")
            if not 0 <= start < end <= chrom_lengths[chrom]:
                raise ValueError(
                    f"{where}: interval {start}-{end} is empty or outside {chrom!r} (length {chrom_lengths[chrom]})"
                )
            rows.append((chrom, start, end, fields[3] if len(fields) > 3 else ""))
    if not rows:
        raise ValueError(f"BED file {path} contains no intervals")
    return rows


class WindowTileDataset(Dataset):
    """Windows tiled over a FASTA, or over the intervals of a BED file, for prediction.

    Each sequence (FASTA mode, names matching ``exclude`` skipped) or BED interval is cut into
    windows ``[s, s + seq_len)`` for ``s = start, start + stride, ...``; a remainder shorter
    than ``seq_len`` is dropped (a classifier trained on full windows should not see padding).

    Args:
        fasta: the FASTA file.
        seq_len: window length ``L``.
        bed: optional BED file ``chrom start end [name]``; every interval must be at least
            ``seq_len`` long (an interval of exactly ``seq_len`` is one window).
        stride: step between window starts; default ``seq_len`` (non-overlapping).
        exclude: shell patterns of sequence names to skip in FASTA mode.

    Items: ``{"input_ids": LongTensor [L], "chrom": str, "start": int, "end": int, "name": str}``
    (``name`` is the BED name column or ``""``); batch them with :func:`collate_windows`.
    """

    def __init__(
        self,
        fasta: str | os.PathLike,
        seq_len: int,
        bed: str | os.PathLike | None = None,
        stride: int | None = None,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        stride = seq_len if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        self.fasta = FastaFile(fasta)
        lengths = self.fasta.chrom_lengths
        if bed is None:
            spans = [(c, 0, n, "") for c, n in lengths.items() if not is_excluded(c, exclude)]
        else:
            spans = read_bed_windows(bed, lengths)
            for c, s, e, _ in spans:
                if e - s < seq_len:
                    raise ValueError(f"BED file {bed}: interval {c}:{s}-{e} is shorter than seq_len {seq_len}")
        self.windows: list[tuple[str, int, int, str]] = [
            (c, s, s + seq_len, name) for c, lo, hi, name in spans for s in range(lo, hi - seq_len + 1, stride)
        ]
        if not self.windows:
            raise ValueError(f"FASTA file {fasta}: no sequence holds a window of {seq_len} bases")
        self.seq_len = seq_len
        self.tokenizer = DNATokenizer()

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        chrom, start, end, name = self.windows[i]
        ids = self.tokenizer.encode_tensor(self.fasta.fetch(chrom, start, end))
        return {"input_ids": ids, "chrom": chrom, "start": start, "end": end, "name": name}


def collate_windows(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch :class:`WindowTileDataset` items: ``{"input_ids": [B, L] int64, "chrom": list[str],
    "start": [B] int64, "end": [B] int64, "name": list[str]}``."""
    return {
        "input_ids": torch.stack([it["input_ids"] for it in items]),
        "chrom": [it["chrom"] for it in items],
        "start": torch.tensor([it["start"] for it in items], dtype=torch.long),
        "end": torch.tensor([it["end"] for it in items], dtype=torch.long),
        "name": [it["name"] for it in items],
    }


class GreatApesDataModule(L.LightningDataModule):
    """Species classification data: class-balanced windows from several genomes.

    Args:
        genomes: species name -> FASTA path (``--data.genomes``); the order gives the class ids.
        seq_len: training window length; :meth:`set_seq_len` changes it for sequence-length
            warmup (:class:`~seqmodels.data.callbacks.SeqLenWarmup`).
        eval_seq_len: window length of validation, test and prediction; default ``seq_len``
            as configured (warmup does not move it). A mean-pooled classifier reads any length,
            so it can be trained on short windows and validated on long ones.
        batch_size: windows per batch (per rank).
        num_workers: DataLoader worker processes.
        val_chroms, test_chroms: species -> sequence names held out whole (see the module
            docstring); keys must be species of ``genomes``.
        split_fractions: ``(train, val, test)`` fractions of every sequence, for species
            without chromosome lists.
        train_samples_per_epoch, val_samples, test_samples: windows per epoch over all ranks;
            each a multiple of the number of species (exact class balance) and of the world size.
        max_n_frac: largest fraction of non-ACGT bases in a window (more is redrawn).
        exclude: shell patterns of sequence names to drop (``[]`` keeps everything).
        seed: fixes validation/test windows; training windows use ``(seed, epoch)``.
        rc_aug: reverse-complement training windows with probability 1/2 (the strand of a
            genome assembly is arbitrary).
        predict_fasta, predict_bed, predict_stride: windows for ``predict`` (see
            :class:`WindowTileDataset`); ``predict_fasta`` defaults to nothing.

    Batches: train/val/test ``{"input_ids": [B, L] int64, "labels": [B] int64}``; predict as
    :func:`collate_windows`. With DDP set the Trainer's ``use_distributed_sampler: false``.
    """

    def __init__(
        self,
        genomes: dict[str, str],
        seq_len: int = 1024,
        batch_size: int = 8,
        num_workers: int = 0,
        val_chroms: dict[str, list[str]] | None = None,
        test_chroms: dict[str, list[str]] | None = None,
        split_fractions: tuple[float, float, float] | None = None,
        train_samples_per_epoch: int = 10_000,
        val_samples: int = 1_000,
        test_samples: int = 1_000,
        max_n_frac: float = 0.1,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        seed: int = 0,
        predict_fasta: str | None = None,
        predict_bed: str | None = None,
        predict_stride: int | None = None,
        eval_seq_len: int | None = None,
        rc_aug: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(genomes, Mapping) or len(genomes) < 2:
            raise ValueError(f"genomes must map at least 2 species names to FASTA files, got {genomes!r}")
        for name, path in genomes.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"genomes: species names must be non-empty strings, got {name!r}")
            try:
                check_fasta_file(path)
            except (FileNotFoundError, ValueError) as err:
                raise type(err)(f"genomes: species {name!r}: {err}") from None
        val_chroms, test_chroms = dict(val_chroms or {}), dict(test_chroms or {})
        for arg, table in (("val_chroms", val_chroms), ("test_chroms", test_chroms)):
            unknown = [k for k in table if k not in genomes]
            if unknown:
                raise ValueError(f"{arg} names species {unknown} that are not in genomes ({list(genomes)})")
        for name in genomes:
            if (name in val_chroms) != (name in test_chroms):
                raise ValueError(f"species {name!r} appears in only one of val_chroms and test_chroms; give both")
            if name not in val_chroms and split_fractions is None:
                raise ValueError(
                    f"species {name!r} has no split: list its held-out chromosomes in val_chroms and "
                    f"test_chroms, or set split_fractions"
                )
        if split_fractions is not None:
            split_fractions = _check_fractions(split_fractions)
        samples = {"train_samples_per_epoch": train_samples_per_epoch, "val_samples": val_samples,
                   "test_samples": test_samples}
        eval_seq_len = seq_len if eval_seq_len is None else eval_seq_len
        for arg, value in {"seq_len": seq_len, "eval_seq_len": eval_seq_len, "batch_size": batch_size,
                           **samples}.items():
            if value < 1:
                raise ValueError(f"{arg} must be positive, got {value}")
        for arg, value in samples.items():
            if value % len(genomes):
                raise ValueError(
                    f"{arg} ({value}) must be a multiple of the number of species ({len(genomes)}) "
                    f"for exact class balance"
                )
        if not 0.0 <= max_n_frac <= 1.0:
            raise ValueError(f"max_n_frac must lie in [0, 1], got {max_n_frac}")
        self.save_hyperparameters()
        self.genome_paths = dict(genomes)
        self.class_names = list(genomes)
        self.val_chroms, self.test_chroms = val_chroms, test_chroms
        self.split_fractions = split_fractions
        self.seq_len, self.eval_seq_len = seq_len, eval_seq_len
        self.rc_aug = rc_aug
        self.batch_size, self.num_workers = batch_size, num_workers
        self.samples = {"train": train_samples_per_epoch, "val": val_samples, "test": test_samples}
        self.max_n_frac, self.exclude, self.seed = max_n_frac, tuple(exclude), seed
        self.predict_fasta, self.predict_bed, self.predict_stride = predict_fasta, predict_bed, predict_stride
        self.fastas: dict[str, FastaFile] | None = None
        self.regions: dict[str, dict[str, list[Region]]] | None = None
        self.datasets: dict[str, SpeciesWindowDataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        # Runs on one process: builds missing .fai indexes before the ranks open the files.
        for path in self.genome_paths.values():
            FastaFile(path)

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return dist_rank_world()

    def _dataset(self, split: str, seq_len: int) -> SpeciesWindowDataset:
        assert self.fastas is not None and self.regions is not None
        rank, world = self._rank_world()
        return SpeciesWindowDataset(
            self.fastas, {s: self.regions[s][split] for s in self.class_names}, seq_len, self.samples[split],
            split=split, seed=self.seed, max_n_frac=self.max_n_frac, rank=rank, world_size=world,
            rc_aug=self.rc_aug and split == "train",
        )

    def setup(self, stage: str | None = None) -> None:
        """Open the genomes, build the splits and check them (errors name species and split)."""
        if self.regions is None:
            self.fastas = {}
            for name, path in self.genome_paths.items():
                try:
                    self.fastas[name] = FastaFile(path)
                except (FileNotFoundError, ValueError) as err:
                    raise type(err)(f"genomes: species {name!r}: {err}") from None
            self.regions = {
                name: species_regions(
                    name, self.fastas[name].chrom_lengths, self.val_chroms.get(name), self.test_chroms.get(name),
                    self.split_fractions, self.exclude,
                )
                for name in self.class_names
            }
        if stage == "predict":
            return
        check_seq_len(self.regions, self.eval_seq_len, splits=("val", "test"))
        check_seq_len(self.regions, self.seq_len, splits=("train",))
        for split in SPLITS:
            ds = self._dataset(split, self.seq_len if split == "train" else self.eval_seq_len)
            # One window per class now, so an N-heavy species fails here rather than mid-epoch.
            for i in range(min(len(ds), self.num_classes)):
                ds.window((0, i))
            self.datasets[split] = ds

    def set_seq_len(self, seq_len: int) -> None:
        """Change the training window length (sequence-length warmup); takes effect when the
        train dataloader is next built (Trainer ``reload_dataloaders_every_n_epochs: 1``; Lightning
        builds it before ``on_train_epoch_start``, so call this in the previous epoch's
        ``on_train_epoch_end``, as SeqLenWarmup does). Raises ValueError when no training region
        of some species holds ``seq_len`` bases."""
        if self.regions is not None:
            check_seq_len(self.regions, seq_len, splits=("train",))
        elif seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.seq_len = seq_len
        if self.regions is not None:
            self.datasets["train"] = self._dataset("train", seq_len)

    def set_batch_size(self, batch_size: int) -> None:
        """Batch size for loaders built from now on (SeqLenWarmup's ``scale_batch_size``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size

    def _loader(self, ds: Dataset, sampler: Sampler | None = None, collate_fn=None) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.batch_size, sampler=sampler, shuffle=False, num_workers=self.num_workers,
            collate_fn=collate_fn, persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            self.setup("fit")
        ds = self.datasets["train"]
        sampler = EpochSampler(len(ds), seed=self.seed + ds.rank)
        if self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
        return self._loader(ds, sampler)

    def val_dataloader(self) -> DataLoader:
        if "val" not in self.datasets:
            self.setup("validate")
        return self._loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            self.setup("test")
        return self._loader(self.datasets["test"])

    def predict_dataloader(self) -> DataLoader:
        if self.predict_fasta is None:
            raise ValueError("predict needs data.predict_fasta (and optionally data.predict_bed)")
        ds = WindowTileDataset(
            self.predict_fasta, self.eval_seq_len, bed=self.predict_bed, stride=self.predict_stride, exclude=self.exclude
        )
        return self._loader(ds, collate_fn=collate_windows)
