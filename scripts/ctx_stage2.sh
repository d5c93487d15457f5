#!/usr/bin/env bash
# Stage 2 of the context-window recipe (issue 20, docs/results.md): IEIN, IEIN with a
# learned 128-d projection of u, and No Label on the frozen vectors of a stage-1 model,
# seeds 0-2, one thread.  Waits for the stage-1 file; finished runs are skipped, so the
# script can be rerun after a kill.  Usage: scripts/ctx_stage2.sh meld|iemocap [RUNS_DIR]
set -euo pipefail
ds=$1
runs=${2:-runs}
stage1=$runs/$ds-minilm-ctx-stage1-seed0.safetensors
iein=${IEIN:-.venv/bin/iein}
while [ ! -f "$stage1" ]; do sleep 30; done
for seed in 0 1 2; do
  for v in iein proj128 nolabel; do
    out=$runs/$ds-minilm-ctx-$v-seed$seed.safetensors
    [ -f "$out" ] && continue
    case $v in
      iein) extra=() ;;
      proj128) extra=(--set model.utterance_proj=128) ;;
      nolabel) extra=(--set model.variant=no_label) ;;
    esac
    resume=()
    [ -f "$runs/$ds-minilm-ctx-$v-seed$seed.resume.pt" ] && resume=(--resume)
    "$iein" train --dataset "$ds" --data-dir "../shared/data/$ds" --preset "$ds" --encoder-from "$stage1" \
      --seed "$seed" --threads 1 "${extra[@]}" "${resume[@]}" --out "$out" > "${out%.safetensors}.log" 2>&1
  done
done
