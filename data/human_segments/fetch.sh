#!/usr/bin/env bash
# Six megabases of real human DNA for the quality anchor of the DNA recipe
# (benchmarks/dna_quality.py): three 2 Mb segments of human chromosomes 3, 4 and 5 from the
# AUGUSTUS tutorial data in Debian's augustus-doc package (Artistic License; the reference
# sequence itself is public data). Writes, in this folder (git-ignored):
#   segments.fa   chr3:42000000-44000000, chr4:103000000-105000000, chr5:124000000-126000000
#   segments.bed  131,072 bp intervals: chr3 + chr4 train, first half of chr5 valid, second half test
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download augustus-doc >/dev/null 2>&1 && dpkg-deb -x augustus-doc_*.deb out)
src="$work/out/usr/share/doc/augustus/tutorial/data"
out="$here/segments.fa"
: > "$out.tmp"
for part in chr3.42M chr4.103M chr5.124M; do
    # header ">chr3 42000000 44000000" -> ">chr3:42000000-44000000"
    sed -E '1s/^>(\S+) ([0-9]+) ([0-9]+).*/>\1:\2-\3/' "$src/$part.fa" >> "$out.tmp"
done
mv "$out.tmp" "$out"
python3 - "$out" "$here/segments.bed" <<'PY'
import sys
fa, bed = sys.argv[1], sys.argv[2]
lengths, name = {}, None
for line in open(fa):
    if line.startswith(">"):
        name = line[1:].split()[0]
        lengths[name] = 0
    else:
        lengths[name] += len(line.strip())
step = 131072
with open(bed + ".tmp", "w") as f:
    for name, length in lengths.items():
        n = length // step
        for k in range(n):
            if name.startswith("chr5"):
                split = "valid" if k < n // 2 else "test"
            else:
                split = "train"
            f.write(f"{name}\t{k * step}\t{(k + 1) * step}\t{split}\n")
import os
os.replace(bed + ".tmp", bed)
print({k: v for k, v in lengths.items()})
PY
echo "wrote $out and $here/segments.bed"
