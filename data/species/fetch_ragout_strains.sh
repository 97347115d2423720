#!/usr/bin/env bash
# Extract the five complete Staphylococcus aureus strain genomes (and the five Helicobacter
# pylori strains) from the Debian package ragout-examples into data/species/full/
# (git-ignored), decompressed, for the context-length experiments.
#   data/species/fetch_ragout_strains.sh            # needs apt-get download (network to Debian)
#   data/species/fetch_ragout_strains.sh PKG.deb    # or a .deb you already have
# Prints the genomes mapping to pass as --data.genomes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/full"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
    deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
    (cd "$work" && apt-get download ragout-examples >/dev/null)
    deb=$(ls "$work"/ragout-examples_*.deb)
fi
dpkg-deb -x "$deb" "$work/pkg"
examples="$work/pkg/usr/share/doc/ragout/examples"
mkdir -p "$out/aureus" "$out/pylori"
for strain in COL JKD6008 N315 RF122 USA300_FPR3757; do
    gunzip -c "$examples/S.Aureus/references/$strain.fasta.gz" > "$out/aureus/$strain.fa.part"
    mv "$out/aureus/$strain.fa.part" "$out/aureus/$strain.fa"
done
for strain in ELS37 G27 Gambia94_24 Puno120 SJM180; do
    gunzip -c "$examples/H.Pylori/references/$strain.fasta.gz" > "$out/pylori/$strain.fa.part"
    mv "$out/pylori/$strain.fa.part" "$out/pylori/$strain.fa"
done
ls -l "$out"/aureus "$out"/pylori
echo "genomes (S. aureus):"
for f in "$out"/aureus/*.fa; do echo "  $(basename "$f" .fa): $f"; done
