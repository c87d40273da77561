# Set-up and entry points. Every target that runs code depends on the install stamp,
# so `make test` or `make train` on a fresh clone creates .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test train eval predict browse ablation notebook lint clean

# `make train ARGS="model=heavy"` adds Hydra overrides; `make eval CKPT=path` evaluates another checkpoint.
ARGS ?=
CKPT ?= $(shell ls -td logs/train/runs/*/checkpoints/last.ckpt 2>/dev/null | head -n 1)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

train: $(STAMP)
	$(PY) src/train.py experiment=demo $(ARGS)

eval: $(STAMP)
	@test -n "$(CKPT)" || { echo "no checkpoint: run 'make train' first or pass CKPT=path"; exit 2; }
	$(PY) src/eval.py ckpt_path=$(CKPT) $(ARGS)

# `make predict [CKPT=path] [IMAGES="a.jpg dir/"]` draws a run's predictions into predictions/ (model, data and
# class names from that run's config), with COCO-format results; ARGS="--aux-maps" adds the DT/semantic maps.
IMAGES ?= data/shapes/val2017
predict: $(STAMP)
	@test -n "$(CKPT)" || { echo "no checkpoint: run 'make train' first or pass CKPT=path"; exit 2; }
	$(PY) scripts/predict.py --checkpoint $(CKPT) $(IMAGES) --coco-json --output-dir predictions $(ARGS)

# `make browse [DATA="data=coco data.root=/datasets/coco"] [ARGS="--num 16 --split val"]` draws augmented
# training samples with their instances and DT/semantic targets into browse/ (default: the shapes data).
DATA ?= experiment=demo
browse: $(STAMP)
	$(PY) scripts/browse_dataset.py $(DATA) --output-dir browse $(ARGS)

# The real-data ablation of docs/results.md (Tables 2-3 arms x 3 seeds on the ../shared/data sets, CPU, ~1.5 h);
# `make ablation ARGS="pennfudan"` runs one dataset.
ablation: $(STAMP)
	PYTHON=$(PY) scripts/paper/ablation.sh $(ARGS)

# Re-executes notebooks/datnet_demo.ipynb in place (150 CPU training steps) and stamps the fingerprint that
# tests/notebooks checks: run it after changing the notebook, the drawing code or the auxiliary targets.
notebook: $(STAMP)
	$(PY) scripts/run_notebook.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Removes only what can be rebuilt (the environment, tool caches, build metadata, the generated shapes set);
# checkpoints and logs (logs/, outputs/) and downloaded datasets stay.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data/shapes
	find . -path ./logs -prune -o -path ./outputs -prune -o -path ./.git -prune -o -path './.venv*' -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
