"""Train DATNet: ``python src/train.py [experiment=demo] [model=heavy] [data=coco] [trainer.devices=8]``"""

import sys

import hydra
from omegaconf import DictConfig

import datnet.configs  # noqa: F401  (sets PROJECT_ROOT for conf/paths)
from datnet.runs.overrides import exit_on_unknown_keys
from datnet.runs.resolvers import register_resolvers
from datnet.runs.sweep import run_task
from datnet.runs.tasks import train

register_resolvers()  # conf/hydra/default.yaml uses them


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    exit_on_unknown_keys("train", sys.argv[1:])
    main()
