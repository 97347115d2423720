"""Datasets of waveforms as mu-law codes: SC09 spoken digits and YouTubeMix piano.

Item dict of the autoregressive views (shared by both datasets)::

    input_ids  LongTensor [L]   START_CODE (128, silence) then codes[:-1]
    labels     LongTensor [L]   the L mu-law codes; -100 (ignored by cross-entropy) where a
                                short SC09 clip was padded, when ``ignore_padding``

plus ``"digit": int`` for SC09. The classification view of SC09 gives ``{"waveform":
FloatTensor [16000], "labels": LongTensor [] (the digit)}``.

Splits follow SaShiMi (state-spaces/s4, ``src/dataloaders/audio.py``): SC09 by the Speech
Commands ``validation_list.txt`` / ``testing_list.txt``; YouTubeMix by file, the first 88% of the
naturally sorted file names for training, the next 6% validation, the last 6% test.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from seqmodels.data.audio import (
    SAMPLE_RATE,
    SILENCE_CODE,
    MuLawVariant,
    audio_info,
    autoregressive_pair,
    fix_length,
    mu_law_encode,
    read_wav,
)

SC09_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SC09_CLIP_LEN = SAMPLE_RATE  # one second
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
Split = Literal["train", "valid", "test"]
_SPLITS = ("train", "valid", "test")
YOUTUBEMIX_FRACTIONS = (0.88, 0.06, 0.06)


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


# ---------------------------------------------------------------------------------------------
# SC09
# ---------------------------------------------------------------------------------------------


def check_sc09_root(root: str | os.PathLike) -> list[str]:
    """List what is missing from a Speech Commands directory for SC09 (empty when complete).

    Needed: ``zero/`` .. ``nine/`` each holding at least one ``.wav`` file, and the split lists
    ``validation_list.txt`` and ``testing_list.txt``.
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root}/ (the directory itself)"]
    missing = []
    for digit in SC09_DIGITS:
        d = root / digit
        if not d.is_dir():
            missing.append(f"{d}/")
        elif not any(d.glob("*.wav")):
            missing.append(f"{d}/*.wav (the folder has no .wav files)")
    for name in ("validation_list.txt", "testing_list.txt"):
        if not (root / name).is_file():
            missing.append(str(root / name))
    return missing


def _read_list(path: Path) -> set[str]:
    # Entries look like "zero/0c40e715_nohash_0.wav", always with forward slashes.
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def sc09_files(root: str | os.PathLike, split: Split) -> list[tuple[Path, int]]:
    """The ``(path, digit)`` pairs of one SC09 split, sorted by relative path.

    Raises:
        FileNotFoundError: the layout is incomplete; the message lists everything missing.
    """
    _check_split(split)
    root = Path(root)
    missing = check_sc09_root(root)
    if missing:
        raise FileNotFoundError(
            f"{root} is not a Speech Commands (SC09) directory; missing:\n  "
            + "\n  ".join(missing)
            + "\nGet it with `seqmodels prepare sc09 --root DIR`."
        )
    valid = _read_list(root / "validation_list.txt")
    test = _read_list(root / "testing_list.txt")
    out = []
    for digit, name in enumerate(SC09_DIGITS):
        for path in sorted((root / name).glob("*.wav")):
            rel = f"{name}/{path.name}"
            where = "valid" if rel in valid else "test" if rel in test else "train"
            if where == split:
                out.append((path, digit))
    return out


