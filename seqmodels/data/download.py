"""Downloading and decompressing dataset files, shared by every ``seqmodels prepare``.

Both write through a temporary file in the destination folder and rename it at the end, so an
interrupted run never leaves a truncated file under the final name.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

CHUNK = 1 << 20


def _temporary_beside(dest: Path) -> tuple[int, Path]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    return fd, Path(tmp)


def download_file(
    url: str,
    dest: str | os.PathLike,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    opener: Callable[[str], Any] | None = None,
) -> Path:
    """Download ``url`` (http(s) or ``file://``) to ``dest`` with a progress bar.

    ``opener(url)``, if given, replaces ``urllib.request.urlopen`` (tests pass their own).
    Raises ``urllib.error.URLError`` / ``OSError`` when the network or server fails.
    """
    dest = Path(dest)
    fd, tmp = _temporary_beside(dest)
    try:
        if opener is None:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)
        else:
            response = opener(url)
        with os.fdopen(fd, "wb") as out, response:
            resp_headers = getattr(response, "headers", None)
            total = resp_headers.get("Content-Length") if resp_headers is not None else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def gunzip(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Stream-decompress ``src`` into ``dest``; a truncated or corrupt file is a ValueError naming it."""
    src, dest = Path(src), Path(dest)
    fd, tmp = _temporary_beside(dest)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as raw, gzip.open(raw) as zipped:
            with tqdm(total=src.stat().st_size, unit="B", unit_scale=True, desc=f"gunzip {src.name}") as bar:
                while chunk := zipped.read(CHUNK):
                    out.write(chunk)
                    bar.n = raw.tell()  # progress in compressed bytes: the only total known in advance
                    bar.refresh()
        os.replace(tmp, dest)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(
            f"cannot decompress {src}: {src.name} is not a complete gzip file ({err}); delete it and download it again"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest
