#!/usr/bin/env bash
# Regenerate data/audio/sc09_sample: the digits zero..nine spoken by four espeak-ng voices,
# laid out like Speech Commands (one folder per word, validation_list.txt, testing_list.txt).
#   apt-get install espeak-ng          # Debian/Ubuntu; version 1.51 made the committed files
#   scripts/run bash data/audio/make_sc09_sample.sh
# Voices en-us and en+f3 form the training split, en-gb-x-rp+m3 validation, en-029+f2 test.
# espeak-ng writes 22.05 kHz 16-bit WAV; seqmodels.data.audio resamples to 16 kHz, keeps at most
# one second and writes 16-bit PCM.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/sc09_sample"
python="${PYTHON:-python}"
command -v espeak-ng >/dev/null || { echo "espeak-ng not found: apt-get install espeak-ng" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
digits="zero one two three four five six seven eight nine"
voices="en-us en+f3 en-gb-x-rp+m3 en-029+f2"
for voice in $voices; do
    for digit in $digits; do
        mkdir -p "$tmp/$digit"
        # Speaker ids stand in for Speech Commands' hashed speaker ids: <speaker>_nohash_<n>.wav
        espeak-ng -v "$voice" -w "$tmp/$digit/espeak-${voice//+/-}_nohash_0.wav" "$digit"
    done
done
rm -rf "$out.new"
"$python" - "$tmp" "$out.new" <<'PY'
import sys
from pathlib import Path

from seqmodels.data.audio import SAMPLE_RATE, read_wav, write_wav

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for wav in sorted(src.glob("*/*.wav")):
    wave = read_wav(wav)[:SAMPLE_RATE]  # resampled 22.05 -> 16 kHz, at most one second
    write_wav(dst / wav.parent.name / wav.name, wave)
PY
(cd "$out.new" && ls */*en-gb-x-rp-m3_* | sort > validation_list.txt && ls */*en-029-f2_* | sort > testing_list.txt)
rm -rf "$out"
mv "$out.new" "$out"
echo "wrote $(find "$out" -name '*.wav' | wc -l) clips to $out ($(du -sh "$out" | cut -f1))"
