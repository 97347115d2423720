"""YouTubeMix: split by file, random training windows, fixed evaluation windows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from seqmodels.data.audio import mu_law_encode, read_wav, write_wav
from seqmodels.data.audio_datamodules import YouTubeMixDataModule
from seqmodels.data.audio_datasets import EpochSampler, YouTubeMixDataset, youtubemix_files

SEQ = 1_000


@pytest.fixture(scope="module")
def mix_dir(tmp_path_factory):
    """Ten synthetic 'piano' files of 0.3 s (4,800 samples) with distinct tones, named so that
    plain and natural sorting differ (clip2 < clip10)."""
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    t = np.arange(4_800) / 16_000
    for i in range(10):
        tone = 0.4 * np.sin(2 * np.pi * (220 + 40 * i) * t) * np.exp(-3 * t) + 0.01 * rng.standard_normal(t.size)
        write_wav(root / f"clip{i}.wav", tone.astype(np.float32))
    (root / "notes.txt").write_text("not audio")  # ignored: not a .wav
    return root


def test_split_by_file_in_natural_order(mix_dir):
    train, valid, test = (youtubemix_files(mix_dir, s) for s in ("train", "valid", "test"))
    # int(0.88 * 10) = 8, int(0.94 * 10) = 9
    assert [p.name for p in train] == [f"clip{i}.wav" for i in range(8)]
    assert [p.name for p in valid] == ["clip8.wav"] and [p.name for p in test] == ["clip9.wav"]
    assert [p.name for p in youtubemix_files(mix_dir, "train", (0.5, 0.25, 0.25))] == [f"clip{i}.wav" for i in range(5)]
    with pytest.raises(ValueError, match="empty"):
        youtubemix_files(mix_dir, "valid", (1.0, 0.0, 0.0))
    with pytest.raises(FileNotFoundError, match="no .wav"):
        youtubemix_files(mix_dir / "..", "train")


def test_eval_windows_are_fixed_slots(mix_dir):
    ds = YouTubeMixDataset(mix_dir, "valid", seq_len=SEQ, train=False, mu_law="torchaudio")
    assert len(ds) == 4  # 4,800 // 1,000 slots; the 800-sample tail is dropped
    wave = read_wav(mix_dir / "clip8.wav")
    for i in range(4):
        item = ds[i]
        assert item["labels"].shape == item["input_ids"].shape == (SEQ,)
        assert torch.equal(item["labels"], mu_law_encode(wave[i * SEQ : (i + 1) * SEQ], "torchaudio"))
        assert item["input_ids"][0] == 128 and torch.equal(item["input_ids"][1:], item["labels"][:-1])
    assert torch.equal(ds[(2, 5)]["labels"], ds[2]["labels"])  # the epoch does not move eval windows


def test_training_windows_move_each_epoch_reproducibly(mix_dir):
    ds = YouTubeMixDataset(mix_dir, "train", seq_len=SEQ, seed=3)
    assert len(ds) == 8 * 4
    starts = {e: [ds.window_start(i, e) for i in range(len(ds))] for e in range(3)}
    assert starts[0] != starts[1] != starts[2]
    again = YouTubeMixDataset(mix_dir, "train", seq_len=SEQ, seed=3)
    assert starts[1] == [again.window_start(i, 1) for i in range(len(ds))]
    assert starts[0] != [YouTubeMixDataset(mix_dir, "train", seq_len=SEQ, seed=4).window_start(i, 0) for i in range(len(ds))]
    for i, s in enumerate(starts[0]):
        slot = ds.windows[i]
        assert slot.start <= s <= slot.start + SEQ - 1 and s + SEQ <= 4_800
    item = ds[(5, 1)]
    wave = read_wav(ds.files[ds.windows[5].file])
    assert torch.equal(item["labels"], mu_law_encode(wave[starts[1][5] : starts[1][5] + SEQ], "sashimi"))


def test_files_at_other_rates_and_too_long_windows(tmp_path):
    t = np.arange(22_050) / 22_050  # one second at 22.05 kHz -> 16,000 samples
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22_050)
    ds = YouTubeMixDataset(tmp_path, "test", seq_len=4_000, train=False, fractions=(1, 1, 1))
    assert len(ds) == 4 and ds[3]["labels"].shape == (4_000,)
    with pytest.raises(ValueError, match="seq_len=20000"):
        YouTubeMixDataset(tmp_path, "train", seq_len=20_000, fractions=(1, 1, 1))


def test_epoch_sampler():
    s = EpochSampler(6, shuffle=True, seed=1)
    first, second = list(s), list(s)
    assert {e for _, e in first} == {0} and {e for _, e in second} == {1}  # advances by itself
    assert sorted(i for i, _ in first) == list(range(6)) and first != [(i, 0) for i in range(6)]
    s.set_epoch(0)
    assert list(s) == first  # explicit epochs reproduce
    assert list(EpochSampler(3, shuffle=False)) == [(0, 0), (1, 0), (2, 0)]


def test_datamodule(mix_dir):
    dm = YouTubeMixDataModule(str(mix_dir), seq_len=SEQ, batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (3, SEQ)
    assert len(dm.val_dataloader()) == 2  # 4 windows in batches of 3
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        YouTubeMixDataModule(str(mix_dir / "missing_dir"))