class SC09Dataset(Dataset):
    """SC09: the spoken digits of Speech Commands, one second at 16 kHz, as mu-law codes.

    Each clip is cut or padded at the end to 16,000 samples. With the ``"sashimi"`` variant the
    min-max rescaling is applied to the clip *before* padding (as SaShiMi does), and the padding
    is the silence code 128. With ``ignore_padding`` the labels of padded positions are -100, so
    they count in no loss: SaShiMi's SC09 NLL is measured that way.

    Items (``view="autoregressive"``): ``{"input_ids": LongTensor[16000], "labels":
    LongTensor[16000], "digit": int}``; ``input_ids`` is the start code 128 followed by the first
    15,999 codes. Items (``view="classification"``): ``{"waveform": FloatTensor[16000] in [-1, 1],
    zero-padded, "labels": LongTensor[] digit}``.

    Args:
        root: Speech Commands directory (``zero/*.wav`` .. ``nine/*.wav`` and the split lists).
        split: ``"train"`` (every clip in neither list), ``"valid"`` or ``"test"``.
        mu_law: quantiser variant (see :mod:`seqmodels.data.audio`).
        view: ``"autoregressive"`` or ``"classification"``.
        ignore_padding: label padded positions -100 instead of the silence code.
        max_items: keep only ``max_items`` clips of the split, evenly spaced over the
            path-sorted list so that every digit appears (smoke tests, tiny configs).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: Split = "train",
        mu_law: MuLawVariant = "sashimi",
        view: Literal["autoregressive", "classification"] = "autoregressive",
        ignore_padding: bool = True,
        max_items: int | None = None,
    ) -> None:
        if view not in ("autoregressive", "classification"):
            raise ValueError(f"view must be 'autoregressive' or 'classification', got {view!r}")
        if mu_law not in ("torchaudio", "sashimi"):
            raise ValueError(f"mu_law must be 'torchaudio' or 'sashimi', got {mu_law!r}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be positive or None, got {max_items}")
        self.root = Path(root)
        self.split = split
        self.mu_law = mu_law
        self.view = view
        self.ignore_padding = ignore_padding
        files = sc09_files(self.root, split)
        if not files:
            raise ValueError(f"SC09 split {split!r} under {self.root} has no clips")
        if max_items is not None and max_items < len(files):
            # Evenly spaced over the path-sorted list, so a small subset still has every digit.
            files = [files[k * len(files) // max_items] for k in range(max_items)]
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        path, digit = self.files[index]
        wave = read_wav(path)[:SC09_CLIP_LEN]  # [T <= 16000]
        if wave.numel() == 0:
            raise ValueError(f"SC09 clip {path} is empty")
        if self.view == "classification":
            return {"waveform": fix_length(wave, SC09_CLIP_LEN), "labels": torch.tensor(digit)}
        length = wave.shape[-1]
        codes = mu_law_encode(wave, self.mu_law)  # rescaling sees the clip without padding
        codes = torch.nn.functional.pad(codes, (0, SC09_CLIP_LEN - length), value=SILENCE_CODE)
        input_ids, labels = autoregressive_pair(codes)
        if self.ignore_padding and length < SC09_CLIP_LEN:
            labels = labels.clone()
            labels[length:] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "digit": digit}


# ---------------------------------------------------------------------------------------------
# YouTubeMix
# ---------------------------------------------------------------------------------------------


def natural_sort_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs by value ("clip10" after "clip9"), as natsort does in SaShiMi."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def youtubemix_files(
    root: str | os.PathLike, split: Split, fractions: Sequence[float] = YOUTUBEMIX_FRACTIONS
) -> list[Path]:
    """The WAV files of one YouTubeMix split: split by file, in natural name order.

    With ``n`` files and fractions ``(a, b, c)`` (normalised), training takes files
    ``[0, int(a n))``, validation ``[int(a n), int((a + b) n))`` and test the rest, as SaShiMi
    does with ``0.88 / 0.06 / 0.06``.

    Raises:
        FileNotFoundError: ``root`` is not a directory or holds no ``.wav`` files.
        ValueError: bad fractions, or the split would be empty.
    """
    _check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"YouTubeMix directory not found: {root} (get it with `seqmodels prepare youtubemix --root DIR`)")
    files = sorted((p for p in root.iterdir() if p.suffix.lower() == ".wav" and p.is_file()), key=lambda p: natural_sort_key(p.name))
    if not files:
        raise FileNotFoundError(f"no .wav files in YouTubeMix directory {root}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, valid, test), got {tuple(fractions)}")
    total = float(sum(fractions))
    a, b = fractions[0] / total, (fractions[0] + fractions[1]) / total
    n = len(files)
    bounds = {"train": (0, int(a * n)), "valid": (int(a * n), int(b * n)), "test": (int(b * n), n)}
    lo, hi = bounds[split]
    if hi <= lo:
        raise ValueError(
            f"YouTubeMix split {split!r} is empty: {n} files under {root} with fractions {tuple(fractions)}; "
            "add files or change the fractions"
        )
    return files[lo:hi]


@dataclass(frozen=True)
class _Window:
    file: int
    start: int  # first sample of the slot, at 16 kHz
    room: int  # how far a training window may move right of ``start`` and stay inside the file


class YouTubeMixDataset(Dataset):
    """Windows of ``seq_len`` samples from a directory of piano WAV files, as mu-law codes.

    Every file is cut into ``len // seq_len`` non-overlapping slots (the tail shorter than a
    window is dropped); files shorter than ``seq_len`` contribute nothing (with a warning). An
    evaluation window (``train=False``) is exactly its slot, the same every time. A training
    window starts at its slot plus a random offset in ``[0, seq_len)`` (clamped to stay in the
    file), drawn from ``(seed, epoch, index)``: the same across workers and reruns, new each
    epoch. The epoch comes with the key: ``dataset[(index, epoch)]`` (as
    :class:`EpochSampler` yields), or ``dataset[index]`` for the epoch set by :meth:`set_epoch`.

    With the ``"sashimi"`` variant each window is min-max rescaled on its own, as in SaShiMi.

    Items: ``{"input_ids": LongTensor[seq_len], "labels": LongTensor[seq_len]}``.

    Args:
        root: directory of WAV files (any rate; resampled to 16 kHz on read).
        split: ``"train"``, ``"valid"`` or ``"test"`` (by file; :func:`youtubemix_files`).
        seq_len: window length in samples (at least 2).
        train: random offsets (True) or the fixed slots (False).
        mu_law: quantiser variant.
        seed: seed of the offsets.
        fractions: train/valid/test fractions of the files.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: Split = "train",
        seq_len: int = 65_536,
        train: bool = True,
        mu_law: MuLawVariant = "sashimi",
        seed: int = 0,
        fractions: Sequence[float] = YOUTUBEMIX_FRACTIONS,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if mu_law not in ("torchaudio", "sashimi"):
            raise ValueError(f"mu_law must be 'torchaudio' or 'sashimi', got {mu_law!r}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.root = Path(root)
        self.seq_len = seq_len
        self.train = train
        self.mu_law = mu_law
        self.seed = seed
        self.epoch = 0
        self.files = youtubemix_files(self.root, split, fractions)
        self.lengths = []
        for path in self.files:
            frames, rate = audio_info(path)
            self.lengths.append(frames * SAMPLE_RATE // rate)
        self.windows: list[_Window] = []
        short = 0
        for i, length in enumerate(self.lengths):
            slots = length // seq_len
            short += slots == 0
            for s in range(slots):
                self.windows.append(_Window(i, s * seq_len, length - (s + 1) * seq_len))
        if not self.windows:
            raise ValueError(
                f"no file of YouTubeMix split {split!r} under {self.root} is at least seq_len={seq_len} "
                f"samples long (longest: {max(self.lengths)} samples at 16 kHz)"
            )
        if short:
            warnings.warn(f"{short} of {len(self.files)} files in split {split!r} are shorter than seq_len={seq_len} and are skipped")

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by integer keys (tuple keys carry their own)."""
        self.epoch = epoch

    def window_start(self, index: int, epoch: int | None = None) -> int:
        """First sample (16 kHz) of window ``index`` in its file at ``epoch``."""
        w = self.windows[index]
        if not self.train:
            return w.start
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch, index])
        return w.start + min(int(rng.integers(self.seq_len)), w.room)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        index %= len(self)
        path = self.files[self.windows[index].file]
        wave = read_wav(path, start=self.window_start(index, epoch), num_samples=self.seq_len)
        # Resampled files can come up a sample short of the promised length at the very end.
        wave = fix_length(wave, self.seq_len)
        input_ids, labels = autoregressive_pair(mu_law_encode(wave, self.mu_law))
        return {"input_ids": input_ids, "labels": labels}


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` keys in an order shuffled per epoch from ``seed``.

    The epoch travels with each key, so dataset workers need no shared state to draw new
    training offsets every epoch. Lightning calls :meth:`set_epoch` before each epoch; a sampler
    iterated again without it (e.g. wrapped by Lightning's distributed sampler wrapper) moves
    on to the next epoch by itself.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._pending: int | None = None  # epoch set explicitly for the next iteration
        self._started = False

    def set_epoch(self, epoch: int) -> None:
        self._pending = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self._pending is not None:
            self.epoch, self._pending = self._pending, None
        elif self._started:
            self.epoch += 1
        self._started = True
        epoch = self.epoch
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        for i in order:
            yield int(i), epoch
