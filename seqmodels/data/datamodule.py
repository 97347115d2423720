"""LightningDataModule for next-base pretraining on a FASTA + BED (HG38 or the shipped sample)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from seqmodels.data.bed import Interval, count_splits, normalize_split, read_bed, select_split
from seqmodels.data.dna import (
    NextBaseDataset,
    ShardedSampler,
    collate_windows,
    make_windows,
    whole_sequences,
)
from seqmodels.data.fasta import FastaFile


class HG38DataModule(L.LightningDataModule):
    """Next-base windows of a FASTA file over the intervals of a BED file.

    Both files are read and checked when the module is built, so a bad path or a bad BED line
    fails before any training step.

    Batches: ``{"input_ids": [B, L] int64, "labels": [B, L] int64}`` (``labels`` hold the next
    base, -100 where it is padding); predict batches add ``"chrom"``, ``"start"``, ``"end"``
    lists of length ``B`` (the window coordinates of ``input_ids``).

    The length can change between epochs (:class:`~seqmodels.data.callbacks.SeqLenWarmup`):
    the trainer must rebuild loaders each epoch (``reload_dataloaders_every_n_epochs: 1``), and
    validation uses the current length too. Every loader uses
    :class:`~seqmodels.data.dna.ShardedSampler`, which shards across data-parallel ranks by
    itself, so the trainer must have ``use_distributed_sampler: false`` (checked in ``setup``
    when more than one process runs).

    Args:
        fasta: uncompressed FASTA file (its ``.fai`` index is built next to it if absent).
        bed: BED file ``chrom start end [split]``; None only for prediction (whole sequences).
        seq_len: tokens per window ``L``.
        batch_size: windows per batch on each device.
        num_workers: DataLoader worker processes.
        rc_aug: reverse-complement training windows with probability 0.5.
        seed: seed for the per-epoch shuffle and the augmentation.
        max_train_windows: cap on training windows per epoch (a new random subset each epoch).
        max_eval_windows: cap on validation / test windows (evenly spaced, same every time).
        predict_split: split predicted on (``train``/``valid``/``test``); ignored for a
            3-column BED or no BED, where every row / sequence is predicted.
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies).
    """

    def __init__(
        self,
        fasta: str,
        bed: str | None = None,
        seq_len: int = 1024,
        batch_size: int = 8,
        num_workers: int = 0,
        rc_aug: bool = False,
        seed: int = 0,
        max_train_windows: int | None = None,
        max_eval_windows: int | None = None,
        predict_split: str = "test",
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {num_workers}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        for name, value in (("max_train_windows", max_train_windows), ("max_eval_windows", max_eval_windows)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive or null, got {value}")
        self.save_hyperparameters()
        self.predict_split = normalize_split(predict_split)
        self.fasta = FastaFile(fasta)
        self.bed_path = Path(bed) if bed is not None else None
        self.intervals: list[Interval] | None = None
        if self.bed_path is not None:
            self.intervals = read_bed(self.bed_path, self.fasta.chrom_lengths)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.rc_aug = rc_aug
        self.seed = seed
        self.max_train_windows = max_train_windows
        self.max_eval_windows = max_eval_windows
        self.pin_memory = pin_memory

    # -- knobs changed by callbacks ------------------------------------------------------
    def set_seq_len(self, seq_len: int) -> None:
        """Window length for loaders built from now on."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.seq_len = seq_len

    def set_batch_size(self, batch_size: int) -> None:
        """Batch size for loaders built from now on."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size

    # -- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return
        wraps = getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", False)
        if wraps:
            raise ValueError(
                "HG38DataModule shards windows across ranks itself; set the trainer option "
                "use_distributed_sampler: false (otherwise Lightning would shard its shards)"
            )

    def split_intervals(self, split: str | None) -> list[Interval]:
        """Intervals of a split (``None``: every row, or whole sequences without a BED)."""
        if self.intervals is None:
            if split is not None:
                raise ValueError(f"split {split!r} needs a BED file with a split column: set --data.bed")
            return whole_sequences(self.fasta.chrom_lengths)
        return select_split(self.intervals, split, self.bed_path)

    def dataset(self, split: str | None, return_coords: bool = False) -> NextBaseDataset:
        """Dataset of a split at the current ``seq_len``; augmentation only for ``train``."""
        windows = make_windows(self.split_intervals(split), self.seq_len)
        return NextBaseDataset(
            self.fasta,
            windows,
            rc_aug=self.rc_aug and split == "train",
            seed=self.seed,
            return_coords=return_coords,
        )

    def _current_epoch(self) -> int:
        trainer = self.trainer
        return trainer.current_epoch if trainer is not None else 0

    def _loader(self, dataset: NextBaseDataset, shuffle: bool, max_samples: int | None) -> DataLoader:
        epoch = self._current_epoch()
        dataset.set_epoch(epoch)
        sampler = ShardedSampler(len(dataset), shuffle=shuffle, seed=self.seed, max_samples=max_samples)
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_windows,
            pin_memory=self.pin_memory,
            # Workers must see each epoch's dataset.epoch (augmentation), so they are not kept.
            persistent_workers=False,
        )

    def _apply_warmup(self) -> None:
        # Pull the warmup schedule here rather than rely on a callback hook: train loaders are
        # built before on_train_epoch_start, and on resume before any hook sees the epoch.
        trainer = self.trainer
        if trainer is None:
            return
        from seqmodels.data.callbacks import SeqLenWarmup

        for callback in trainer.callbacks:
            if isinstance(callback, SeqLenWarmup):
                callback.apply(self, trainer.current_epoch)

    def train_dataloader(self) -> DataLoader:
        self._apply_warmup()
        return self._loader(self.dataset("train"), shuffle=True, max_samples=self.max_train_windows)

    def val_dataloader(self) -> DataLoader:
        self._apply_warmup()  # the sanity check runs before the first train loader is built
        return self._loader(self.dataset("valid"), shuffle=False, max_samples=self.max_eval_windows)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False, max_samples=self.max_eval_windows)

    def predict_dataloader(self) -> DataLoader:
        """Windows of ``predict_split`` (every row of a 3-column BED; whole sequences without a
        BED) in file order, with coordinates. Under DDP the last batch of a rank may repeat
        up to ``world_size - 1`` windows from the start (equal shard sizes); deduplicate by
        coordinates when writing."""
        has_splits = self.intervals is not None and self.intervals[0].split is not None
        split = self.predict_split if has_splits else None
        return self._loader(self.dataset(split, return_coords=True), shuffle=False, max_samples=None)

    def summary(self) -> dict[str | None, int]:
        """Number of intervals per split in the BED file (empty without one)."""
        return count_splits(self.intervals) if self.intervals is not None else {}
