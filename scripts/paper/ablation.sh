#!/usr/bin/env bash
# The real-data ablation in miniature (docs/results.md) in one command: for each dataset, a Hydra multirun
# over the arms of Table 2 (auxiliary heads) and Table 3 (pooler x box head) and the seeds, with the same
# budget for every job (conf/experiment/ablation/<dataset>.yaml), then the report (mean, spread, paired
# differences to Mask R-CNN beside the paper's).
#
#   scripts/paper/ablation.sh                         # pennfudan tiny_coco bccd, 3 seeds each
#   scripts/paper/ablation.sh pennfudan               # one dataset
#   SEEDS=0,1,2,3,4 OUT=logs/ablation5 scripts/paper/ablation.sh tiny_coco
#   ARMS=maskrcnn,dt_seg scripts/paper/ablation.sh bccd trainer.max_steps=200   # extra args: Hydra overrides
#
# Datasets come from ../shared/data (or $DATNET_SHARED_DATA). Every job's METRICS are in
# $OUT/<dataset>/<job>/metrics.json; the sweep's own summary in $OUT/<dataset>/summary.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-logs/ablation}
TABLE2=maskrcnn,dt,seg,dt_seg
TABLE3=mspwa_2fc,fpn_res5,mspwa_res5
DATASETS=(pennfudan tiny_coco bccd)
OVERRIDES=()
if [[ $# -gt 0 ]]; then
  DATASETS=()
  for arg in "$@"; do
    if [[ $arg == *=* ]]; then OVERRIDES+=("$arg"); else DATASETS+=("$arg"); fi
  done
  [[ ${#DATASETS[@]} -eq 0 ]] && DATASETS=(pennfudan tiny_coco bccd)
fi

status=0
for dataset in "${DATASETS[@]}"; do
  "$PYTHON" src/train.py -m "experiment=ablation/$dataset" "ablation=${ARMS:-$TABLE2,$TABLE3}" "seed=$SEEDS" \
    "hydra.sweep.dir=$OUT/$dataset" "${OVERRIDES[@]}" || status=1
done
"$PYTHON" scripts/paper/ablation_report.py "$OUT" --output "$OUT/results.md" || status=1
exit $status
