#!/usr/bin/env bash
# The store the default model is trained and evaluated on: public records of ../shared/data,
# PTB-XL split by strat_fold (10 = test), the rest by patient hash. Usage: default-model-store.sh WORKDIR
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=$(cd "$here/../shared/data" && pwd)
mkdir -p "$1"
cd "$1"

# PTB-XL copies inside the Challenge set get their PTB-XL patient and fold, so that no ECG or
# patient of PTB-XL's test fold can reach training under another name.
python - "$data" <<'PY'
import csv, glob, os, sys
data = sys.argv[1]
rows = {int(r["ecg_id"]): r for r in csv.DictReader(open(f"{data}/ptb-xl/ptbxl_database.csv", encoding="utf-8"))}
folds = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}
with open("ptbxl-copies.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["record", "patient", "split"])
    for header in sorted(glob.glob(f"{data}/challenge/cinc2021/HR*.hea")):
        row = rows[int(os.path.basename(header)[2:-4])]
        writer.writerow([os.path.basename(header)[:-4], row["patient_id"].split(".")[0], folds[int(row["strat_fold"])]])
PY

ecgtool ingest "$data/ptb-xl/records500" "$data/ptb-xl/records100" \
    "$data/challenge/cinc2020-cpsc2018" "$data/challenge/chapman-shaoxing" "$data/challenge/cinc2021" \
    --metadata "$data/ptb-xl/ptbxl_database.csv" --metadata ptbxl-copies.csv --out store-public
