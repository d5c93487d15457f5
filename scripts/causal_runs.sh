#!/usr/bin/env bash
# Causal (live) against offline models (issue 26, docs/results.md "Live models"): the live
# presets and the causal baselines, seeds 0-2, one thread; the offline rows are the reproduction's
# runs of the same presets and seeds (docs/results/runs.jsonl).  Finished runs are skipped,
# killed ones resumed, so the script can be rerun after a kill.
#   scripts/causal_runs.sh [RUNS_DIR]
set -euo pipefail
runs=${1:-runs/live}
iein=${IEIN:-.venv/bin/iein}
mkdir -p "$runs"
train() {  # name dataset args...
  local out=$runs/$1.safetensors ds=$2; shift 2
  [ -f "$out" ] && return 0
  local resume=()
  [ -f "${out%.safetensors}.resume.pt" ] && resume=(--resume)
  "$iein" train --dataset "$ds" --data-dir "../shared/data/$ds" --threads 1 "$@" "${resume[@]}" --out "$out" \
    > "${out%.safetensors}.log" 2>&1
}
for seed in 0 1 2; do
  for ds in meld iemocap; do
    train "$ds-live-seed$seed" "$ds" --preset "$ds-live" --seed "$seed"
  done
done
for seed in 0 1 2; do
  for ds in meld iemocap; do
    train "$ds-clstm-causal-seed$seed" "$ds" --preset "$ds-clstm" --set causal=true --seed "$seed"
  done
done
for seed in 0 1 2; do  # frozen MiniLM vectors (cached), IEIN reading forward only
  train "iemocap-minilm-live-seed$seed" iemocap --preset iemocap-minilm-live --seed "$seed"
done
for seed in 0 1 2; do  # the other baselines; DialogueRNN/DialogueGCN share their stage-1 CNN per seed
  for ds in meld iemocap; do
    for arch in clstm_crf dialoguernn dialoguegcn; do
      train "$ds-$arch-causal-seed$seed" "$ds" --preset "$ds-$arch" --set causal=true --seed "$seed"
    done
  done
done
