"""prepare_sc09 / prepare_youtubemix with local archives (file:// URLs; no network)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from seqmodels.data.audio_datasets import SC09Dataset, check_sc09_root, youtubemix_files
from seqmodels.data.audio_prepare import check_youtubemix_root, prepare_sc09, prepare_youtubemix

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "audio" / "sc09_sample"


def _speech_commands_tarball(path: Path) -> Path:
    """A miniature Speech Commands v0.02 archive: the sample's digits, an extra word and noise."""
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(SAMPLE.rglob("*")):
            if f.is_file():
                tar.add(f, arcname="./" + f.relative_to(SAMPLE).as_posix())
        extra = SAMPLE / "zero" / sorted(p.name for p in (SAMPLE / "zero").glob("*.wav"))[0]
        tar.add(extra, arcname="./marvin/x_nohash_0.wav")
        tar.add(extra, arcname="./_background_noise_/noise.wav")
    return path


def test_prepare_sc09_from_a_file_url(tmp_path):
    archive = _speech_commands_tarball(tmp_path / "speech_commands_v0.02.tar.gz")
    root = tmp_path / "sc09"
    assert prepare_sc09(root, url=archive.as_uri()) == root
    assert check_sc09_root(root) == []
    assert not (root / "marvin").exists() and not (root / "_background_noise_").exists()
    assert not (root / archive.name).exists()  # archive removed after extraction
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left
    assert len(SC09Dataset(root, "train")) == 20
    # A complete directory needs no download, even from a dead URL.
    assert prepare_sc09(root, url=(tmp_path / "gone.tar.gz").as_uri()) == root


def test_prepare_sc09_offline_reports_what_is_missing(tmp_path):
    (tmp_path / "one").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        prepare_sc09(tmp_path, download=False)
    msg = str(err.value)
    assert "zero" in msg and "validation_list.txt" in msg and "no .wav" in msg
    with pytest.raises(RuntimeError, match="cannot download"):
        prepare_sc09(tmp_path, url=(tmp_path / "gone.tar.gz").as_uri())


def test_prepare_sc09_rejects_a_foreign_archive(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    with tarfile.open(bogus, "w:gz") as tar:
        data = b"hello"
        info = tarfile.TarInfo("readme.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="no SC09 files"):
        prepare_sc09(tmp_path / "root", url=bogus.as_uri())


def test_prepare_youtubemix_from_a_file_url(tmp_path):
    wavs = sorted((SAMPLE / "one").glob("*.wav"))
    archive = tmp_path / "youtubemix.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, w in enumerate(wavs):
            zf.write(w, f"youtubemix/out{i}.wav")  # nested folder, flattened on extraction
        zf.writestr("youtubemix/README", "x")
    root = tmp_path / "mix"
    with pytest.raises(FileNotFoundError, match="found 0 WAV"):
        prepare_youtubemix(tmp_path, download=False)
    assert prepare_youtubemix(root, url=archive.as_uri()) == root
    assert check_youtubemix_root(root) == []
    assert sorted(p.name for p in root.iterdir()) == [f"out{i}.wav" for i in range(len(wavs))]
    assert len(youtubemix_files(root, "train", (2, 1, 1))) == 2
