#!/usr/bin/env bash
# Stage 2 of the context-window recipe (issue 20, docs/results.md): IEIN, IEIN with a
# learned 128-d projection of u, and No Label on the frozen vectors of a stage-1 model,
# seeds 0-2, one thread.  Waits for the stage-1 file; finished runs are skipped and killed
# ones resumed, so the script can be rerun after a kill.
#   scripts/ctx_stage2.sh meld|iemocap [RUNS_DIR] [STAGE1_SEED] [VARIANTS]
# e.g. scripts/ctx_stage2.sh meld runs 1 proj128   (the stage-2 seeds of stage-1 seed 1)
# STAGE1=<file> TAG=<name part> use another stage-1 model, e.g. a longer one:
#   STAGE1=runs/iemocap-minilm-ctx-stage1e8-seed0.safetensors TAG=-s1e8 scripts/ctx_stage2.sh iemocap
set -euo pipefail
ds=$1
runs=${2:-runs}
s1=${3:-0}
variants=${4:-iein proj128 nolabel}
stage1=${STAGE1:-$runs/$ds-minilm-ctx-stage1-seed$s1.safetensors}
tag=${TAG-$([ "$s1" = 0 ] && echo "" || echo "-s1seed$s1")}
iein=${IEIN:-.venv/bin/iein}
while [ ! -f "$stage1" ]; do sleep 30; done
for seed in 0 1 2; do
  for v in $variants; do
    out=$runs/$ds-minilm-ctx$tag-$v-seed$seed.safetensors
    [ -f "$out" ] && continue
    case $v in
      iein) extra=() ;;
      proj128) extra=(--set model.utterance_proj=128) ;;
      nolabel) extra=(--set model.variant=no_label) ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    resume=()
    [ -f "${out%.safetensors}.resume.pt" ] && resume=(--resume)
    "$iein" train --dataset "$ds" --data-dir "../shared/data/$ds" --preset "$ds" --encoder-from "$stage1" \
      --seed "$seed" --threads 1 "${extra[@]}" "${resume[@]}" --out "$out" > "${out%.safetensors}.log" 2>&1
  done
done
