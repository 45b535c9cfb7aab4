#!/usr/bin/env bash
# The recipe ablation of docs/default-model.md: short `ecgtool train` runs on one store, each
# adding one option, compared on the val split (macro AUROC over findings with >= 10 positives,
# per-label top-1/top-5, per language). Every run uses the fixed 40 Hz band-limit of the default model.
# Usage: ablate-recipe.sh STORE OUTDIR [EPOCHS] [MAX_RECORDS]
#   v3's ablation: the full store (MAX_RECORDS unset), 8 epochs each, bf16 autocast.
set -euo pipefail
store=$1; out=$2; epochs=${3:-8}; records=${4:-}
mkdir -p "$out"
common=(--store "$store" --epochs "$epochs" --input-lowpass-hz 40 --input-decimation 5 --lang both
        --label-prompt-prob 0.5 --mask-implied-texts --select-by val_macro_auroc --precision bf16 --checkpoint-every-steps 200)
[ -n "$records" ] && common+=(--max-records "$records")
regularised="--ema-decay 0.999 --schedule cosine --warmup-steps 500 --augment"
declare -A runs=(
    [a-v2-recipe]=""
    [b-multipositive]="--label-loss-weight 1.0"
    [c-multipositive-regularised]="--label-loss-weight 1.0 $regularised"
    [d-supervised]="--objective supervised $regularised"
)
for name in $(printf '%s\n' "${!runs[@]}" | sort); do
    [ -f "$out/$name/metrics.jsonl" ] && [ "$(wc -l < "$out/$name/metrics.jsonl")" -ge "$epochs" ] && continue
    resume=(); [ -f "$out/$name/checkpoints/last.pt" ] && resume=(--resume)
    echo "${runs[$name]}" > "$out/$name.options"
    # shellcheck disable=SC2086
    ecgtool train "${common[@]}" ${runs[$name]} --out "$out/$name" "${resume[@]}" > "$out/$name.log" 2>&1
done
python - "$out" "$epochs" <<'PY'
import json, pathlib, sys
out, epochs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
print("| run | options | val AUROC ja | val AUROC en | val top-1 ja | val top-1 en | val top-5 ja | val top-5 en |")
print("|---|---|---|---|---|---|---|---|")
for run in sorted(p for p in out.iterdir() if p.is_dir()):
    options_file = out / f"{run.name}.options"
    options = f"`{options_file.read_text().strip()}`" if options_file.exists() else ""
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    cell = lambda key, scale=1: f"{scale * last[key]:.3f}" if key in last else "–"
    pct = lambda key: f"{last[key]:.1f}" if key in last else "–"
    print(f"| {run.name} | {options} | {cell('val_macro_auroc_ja')} | {cell('val_macro_auroc_en')} | {pct('val_top1_ja')} | {pct('val_top1_en')} | {pct('val_top5_ja')} | {pct('val_top5_en')} |")
PY
