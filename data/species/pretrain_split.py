"""One FASTA and a BED of train / valid / test intervals over a folder of strain genomes, for
next-base pretraining on exactly the regions the species classifier trains on.

    python data/species/pretrain_split.py data/species/full/pylori data/species/full/pylori_lm
    seqmodels fit --config configs/dna/hg38_1.4m.yaml --data.fasta data/species/full/pylori_lm/genomes.fa \\
        --data.bed data/species/full/pylori_lm/regions.bed ...

Every sequence of every ``*.fa`` in the folder is cut like ``--data.split_fractions '[0.8, 0.1,
0.1]'`` cuts it (train, val, test in that order, boundaries rounded), and each region is tiled
with whole intervals of ``--interval`` bases (the remainder at a region's end is left out, so no
window of the pretraining data crosses into a held-out region). Records are renamed
``<file stem>__<record name>`` so that names stay unique across strains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from Bio import SeqIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("genome_dir", type=Path, help="folder of *.fa genomes (one class each)")
    parser.add_argument("out_dir", type=Path, help="writes genomes.fa and regions.bed here")
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1))
    parser.add_argument("--interval", type=int, default=32768, help="bases per BED interval")
    args = parser.parse_args()
    genomes = sorted(args.genome_dir.glob("*.fa"))
    if not genomes:
        raise SystemExit(f"{args.genome_dir}: no *.fa files")
    f_train, f_val, _ = args.fractions
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(args.out_dir / "genomes.fa", "w") as fa:
        for path in genomes:
            for record in SeqIO.parse(path, "fasta"):
                name = f"{path.stem}__{record.id.replace('|', '_')}"
                seq = str(record.seq)
                fa.write(f">{name}\n")
                for i in range(0, len(seq), 80):
                    fa.write(seq[i : i + 80] + "\n")
                n = len(seq)
                b1, b2 = round(n * f_train), round(n * (f_train + f_val))
                for split, lo, hi in (("train", 0, b1), ("valid", b1, b2), ("test", b2, n)):
                    for start in range(lo, hi - args.interval + 1, args.interval):
                        rows.append(f"{name}\t{start}\t{start + args.interval}\t{split}\n")
    (args.out_dir / "regions.bed").write_text("".join(rows))
    counts = {s: sum(r.endswith(f"\t{s}\n") for r in rows) for s in ("train", "valid", "test")}
    print(f"wrote {args.out_dir / 'genomes.fa'} ({len(genomes)} genomes) and regions.bed {counts}")


if __name__ == "__main__":
    main()
