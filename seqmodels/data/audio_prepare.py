"""Download and check the audio datasets: SC09 (from Speech Commands v0.02) and YouTubeMix.

``prepare_*(root, download=True)`` leaves a directory the datasets read, downloading what is
missing when the network allows; with ``download=False`` it only checks the directory and
reports exactly what is missing. Every file appears under its final name only when complete
(temporary file + rename), so an interrupted run can simply be restarted.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from seqmodels.data.download import download_file
from seqmodels.data.audio_datasets import SC09_DIGITS, natural_sort_key, check_sc09_root

SPEECH_COMMANDS_URL = "https://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
# Gated on the Hugging Face Hub: accept the dataset's conditions while logged in, then pass a
# token (HF_TOKEN environment variable). 241 one-minute clips at 16 kHz, SaShiMi's version.
YOUTUBEMIX_URL = "https://huggingface.co/datasets/krandiash/youtubemix/resolve/main/youtubemix.zip"
_SC09_LISTS = ("validation_list.txt", "testing_list.txt")
_CHUNK = 1 << 20


def _sc09_member(name: str) -> str | None:
    # Archive names may start with "./"; keep the digit folders' WAVs and the two split lists.
    name = name.removeprefix("./")
    parts = name.split("/")
    if len(parts) == 1 and parts[0] in _SC09_LISTS:
        return name
    if len(parts) == 2 and parts[0] in SC09_DIGITS and parts[1].endswith(".wav"):
        return name
    return None


def extract_sc09(archive: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Extract the SC09 part of a Speech Commands tarball (digit folders + split lists) into ``root``.

    Members are unpacked into a temporary folder inside ``root`` and moved into place, so the
    digit folders appear only complete. Existing files in ``root`` are kept.
    """
    archive, root = Path(archive), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            # One sequential pass: listing the members first would decompress the archive twice.
            extracted = 0
            with tarfile.open(archive, "r:*") as tar, tqdm(desc=f"extract {archive.name}", unit="file") as bar:
                for m in tar:
                    name = _sc09_member(m.name) if m.isfile() else None
                    if name is None:
                        continue
                    m.name = name
                    # The "data" filter refuses absolute paths, links out of the tree and devices.
                    tar.extract(m, staging, filter="data")
                    extracted += 1
                    bar.update()
            if not extracted:
                raise ValueError(f"{archive} contains no SC09 files (zero/*.wav .. nine/*.wav)")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ValueError(f"cannot extract {archive}: {err} (delete it and download again)") from err
        for entry in sorted(staging.iterdir()):
            target = root / entry.name
            if entry.is_dir() and target.is_dir():
                for f in entry.iterdir():
                    if not (target / f.name).exists():
                        os.replace(f, target / f.name)
            elif not target.exists():
                os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def prepare_sc09(
    root: str | os.PathLike,
    download: bool = True,
    url: str = SPEECH_COMMANDS_URL,
    keep_archive: bool = False,
) -> Path:
    """Make ``root`` a Speech Commands directory with everything SC09 needs.

    When something is missing and ``download`` is true, the Speech Commands v0.02 tarball
    (2.3 GB) is downloaded into ``root`` and its digit folders and split lists extracted (the
    other 25 words are skipped); the tarball is deleted afterwards unless ``keep_archive``.

    Returns:
        ``root`` as a Path.

    Raises:
        FileNotFoundError: ``download`` is false and files are missing (the message lists them).
        RuntimeError: the download failed (the message says what to fetch by hand).
    """
    root = Path(root)
    missing = check_sc09_root(root)
    if not missing:
        return root
    if not download:
        raise FileNotFoundError(
            f"SC09 data incomplete under {root}; missing:\n  " + "\n  ".join(missing)
            + f"\nDownload {url} and extract it into {root}, or run `seqmodels prepare sc09 --root {root}`."
        )
    archive = root / Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1])).name
    if not archive.is_file():
        try:
            download_file(url, archive)
        except (urllib.error.URLError, OSError) as err:
            raise RuntimeError(
                f"cannot download {url}: {err}\nDownload it by hand to {archive} and run this again "
                f"(missing now: {', '.join(missing)})"
            ) from err
    extract_sc09(archive, root)
    still = check_sc09_root(root)
    if still:
        raise FileNotFoundError(f"{archive} did not provide everything SC09 needs; still missing:\n  " + "\n  ".join(still))
    if not keep_archive:
        archive.unlink()
    return root


