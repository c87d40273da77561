#!/usr/bin/env bash
# Builds .venv-device/: a Python 3.12 environment on this (CPU) machine that mimics the GPU machine's
# /opt/torch/.venv (Python 3.12.3, torch 2.11.0, torchvision 0.26.0, pytorch-lightning 2.6.6,
# torchmetrics 1.9.0, numpy 2.5.2, and scipy, opencv, matplotlib, rich, pyyaml, pillow, tensorboard, pandas
# as that image has them), so that scripts/gpu_check.sh can be dry-run here before spending device time.
#
# It deliberately holds NONE of the project's other dependencies (hydra-core, omegaconf, pycocotools,
# faster-coco-eval, albumentations and theirs): as on the GPU machine, those come only from the wheels of
# scripts/gpu/device_wheels.sh, installed with
# `pip install --no-index --no-deps --target /tmp/site .whl/*.whl` and put on PYTHONPATH after src/:
#
#   bash scripts/gpu/device_wheels.sh && bash scripts/gpu/device_venv.sh
#   python3.12 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl
#   PYTHONPATH=src:/tmp/site .venv-device/bin/python src/train.py experiment=demo \
#       trainer.fast_dev_run=true logger=csv
#
# torch comes from PyPI (the CUDA build with its nvidia-* wheels, a few GB: a CPU-only index is not
# reachable from here); it runs on the CPU all the same. Idempotent: a second run only checks the pins.
# PYTHON312 names the interpreter (default: python3.12 on PATH, else pyenv's 3.12.1).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-device
PYTHON312=${PYTHON312:-python3.12}
"$PYTHON312" -c '' 2>/dev/null || PYTHON312=/root/.pyenv/versions/3.12.1/bin/python3.12
# The GPU machine's versions where they are known (docs of the device tool, 2026-11); the rest unpinned.
PACKAGES=(
    torch==2.11.0 torchvision==0.26.0 pytorch-lightning==2.6.6 lightning torchmetrics==1.9.0 numpy==2.5.2
    scipy opencv-python-headless matplotlib rich pyyaml pillow tensorboard pandas packaging psutil
)

test -x "$VENV/bin/python" || "$PYTHON312" -m venv "$VENV"
# --isolated: this machine's pip config caps torch for .venv; it does not apply to this environment.
"$VENV/bin/python" -m pip install --isolated --quiet --disable-pip-version-check "${PACKAGES[@]}"

# The project's own dependencies must not be here, or the dry run would not test the wheels.
"$VENV/bin/python" - <<'EOF'
import importlib.util
import sys

import torch
import torchvision

present = [m for m in ("hydra", "omegaconf", "pycocotools", "faster_coco_eval", "albumentations", "pydantic")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f".venv-device must not hold {present}: they have to come from .whl")
print(f"{sys.executable}: Python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}")
EOF
