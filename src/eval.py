"""Evaluate one checkpoint (conf/eval.yaml), on ``split=val`` (default) or ``split=test``:

- ``python src/eval.py ckpt_path=PATH``: a training run's checkpoint, with the run's saved model and data
  configs (overrides on the command line apply on top);
- ``python src/eval.py model=maskrcnn model.checkpoint=PATH data=coco``: instead, any whole-model state dict
  for the model config given (ours, or torchvision's COCO detectors).
"""

import sys

import hydra
from omegaconf import DictConfig

import datnet.configs  # noqa: F401  (sets PROJECT_ROOT for conf/paths)
from datnet.runs.overrides import exit_on_unknown_keys
from datnet.runs.resolvers import register_resolvers
from datnet.runs.sweep import run_task
from datnet.runs.tasks import evaluate

register_resolvers()  # conf/hydra/default.yaml uses them


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict | None:
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    exit_on_unknown_keys("eval", sys.argv[1:])
    main()
