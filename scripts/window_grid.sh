#!/usr/bin/env bash
# The stage-1 window grid on dev (issue 20, item 1; docs/results.md "The window grid"): the
# context-window stage-1 preset of DATASET, seed 0, one thread, with other past / future
# windows and token budgets.  Each cell is P:F:TOKENS; finished cells are skipped, killed ones
# resumed, so the script can be rerun after a kill.
#   scripts/window_grid.sh iemocap "0:0:96 2:1:128 4:2:256" [RUNS_DIR]
set -euo pipefail
ds=$1
runs=${3:-runs}/window-grid
iein=${IEIN:-.venv/bin/iein}
mkdir -p "$runs"
for cell in $2; do
  IFS=: read -r p f tok <<< "$cell"
  out=$runs/$ds-p${p}f${f}-t$tok-seed0.safetensors
  [ -f "$out" ] && continue
  resume=()
  [ -f "${out%.safetensors}.resume.pt" ] && resume=(--resume)
  "$iein" train --dataset "$ds" --data-dir "../shared/data/$ds" --preset "$ds-minilm-ctx-stage1" \
    --set encoder.window_past="$p" --set encoder.window_future="$f" --set encoder.max_tokens="$tok" \
    --seed 0 --threads 1 "${resume[@]}" --out "$out" >> "${out%.safetensors}.log" 2>&1
done
