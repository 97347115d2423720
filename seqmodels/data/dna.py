"""Next-base language-modelling windows over FASTA + BED intervals.

Window arithmetic (all coordinates 0-based, half-open; ``L = seq_len``):

* an interval at least ``L`` long is tiled into ``len // L`` whole windows
  ``[start + k L, start + (k + 1) L)``; a remainder shorter than ``L`` is not used (the
  Basenji intervals are 131,072 bp, a multiple of every power-of-two length up to 2^17);
* a shorter interval gives one window of length ``L`` extended symmetrically about the
  interval's centre (``(L - len) // 2`` bases on the left, the rest on the right); parts
  beyond a chromosome end read as ``[PAD]``.

Each window reads ``L + 1`` bases ``[start, start + L + 1)``: ``input_ids`` are the first ``L``,
``labels`` the last ``L`` (the next base at every position). The extra base lies just past the
tile; inside the chromosome it is a real base, past the end it is ``[PAD]``. ``[PAD]`` labels
become ``IGNORE_INDEX`` (-100) so the loss skips them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from seqmodels.data.bed import Interval
from seqmodels.data.fasta import FastaFile
from seqmodels.data.tokenizer import IGNORE_INDEX, PAD_ID, DNATokenizer, reverse_complement_ids


class Window(NamedTuple):
    """Input window ``chrom[start:end]`` (``end - start == seq_len``); ``start`` may be negative
    and ``end`` past the chromosome when an interval was extended."""

    chrom: str
    start: int
    end: int


def make_windows(intervals: Sequence[Interval], seq_len: int) -> list[Window]:
    """Windows of ``seq_len`` for each interval, in interval order (see the module docstring)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    windows: list[Window] = []
    for iv in intervals:
        length = iv.end - iv.start
        if length >= seq_len:
            windows.extend(
                Window(iv.chrom, iv.start + k * seq_len, iv.start + (k + 1) * seq_len)
                for k in range(length // seq_len)
            )
        else:
            left = (seq_len - length) // 2
            windows.append(Window(iv.chrom, iv.start - left, iv.start - left + seq_len))
    return windows


def whole_sequences(chrom_lengths: dict[str, int]) -> list[Interval]:
    """One interval per sequence (split None): what prediction covers when no BED is given."""
    return [Interval(name, 0, length, None, 0) for name, length in chrom_lengths.items()]


class NextBaseDataset(Dataset):
    """Next-base prediction windows over a FASTA file.

    Args:
        fasta: the opened FASTA file.
        windows: input windows, each ``seq_len`` long (from :func:`make_windows`).
        rc_aug: reverse-complement each window with probability 0.5 (training only); the
            choice is a deterministic function of ``(seed, epoch, index)``.
        seed: seed for the augmentation.
        return_coords: also return the window's ``chrom``, ``start``, ``end`` (prediction).

    Items are dicts ``{"input_ids": LongTensor[L], "labels": LongTensor[L]}`` (plus ``"chrom"``:
    str, ``"start"``, ``"end"``: int with ``return_coords``). With augmentation the reverse
    strand is read 5'->3', so the labels still hold each position's next base.
    """

    def __init__(
        self,
        fasta: FastaFile,
        windows: Sequence[Window],
        rc_aug: bool = False,
        seed: int = 0,
        return_coords: bool = False,
    ) -> None:
        if not windows:
            raise ValueError("NextBaseDataset needs at least one window")
        lengths = {w.end - w.start for w in windows}
        if len(lengths) != 1:
            raise ValueError(f"all windows must have the same length, got {sorted(lengths)}")
        self.fasta = fasta
        self.windows = list(windows)
        self.seq_len = lengths.pop()
        self.rc_aug = rc_aug
        self.seed = seed
        self.return_coords = return_coords
        self.epoch = 0
        self.tokenizer = DNATokenizer()

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by the augmentation draw (the DataModule sets it when building the loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows)

    def flips(self, index: int) -> bool:
        """Whether item ``index`` is reverse-complemented in the current epoch."""
        if not self.rc_aug:
            return False
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return bool(rng.random() < 0.5)

    def __getitem__(self, index: int) -> dict[str, Tensor | str | int]:
        win = self.windows[index]
        seq = self.fasta.fetch(win.chrom, win.start, win.end + 1)
        ids = self.tokenizer.encode(seq)  # [L + 1]
        if self.flips(index):
            ids = reverse_complement_ids(ids)
        ids = torch.from_numpy(ids)
        input_ids = ids[:-1].clone()
        labels = ids[1:].clone()
        labels[labels == PAD_ID] = IGNORE_INDEX
        item: dict[str, Tensor | str | int] = {"input_ids": input_ids, "labels": labels}
        if self.return_coords:
            item.update(chrom=win.chrom, start=win.start, end=win.end)
        return item


def collate_windows(items: Sequence[dict]) -> dict[str, Tensor | list]:
    """Stack tensors (``input_ids``, ``labels``: ``[B, L]`` int64) and keep other keys (``chrom``,
    ``start``, ``end``) as lists of length ``B``."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Tensor | list] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    return batch


def dist_rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed when it is initialised, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedSampler(Sampler[int]):
    """Index sampler that shuffles per epoch and gives each data-parallel rank its own shard.

    Order: a permutation drawn from ``(seed, epoch)`` when ``shuffle`` (all ranks draw the same
    one), else ``0..n-1``; then, when ``max_samples`` is set, the first ``max_samples`` indices
    (with shuffling, a different subset each epoch; without, evenly spaced indices so a
    capped evaluation still spans the whole split); then padded by repeating from the start to
    a multiple of ``num_replicas`` (every rank must run the same number of steps under DDP, so
    at most ``num_replicas - 1`` windows are seen twice); rank ``r`` takes positions
    ``r, r + R, r + 2R, ...``.

    Lightning: this sampler shards by itself, so the trainer must be told not to wrap it
    (``use_distributed_sampler: false``); ``HG38DataModule`` checks that. Lightning calls
    ``set_epoch`` on it at the start of every epoch.

    Args:
        num_samples: dataset length.
        shuffle: draw a new permutation every epoch.
        seed: seed of the permutation.
        num_replicas, rank: data-parallel world size and rank; from torch.distributed when None.
        max_samples: cap on the number of indices per epoch across all ranks.
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        max_samples: int | None = None,
    ) -> None:
        dist_rank, dist_world = dist_rank_and_world_size()
        self.num_replicas = dist_world if num_replicas is None else num_replicas
        self.rank = dist_rank if rank is None else rank
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be positive or None, got {max_samples}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.max_samples = max_samples
        self.epoch = 0
        self.total = num_samples if max_samples is None else min(num_samples, max_samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> list[int]:
        """All ranks' indices for the current epoch, before sharding and padding."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples).tolist()
            return order[: self.total]
        if self.total == self.num_samples:
            return list(range(self.num_samples))
        return np.linspace(0, self.num_samples - 1, self.total).round().astype(int).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_indices()
        padded_len = math.ceil(len(order) / self.num_replicas) * self.num_replicas
        order = order + (order * math.ceil(padded_len / len(order)))[: padded_len - len(order)]
        return iter(order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(self.total / self.num_replicas)
