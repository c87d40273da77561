"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=PATH [experiment=demo] [split=val|test]``"""

import hydra
from omegaconf import DictConfig

import datnet.configs  # noqa: F401  (sets PROJECT_ROOT for conf/paths)
from datnet.training.run import evaluate
from datnet.training.sweep import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict | None:
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
