"""LightningDataModules for the waveform models: SC09 and YouTubeMix.

Batches are dicts of stacked items (:mod:`seqmodels.data.audio_datasets`):
``{"input_ids": [B, L] int64, "labels": [B, L] int64, "digit": [B] int64 (SC09 only)}``, or for
the SC09 classification view ``{"waveform": [B, 16000] float32, "labels": [B] int64}``.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
from torch.utils.data import DataLoader, Dataset

from seqmodels.data.audio_datasets import (
    YOUTUBEMIX_FRACTIONS,
    EpochSampler,
    SC09Dataset,
    YouTubeMixDataset,
    check_sc09_root,
    youtubemix_files,
)


def _check_loader_args(batch_size: int, num_workers: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be non-negative, got {num_workers}")


class SC09DataModule(L.LightningDataModule):
    """SC09 spoken digits (one-second clips, 16 kHz, 8-bit mu-law) with the standard split.

    Args:
        root: Speech Commands directory (``zero/`` .. ``nine/``, ``validation_list.txt``,
            ``testing_list.txt``); ``--data.root`` on the command line.
        batch_size: clips per batch (16 in SaShiMi and Mamba).
        num_workers: DataLoader worker processes.
        mu_law: quantiser; ``"sashimi"`` for NLL comparable to the published figures.
        max_items: cap on the clips of each split (smoke tests and tiny configs).
        view: ``"autoregressive"`` (waveform LM) or ``"classification"`` (digit classifier).
        ignore_padding: label padded samples of short clips -100 (SaShiMi's NLL convention).
        pin_memory: pin batches for faster host-to-GPU copies.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 16,
        num_workers: int = 0,
        mu_law: Literal["torchaudio", "sashimi"] = "sashimi",
        max_items: int | None = None,
        view: Literal["autoregressive", "classification"] = "autoregressive",
        ignore_padding: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        _check_loader_args(batch_size, num_workers)
        missing = check_sc09_root(root)
        if missing:
            # Fail at construction (config parsing time), before any training starts.
            raise FileNotFoundError(
                f"--data.root {root} is not a Speech Commands (SC09) directory; missing:\n  "
                + "\n  ".join(missing)
                + "\nGet it with `seqmodels prepare sc09 --root DIR`."
            )
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mu_law = mu_law
        self.max_items = max_items
        self.view = view
        self.ignore_padding = ignore_padding
        self.pin_memory = pin_memory
        self._datasets: dict[str, SC09Dataset] = {}

    def dataset(self, split: Literal["train", "valid", "test"]) -> SC09Dataset:
        """The (cached) dataset of one split."""
        if split not in self._datasets:
            self._datasets[split] = SC09Dataset(
                self.root, split, self.mu_law, self.view, self.ignore_padding, self.max_items
            )
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "valid", "test")):
            self.dataset(split)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("valid"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)


class YouTubeMixDataModule(L.LightningDataModule):
    """YouTubeMix piano (16 kHz, 8-bit mu-law), split by file 88 / 6 / 6 as in SaShiMi.

    Training windows start at random offsets drawn anew every epoch from ``seed``
    (:class:`~seqmodels.data.audio_datasets.EpochSampler`); validation and test windows are
    fixed non-overlapping slots.

    Args:
        root: directory of WAV files (the unzipped ``youtubemix.zip``); ``--data.root``.
        seq_len: window length in samples, 8,192 up to the file length (960,000 for the
            one-minute files).
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        mu_law: quantiser; ``"sashimi"`` as in the papers.
        seed: seed of the training offsets and their order.
        fractions: train / valid / test fractions of the files.
        pin_memory: pin batches for faster host-to-GPU copies.
    """

    def __init__(
        self,
        root: str,
        seq_len: int = 65_536,
        batch_size: int = 1,
        num_workers: int = 0,
        mu_law: Literal["torchaudio", "sashimi"] = "sashimi",
        seed: int = 0,
        fractions: tuple[float, float, float] = YOUTUBEMIX_FRACTIONS,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        _check_loader_args(batch_size, num_workers)
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        # Raises with the path in the message when the directory is missing or has no WAVs.
        youtubemix_files(root, "train", fractions)
        self.save_hyperparameters()
        self.root = root
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mu_law = mu_law
        self.seed = seed
        self.fractions = tuple(fractions)
        self.pin_memory = pin_memory
        self._datasets: dict[str, YouTubeMixDataset] = {}

    def dataset(self, split: Literal["train", "valid", "test"]) -> YouTubeMixDataset:
        """The (cached) dataset of one split; training windows move, the others are fixed."""
        if split not in self._datasets:
            self._datasets[split] = YouTubeMixDataset(
                self.root, split, self.seq_len, split == "train", self.mu_law, self.seed, self.fractions
            )
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "valid", "test")):
            self.dataset(split)

    def _loader(self, split: Literal["train", "valid", "test"]) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(dataset), shuffle=split == "train", seed=self.seed),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
