#!/usr/bin/env bash
# The ensemble candidates of docs/results.md ("Ensembles across encoders"), chosen on dev by
# scripts/choose_ensemble.py, test read for the dev winner only.
#   scripts/ensembles.sh meld|iemocap [RUNS_DIR]
set -euo pipefail
ds=$1
runs=${2:-runs}
ctx="$runs/$ds-minilm-ctx-proj128-seed[0-2].safetensors,$runs/$ds-minilm-ctx-s1seed[1-4]-proj128-seed[0-2].safetensors"
ctxnl="$runs/$ds-minilm-ctx-nolabel-seed[0-2].safetensors,$runs/$ds-minilm-ctx-s1seed[1-4]-nolabel-seed[0-2].safetensors"
extra=()
[ "$ds" = iemocap ] && extra=(--candidate "ctx-nolabel-s1seed0=$runs/$ds-minilm-ctx-nolabel-seed[0-2].safetensors")
${PYTHON:-.venv/bin/python} scripts/choose_ensemble.py --dataset "$ds" --data-dir "../shared/data/$ds" \
  --candidate "mpnet=$runs/$ds-mpnet-l4-proj128-seed[0-4].safetensors" \
  --candidate "mpnet-nolabel=$runs/$ds-mpnet-l4-proj128-nolabel-seed[0-4].safetensors" \
  --candidate "ctx=$ctx" --candidate "ctx-nolabel=$ctxnl" "${extra[@]}" \
  --candidate "mpnet+ctx=mpnet+ctx" --candidate "nolabel-both=mpnet-nolabel+ctx-nolabel" \
  --candidate "all=mpnet+mpnet-nolabel+ctx+ctx-nolabel" --out "docs/results/ensembles-$ds.json"
