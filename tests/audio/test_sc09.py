"""SC09 dataset and data module on the committed espeak-ng sample (data/audio/sc09_sample)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from seqmodels.data.audio import START_CODE, mu_law_decode, read_wav
from seqmodels.data.audio_datamodules import SC09DataModule
from seqmodels.data.audio_datasets import IGNORE_INDEX, SC09_DIGITS, SC09Dataset, sc09_files

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "audio" / "sc09_sample"


def test_standard_split_from_the_lists():
    train, valid, test = (sc09_files(SAMPLE, s) for s in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (20, 10, 10)
    valid_names = {f"{p.parent.name}/{p.name}" for p, _ in valid}
    assert valid_names == set((SAMPLE / "validation_list.txt").read_text().split())
    assert not {p for p, _ in train} & {p for p, _ in valid + test}
    for path, digit in train + valid + test:
        assert SC09_DIGITS[digit] == path.parent.name


@pytest.mark.parametrize("mu_law", ["sashimi", "torchaudio"])
def test_autoregressive_items(mu_law):
    ds = SC09Dataset(SAMPLE, "train", mu_law=mu_law)
    path, digit = ds.files[7]
    item = ds[7]
    assert set(item) == {"input_ids", "labels", "digit"} and item["digit"] == digit
    x, y = item["input_ids"], item["labels"]
    assert x.shape == y.shape == (16_000,) and x.dtype == y.dtype == torch.int64
    assert x[0] == START_CODE
    # espeak-ng words are shorter than a second: the tail is padded with silence (inputs) and
    # ignored in the loss (labels).
    n = read_wav(path).numel()
    assert 8_000 < n < 16_000
    assert torch.all(y[n:] == IGNORE_INDEX) and torch.all(x[n + 1 :] == 128)
    assert torch.equal(x[1 : n + 1], y[:n]) and y[:n].min() >= 0 and y[:n].max() <= 255
    if mu_law == "sashimi":
        assert y[:n].min() == 0 and y[:n].max() == 255  # per-clip rescaling reaches both ends
    else:
        # Decoding the codes gives back the waveform, up to the quantisation step.
        wave = read_wav(path)
        err = (mu_law_decode(y[:n], "torchaudio") - wave).abs()
        assert err.max() < 0.02 + 0.05 * wave.abs().max()


def test_padding_labels_can_be_kept_as_silence():
    item = SC09Dataset(SAMPLE, "valid", ignore_padding=False)[0]
    assert item["labels"].min() >= 0 and item["labels"][-1] == 128


def test_classification_view_and_max_items():
    ds = SC09Dataset(SAMPLE, "test", view="classification", max_items=3)
    assert len(ds) == 3
    assert sorted(d for _, d in ds.files) == [0, 3, 6]  # spread over the digits, not a prefix
    item = ds[2]
    assert set(item) == {"waveform", "labels"}
    assert item["waveform"].shape == (16_000,) and item["waveform"].dtype == torch.float32
    assert item["labels"].dtype == torch.int64 and item["labels"].ndim == 0
    assert item["waveform"][-100:].abs().max() == 0  # zero-padded


def test_bad_layout_lists_everything_missing(tmp_path):
    root = tmp_path / "sc"
    shutil.copytree(SAMPLE, root)
    shutil.rmtree(root / "three")
    (root / "testing_list.txt").unlink()
    for wav in (root / "nine").glob("*.wav"):
        wav.unlink()
    with pytest.raises(FileNotFoundError) as err:
        SC09Dataset(root, "train")
    msg = str(err.value)
    assert "three" in msg and "testing_list.txt" in msg and "nine" in msg and "validation_list" not in msg
    with pytest.raises(FileNotFoundError, match="--data.root"):
        SC09DataModule(str(root))
    with pytest.raises(ValueError, match="split"):
        sc09_files(SAMPLE, "training")  # type: ignore[arg-type]


def test_datamodule_batches():
    dm = SC09DataModule(str(SAMPLE), batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 16_000)
    assert batch["digit"].shape == (4,) and batch["digit"].dtype == torch.int64
    assert len(dm.val_dataloader()) == 3  # 10 clips in batches of 4
    cls = SC09DataModule(str(SAMPLE), batch_size=5, view="classification", mu_law="torchaudio")
    cls.setup("test")
    batch = next(iter(cls.test_dataloader()))
    assert batch["waveform"].shape == (5, 16_000) and batch["labels"].shape == (5,)
