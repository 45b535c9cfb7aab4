#!/usr/bin/env bash
# The store the default model is trained and evaluated on: public records of ../shared/data,
# PTB-XL split by strat_fold (10 = test), the rest by patient hash.
# Usage: default-model-store.sh WORKDIR [PTBXL_DIR]
#   without PTBXL_DIR: WORKDIR/store-public, from ../shared/data alone (PTB-XL's whole test fold,
#     ids 501-1999 at 100 Hz and 550 records at 500 Hz): what CI and the bench baseline use;
#   with PTBXL_DIR (a PTB-XL download: records100/ and/or records500/, ptbxl_database.csv
#     optional): WORKDIR/store-full, every PTB-XL record found there instead of ../shared's 100 Hz
#     copies. Either way an ECG present at 500 and 100 Hz is stored once, at 500 Hz.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=$(cd "$here/../shared/data" && pwd)
ptbxl=${2:+$(cd "$2" && pwd)}
mkdir -p "$1"
cd "$1"

# PTB-XL copies inside the Challenge set get their PTB-XL patient, fold and ECG id, so that no ECG
# or patient of PTB-XL's test fold can reach training under another name, and no ECG counts twice.
python - "$data" <<'PY'
import csv, glob, os, sys
data = sys.argv[1]
rows = {int(r["ecg_id"]): r for r in csv.DictReader(open(f"{data}/ptb-xl/ptbxl_database.csv", encoding="utf-8"))}
folds = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}
with open("ptbxl-copies.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["record", "patient", "split", "ecg"])
    for header in sorted(glob.glob(f"{data}/challenge/cinc2021/HR*.hea")):
        ecg_id = int(os.path.basename(header)[2:-4])
        row = rows[ecg_id]
        writer.writerow([os.path.basename(header)[:-4], row["patient_id"].split(".")[0], folds[int(row["strat_fold"])], f"ptb-xl:{ecg_id}"])
PY

challenge=("$data/challenge/cinc2020-cpsc2018" "$data/challenge/chapman-shaoxing" "$data/challenge/cinc2021")
if [ -z "$ptbxl" ]; then
    ecgtool ingest "$data/ptb-xl/records500" "$data/ptb-xl/records100" "${challenge[@]}" \
        --metadata "$data/ptb-xl/ptbxl_database.csv" --metadata ptbxl-copies.csv --out store-public
else
    metadata="$ptbxl/ptbxl_database.csv"
    [ -f "$metadata" ] || metadata="$data/ptb-xl/ptbxl_database.csv"
    ecgtool ingest "$ptbxl" "$data/ptb-xl/records500" "${challenge[@]}" \
        --metadata "$metadata" --metadata ptbxl-copies.csv --out store-full
fi
