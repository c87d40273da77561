#!/usr/bin/env bash
# The GPU check in one command, on a GPU machine's own Python and torch (scripts/gpu/gpu_check.py says what
# it measures; docs/tools.md "Checking a GPU machine" how to read the report). Real COCO batches come from
# $DATNET_SHARED_DATA/tiny_coco (default ../shared/data beside the repository). The device tool sends the
# repository only, not ../shared: copy the set into the ignored .device_data/ first and carry it (18 MB),
#   mkdir -p .device_data && cp -r ../shared/data/tiny_coco .device_data/
#   run(command="DATNET_SHARED_DATA=.device_data bash scripts/gpu_check.sh", carry=[".whl", ".device_data"])
#
#   bash scripts/gpu_check.sh [gpu_check.py options]     # e.g. --deadline 540, --parts coco_step coco_compile
#
# The project's packages that such a machine lacks travel as wheels in .whl/ (scripts/gpu/device_wheels.sh
# makes them here): they are installed with --no-deps into a temporary site, never over the machine's own
# packages, and put on PYTHONPATH after src/. Where the Python in use already has them (this project's .venv),
# nothing is installed. The report goes to $OUT/gpu_check.json and every part's output to $OUT/gpu_check.log
# ($OUT: the device tool's output folder; the current directory elsewhere). Exit status: 0 when no part
# failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${DATNET_DEVICE_SITE:-/tmp/datnet_device_site}
REPORT_DIR=${OUT:-.}
if ! $PY -c "import hydra, omegaconf, pycocotools, faster_coco_eval, albumentations" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_check: packages missing and no .whl/: run scripts/gpu/device_wheels.sh" >&2; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec $PY scripts/gpu/gpu_check.py --out "$REPORT_DIR/gpu_check.json" --log "$REPORT_DIR/gpu_check.log" "$@"
