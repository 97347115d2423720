"""prepare_great_apes on local files only: file:// downloads, a patched opener, offline checks."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from seqmodels.data.species import GreatApesDataModule
from seqmodels.data.species_prepare import GREAT_APES, assembly_url, prepare_great_apes

TWO = {"human": "hg38", "chimpanzee": "panTro6"}


def fake_assembly(asm: str) -> bytes:
    # Distinct content per assembly, soft-masked like UCSC's files.
    body = ("ACGTacgtNN" * 30 + asm.upper()[:2].replace("H", "A").replace("P", "C")) * 4
    lines = "\n".join(body[i : i + 50] for i in range(0, len(body), 50))
    return f">chr1\n{lines}\n>chr2\n{lines}\n".encode()


def mirror(tmp_path: Path, assemblies: dict[str, str]) -> str:
    for asm in assemblies.values():
        folder = tmp_path / "mirror" / asm / "bigZips"
        folder.mkdir(parents=True)
        (folder / f"{asm}.fa.gz").write_bytes(gzip.compress(fake_assembly(asm)))
    return (tmp_path / "mirror").as_uri()


def test_urls_follow_ucsc_layout():
    assert assembly_url("panPan3") == "https://hgdownload.soe.ucsc.edu/goldenPath/panPan3/bigZips/panPan3.fa.gz"
    assert list(GREAT_APES) == ["human", "chimpanzee", "gorilla", "orangutan", "bonobo"]
    assert list(GREAT_APES.values()) == ["hg38", "panTro6", "gorGor6", "ponAbe3", "panPan3"]


def test_download_decompress_index_and_mapping_from_a_file_url(tmp_path, capsys):
    root = tmp_path / "apes"
    genomes = prepare_great_apes(root, assemblies=TWO, base_url=mirror(tmp_path, TWO))
    assert genomes == {"human": str(root / "hg38.fa"), "chimpanzee": str(root / "panTro6.fa")}
    for asm in TWO.values():
        assert (root / f"{asm}.fa").read_bytes() == fake_assembly(asm)
        assert (root / f"{asm}.fa.fai").is_file()
        assert not list(root.glob("*.part"))
    assert "human: " in (root / "genomes.yaml").read_text()
    assert "chimpanzee:" in capsys.readouterr().out
    # The mapping is usable as --data.genomes.
    dm = GreatApesDataModule(genomes, seq_len=100, split_fractions=(0.5, 0.25, 0.25), train_samples_per_epoch=4,
                             val_samples=2, test_samples=2, max_n_frac=0.5)
    dm.setup("fit")
    assert dm.class_names == ["human", "chimpanzee"]


def test_patched_opener_is_used_and_nothing_else_is_fetched(tmp_path):
    asked = []

    def opener(url):
        asked.append(url)
        return io.BytesIO(gzip.compress(fake_assembly("hg38")))

    root = tmp_path / "apes"
    root.mkdir()
    # panTro6 is already there (decompressed): only hg38 is fetched.
    (root / "panTro6.fa").write_bytes(fake_assembly("panTro6"))
    genomes = prepare_great_apes(root, assemblies=TWO, base_url="https://example.invalid/goldenPath", opener=opener)
    assert asked == ["https://example.invalid/goldenPath/hg38/bigZips/hg38.fa.gz"]
    assert set(genomes) == {"human", "chimpanzee"}


def test_offline_lists_exactly_what_is_missing(tmp_path):
    root = tmp_path / "apes"
    root.mkdir()
    (root / "hg38.fa.gz").write_bytes(gzip.compress(fake_assembly("hg38")))  # placed by hand, compressed
    with pytest.raises(FileNotFoundError) as info:
        prepare_great_apes(root, download=False)
    message = str(info.value)
    assert "4 of 5 genomes missing" in message
    for species, asm in list(GREAT_APES.items())[1:]:
        assert f"{species}: {root / (asm + '.fa')}" in message and assembly_url(asm) in message
    assert "human" not in message
    assert (root / "hg38.fa").read_bytes() == fake_assembly("hg38")  # the hand-placed file was prepared


def test_failed_download_falls_back_to_the_missing_report(tmp_path):
    def offline(url):
        raise OSError("network unreachable")

    with pytest.raises(FileNotFoundError, match="2 of 2 genomes missing"):
        prepare_great_apes(tmp_path, assemblies=TWO, opener=offline)
    assert not list(tmp_path.glob("*.part"))


def test_interrupted_download_and_truncated_gzip_leave_no_final_file(tmp_path):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise OSError("connection reset")
            return super().read(10)

    with pytest.raises(FileNotFoundError, match="human"):
        prepare_great_apes(tmp_path, assemblies={"human": "hg38"}, opener=lambda url: Broken(b"x" * 100))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "hg38.fa.gz").write_bytes(gzip.compress(fake_assembly("hg38"))[:60])
    with pytest.raises(ValueError, match="hg38.fa.gz is not a complete gzip file"):
        prepare_great_apes(tmp_path, assemblies={"human": "hg38"}, download=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hg38.fa.gz"]


def test_bad_file_is_reported_with_its_species(tmp_path):
    (tmp_path / "hg38.fa").write_text("not a fasta\n")
    (tmp_path / "panTro6.fa").write_bytes(fake_assembly("panTro6"))
    with pytest.raises(ValueError, match="species 'human' \\(hg38\\).*not a FASTA"):
        prepare_great_apes(tmp_path, assemblies=TWO, download=False)
