"""Fetch and check the five great-ape assemblies of the species-classification task.

``prepare_great_apes(root)`` leaves ``root/<asm>.fa`` (decompressed, with a pyfaidx ``.fai``
index) for each of hg38 (human), panTro6 (chimpanzee), gorGor6 (gorilla), ponAbe3 (orangutan) and
panPan3 (bonobo), from UCSC's ``goldenPath/<asm>/bigZips/<asm>.fa.gz``. Each step is
atomic: a download goes to ``<asm>.fa.gz.part`` and a decompression to ``<asm>.fa.part``,
renamed only when complete, so an interrupted run never leaves a truncated file under the final
name (rerunning starts that step again). Offline (``download=False`` or no network), files
placed in ``root`` by hand (``<asm>.fa`` or ``<asm>.fa.gz``) are checked and a FileNotFoundError
lists exactly what is missing.

It writes ``root/genomes.yaml`` with the ``--data.genomes`` mapping and returns it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path


from seqmodels.data.download import download_file, gunzip
from seqmodels.data.fasta import FastaFile

UCSC_BASE_URL = "https://hgdownload.soe.ucsc.edu/goldenPath"
# Species name (class order of the task) -> UCSC assembly.
GREAT_APES: dict[str, str] = {
    "human": "hg38",
    "chimpanzee": "panTro6",
    "gorilla": "gorGor6",
    "orangutan": "ponAbe3",
    "bonobo": "panPan3",
}


def assembly_url(assembly: str, base_url: str = UCSC_BASE_URL) -> str:
    """``<base_url>/<asm>/bigZips/<asm>.fa.gz``."""
    return f"{base_url.rstrip('/')}/{assembly}/bigZips/{assembly}.fa.gz"


def prepare_great_apes(
    root: str | os.PathLike,
    download: bool = True,
    assemblies: Mapping[str, str] = GREAT_APES,
    base_url: str = UCSC_BASE_URL,
    opener: Callable[[str], object] = urllib.request.urlopen,
) -> dict[str, str]:
    """Download (when allowed), decompress, index and check the assemblies under ``root``.

    Args:
        root: folder for the genomes (created if absent).
        download: fetch missing ``.fa.gz`` files; ``False`` only checks what is there.
        assemblies: species name -> assembly name (default :data:`GREAT_APES`).
        base_url: where ``<asm>/bigZips/<asm>.fa.gz`` lives (a ``file://`` URL works).
        opener: opens a URL for reading (tests pass their own).

    Returns:
        The genomes mapping, species name -> path of the indexed ``.fa``, also written to
        ``root/genomes.yaml`` and printed.

    Raises:
        FileNotFoundError: some assemblies are neither present nor downloadable; the message
            lists each missing file with its URL.
        ValueError: a present file is not a readable FASTA.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    genomes: dict[str, str] = {}
    missing: list[str] = []
    for species, asm in assemblies.items():
        fa, gz, url = root / f"{asm}.fa", root / f"{asm}.fa.gz", assembly_url(asm, base_url)
        if not fa.is_file() and not gz.is_file() and download:
            try:
                download_file(url, gz, opener=opener)
            except (urllib.error.URLError, OSError) as err:
                print(f"[prepare] could not download {url}: {err}")
        if not fa.is_file() and gz.is_file():
            gunzip(gz, fa)
        if not fa.is_file():
            missing.append(f"{species}: {fa} (or {gz.name}), from {url}")
            continue
        try:
            FastaFile(fa)  # builds the .fai index and checks the file
        except ValueError as err:
            raise ValueError(f"species {species!r} ({asm}): {err}") from None
        genomes[species] = str(fa)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(assemblies)} genomes missing under {root}:\n  "
            + "\n  ".join(missing)
            + "\nDownload them there (and rerun), or rerun with network access."
        )
    text = "genomes:\n" + "".join(f"  {s}: {p}\n" for s, p in genomes.items())
    (root / "genomes.yaml").write_text(text)
    print(f"[prepare] all {len(genomes)} genomes ready; use in the config (data section):\n{text}", end="")
    return genomes


# The public name `download` is shadowed by prepare_great_apes' flag of the same name.
