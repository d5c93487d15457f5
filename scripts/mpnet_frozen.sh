#!/usr/bin/env bash
# Frozen all-mpnet-base-v2 under IEIN (issue 20, docs/results.md "MPNet, frozen"): the last
# hidden state against a learned mix of the last 4 (`encoder.layers=4`), u projected to 128-d
# (`utterance_proj=128`, as the context-window presets), seeds 0-2, one thread.  The vectors
# are cached on the first seed; finished runs are skipped and killed ones resumed.
#   [SEEDS="3 4"] [MODEL=minilm] scripts/mpnet_frozen.sh [RUNS_DIR] [DATASETS] [LAYERS]
# MODEL (default mpnet) runs the same grid on another packaged encoder; VARIANT (no_label or
# gold_label) trains that IEIN variant instead of the paper's model, named -nolabel / -goldlabel.
# SET="model.detach_feedback=true ..." TAG=-detach add --set overrides, named by TAG.
set -euo pipefail
runs=${1:-runs}
datasets=${2:-iemocap meld}
layer_settings=${3:-1 4}
iein=${IEIN:-.venv/bin/iein}
model=${MODEL:-mpnet}
variant=${VARIANT:-iein}
case $variant in
  iein) vtag=""; vset=() ;;
  no_label) vtag="-nolabel"; vset=(--set model.variant=no_label) ;;
  gold_label) vtag="-goldlabel"; vset=(--set model.variant=gold_label) ;;
  *) echo "unknown variant $variant" >&2; exit 2 ;;
esac
extra=()
for kv in ${SET:-}; do extra+=(--set "$kv"); done
vtag=$vtag${TAG:-}
for ds in $datasets; do
  case $ds in
    meld) preset=(--preset meld --encoder transformer) ;;
    iemocap) preset=(--preset iemocap-minilm) ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  for layers in $layer_settings; do
    for seed in ${SEEDS:-0 1 2}; do
      out=$runs/$ds-$model-l$layers-proj128$vtag-seed$seed.safetensors
      [ -f "$out" ] && continue
      resume=()
      [ -f "${out%.safetensors}.resume.pt" ] && resume=(--resume)
      "$iein" train --dataset "$ds" --data-dir "../shared/data/$ds" "${preset[@]}" --set encoder.model="$model" \
        --set encoder.layers="$layers" --set model.utterance_proj=128 "${vset[@]}" "${extra[@]}" --seed "$seed" --threads 1 "${resume[@]}" \
        --out "$out" > "${out%.safetensors}.log" 2>&1
    done
  done
done