def check_youtubemix_root(root: str | os.PathLike, min_files: int = 3) -> list[str]:
    """List what is missing from a YouTubeMix directory (empty when usable).

    Usable means at least ``min_files`` ``.wav`` files directly under ``root`` (the split is by
    file, so fewer cannot give non-empty train, validation and test sets).
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root}/ (the directory itself)"]
    n = sum(1 for p in root.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if n < min_files:
        return [f"{root}/*.wav: found {n} WAV files, need at least {min_files}"]
    return []


def extract_youtubemix(archive: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Unpack the ``.wav`` files of a YouTubeMix zip directly into ``root`` (folders flattened)."""
    archive, root = Path(archive), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [
                m for m in zf.infolist()
                if not m.is_dir() and m.filename.lower().endswith(".wav") and "__MACOSX" not in m.filename
            ]
            if not members:
                raise ValueError(f"{archive} contains no .wav files")
            names = [Path(m.filename).name for m in members]
            if len(set(names)) != len(names):
                raise ValueError(f"{archive} has WAV files with the same name in different folders")
            for m, name in tqdm(sorted(zip(members, names), key=lambda t: natural_sort_key(t[1])), desc=f"extract {archive.name}", unit="file"):
                dest = root / name
                if dest.exists():
                    continue
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(m) as src:
                        shutil.copyfileobj(src, out, _CHUNK)
                    os.replace(tmp, dest)
                finally:
                    Path(tmp).unlink(missing_ok=True)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"cannot extract {archive}: {err} (delete it and download again)") from err
    return root


def prepare_youtubemix(
    root: str | os.PathLike,
    download: bool = True,
    url: str = YOUTUBEMIX_URL,
    token: str | None = None,
    keep_archive: bool = False,
) -> Path:
    """Make ``root`` a directory of YouTubeMix WAV files.

    The Hugging Face dataset is gated: accept its conditions on the Hub, then pass ``token`` or
    set ``HF_TOKEN``; the token is sent only as an ``Authorization`` header to ``url``.

    Returns:
        ``root`` as a Path.

    Raises:
        FileNotFoundError: ``download`` is false and the WAV files are missing.
        RuntimeError: the download failed (the message says what to fetch by hand).
    """
    root = Path(root)
    missing = check_youtubemix_root(root)
    if not missing:
        return root
    if not download:
        raise FileNotFoundError(
            f"YouTubeMix data incomplete under {root}: {'; '.join(missing)}\n"
            f"Download {url} (gated: accept the conditions on the Hugging Face Hub first) and unzip "
            f"the WAV files into {root}, or run `seqmodels prepare youtubemix --root {root}`."
        )
    archive = root / Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1])).name
    if not archive.is_file():
        token = token if token is not None else os.environ.get("HF_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token and url.startswith("https://huggingface.co/") else None
        try:
            download_file(url, archive, headers=headers)
        except urllib.error.HTTPError as err:
            hint = " (the dataset is gated: accept its conditions on the Hub and set HF_TOKEN)" if err.code in (401, 403) else ""
            raise RuntimeError(f"cannot download {url}: {err}{hint}; or download it by hand to {archive}") from err
        except (urllib.error.URLError, OSError) as err:
            raise RuntimeError(f"cannot download {url}: {err}; download it by hand to {archive} and run this again") from err
    extract_youtubemix(archive, root)
    still = check_youtubemix_root(root)
    if still:
        raise FileNotFoundError(f"{archive} did not provide a usable YouTubeMix directory: {'; '.join(still)}")
    if not keep_archive:
        archive.unlink()
    return root
