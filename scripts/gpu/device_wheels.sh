#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with exactly the wheels this project needs on the GPU machine beyond what that
# machine already has, for CPython 3.12 on manylinux x86_64.
#
# Why: the GPU machine lent by the device tool runs its own Python 3.12.3 (/opt/torch/.venv: torch 2.11.0,
# torchvision 0.26.0, pytorch-lightning 2.6.6, torchmetrics 1.9.0, numpy, scipy, opencv-python-headless,
# pyyaml, packaging, ...) and has no network. It lacks hydra-core, omegaconf (+ antlr4-python3-runtime),
# pycocotools, faster-coco-eval and albumentations (+ albucore, pydantic, pydantic-core, annotated-types,
# typing-inspection, stringzilla, simsimd). typing-extensions is shipped too: pydantic 2.14 needs >= 4.16.0,
# the GPU machine's version is unknown, and 4.16.0 is the newest release, so shadowing it downgrades nothing.
# wandb and submitit (+ hydra-submitit-launcher) are left out: only the wandb logger and the SLURM launcher
# import them, never `src/train.py experiment=demo logger=csv` or `src/eval.py`.
#
# How it is used: .whl/ travels with the working tree (`carry: [".whl"]`; the tree is capped at 64 MiB, so
# this script fails above LIMIT_MIB, default 40), and scripts/gpu_check.sh starts on the GPU machine with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl
#   export PYTHONPATH=src:/tmp/site
# To dry-run that here, scripts/gpu/device_venv.sh builds .venv-device/, a Python 3.12 copy of the GPU
# machine's environment without these packages.
#
# What it does: downloads the pinned wheels (the versions .venv has) that are not in .whl/ yet, builds
# antlr4-python3-runtime (an sdist only) into a wheel, removes any other file from .whl/, prints its list
# and size, fails above the size limit, then installs all of them together with `--no-index --no-deps
# --target` into a temporary folder and imports hydra, omegaconf, pycocotools, faster_coco_eval,
# albumentations and pydantic from it with .venv-device's Python (skipped, saying so, when .venv-device has
# not been built). Idempotent: a second run downloads nothing.
#
#   bash scripts/gpu/device_wheels.sh            # LIMIT_MIB=40 PYTHON312=python3.12 by default
set -euo pipefail
cd "$(dirname "$0")/../.."

WHL=.whl
LIMIT_MIB=${LIMIT_MIB:-40}
DEVICE_PYTHON=.venv-device/bin/python
PYTHON312=${PYTHON312:-python3.12}
"$PYTHON312" -c '' 2>/dev/null || PYTHON312=/root/.pyenv/versions/3.12.1/bin/python3.12

# Pinned to .venv's versions. Binary wheels for cp312 / manylinux x86_64:
BINARY=(
    hydra-core==1.3.8 omegaconf==2.3.1 pycocotools==2.0.11 faster-coco-eval==1.8.0
    albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
    typing-inspection==0.4.5 typing-extensions==4.16.0 stringzilla==5.3.2 simsimd==6.5.16
)
# Published as an sdist only: built here into a (pure-Python) wheel.
SDIST=(antlr4-python3-runtime==4.9.3)

# The file-name prefix of a wheel for NAME==VERSION (names are normalised to lower case with underscores).
prefix() {
    local name=${1%%==*} version=${1##*==}
    name=${name//-/_}
    echo "${name,,}-${version}-"
}

mkdir -p "$WHL"
shopt -s nullglob
wanted=()
missing_binary=()
for spec in "${BINARY[@]}" "${SDIST[@]}"; do
    wanted+=("$(prefix "$spec")")
done
for spec in "${BINARY[@]}"; do
    matches=("$WHL/$(prefix "$spec")"*.whl)
    ((${#matches[@]})) || missing_binary+=("$spec")
done

if ((${#missing_binary[@]})); then
    # --isolated: this machine's pip config (a cap on torch for .venv) has no business here.
    "$PYTHON312" -m pip download --isolated --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "${missing_binary[@]}"
fi
for spec in "${SDIST[@]}"; do
    matches=("$WHL/$(prefix "$spec")"*.whl)
    ((${#matches[@]})) || "$PYTHON312" -m pip wheel --isolated --quiet --disable-pip-version-check \
        --no-deps --no-binary=:all: -w "$WHL" "$spec"
done

# Exactly these wheels, one version of each (two versions of a package stop the whole install there).
for file in "$WHL"/*; do
    keep=0
    for p in "${wanted[@]}"; do
        [[ $(basename "$file") == "$p"*.whl ]] && keep=1
    done
    if ((!keep)); then
        echo "removing $file: not one of the pinned wheels"
        rm -rf "$file"
    fi
done

files=("$WHL"/*.whl)
if ((${#files[@]} != ${#wanted[@]})); then
    echo "expected ${#wanted[@]} wheels in $WHL, found ${#files[@]}" >&2
    exit 1
fi
ls -l "$WHL"
bytes=$(cat "${files[@]}" | wc -c)
echo "$WHL: ${#files[@]} wheels, $((bytes / 1024)) KiB (limit ${LIMIT_MIB} MiB)"
if ((bytes > LIMIT_MIB * 1024 * 1024)); then
    echo "$WHL is over ${LIMIT_MIB} MiB: the working tree sent to the GPU machine is capped at 64 MiB" >&2
    exit 1
fi

# Install them together, as the GPU machine will, and import them.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$PYTHON312" -m pip install --isolated --quiet --disable-pip-version-check --root-user-action=ignore --no-index \
    --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${files[@]}"
echo "installed together with --no-index --no-deps --target"
if [[ ! -x $DEVICE_PYTHON ]]; then
    echo "import check skipped: $DEVICE_PYTHON is missing (bash scripts/gpu/device_venv.sh builds it)"
    exit 0
fi
PYTHONPATH="src:$site" "$DEVICE_PYTHON" -c '
import sys

import albumentations
import faster_coco_eval
import hydra
import omegaconf
import pycocotools.mask
import pydantic

print(f"Python {sys.version.split()[0]} imports hydra {hydra.__version__}, omegaconf {omegaconf.__version__}, "
      f"pycocotools, faster_coco_eval {faster_coco_eval.__version__}, "
      f"albumentations {albumentations.__version__}, pydantic {pydantic.VERSION}")
'
