"""``seed=N`` changes the data order as well as the initialisation and augmentation: ``data.seed`` follows the
run's seed unless set (``data.seed=K`` keeps one order across seeds); ``experiment=demo`` pins it to the order
of its published numbers."""

import pytest
from hydra.utils import instantiate

from datnet.configs import compose_config


def first_batches(cfg, count: int = 3) -> list[list[int]]:
    """The image ids of the first ``count`` training batches of ``cfg``'s data module."""
    datamodule = instantiate(cfg.data)
    loader = iter(datamodule.train_dataloader())
    return [[target["image_id"] for target in next(loader)[1]] for _ in range(count)]


def test_the_run_seed_changes_the_data_order_unless_data_seed_is_set(shapes_overrides):
    small = [*shapes_overrides, "data.num_workers=0", "data.min_size=96", "data.max_size=128"]
    orders = {
        overrides: first_batches(compose_config([*small, *overrides], "train"))
        for overrides in (("seed=1",), ("seed=2",), ("data.seed=0", "seed=1"), ("data.seed=0", "seed=2"))
    }
    assert orders[("seed=1",)] != orders[("seed=2",)]
    assert orders[("data.seed=0", "seed=1")] == orders[("data.seed=0", "seed=2")]


@pytest.mark.parametrize("data", ["coco", "voc", "voc_instseg", "pennfudan", "shapes"])
def test_every_data_config_follows_the_run_seed(data):
    assert compose_config([f"data={data}", "seed=7"], "train").data.seed == 7
    assert compose_config([f"data={data}", "seed=7", "data.seed=3"], "train").data.seed == 3


def test_the_demo_keeps_the_data_order_of_its_published_numbers_and_the_ablation_varies_it():
    demo = compose_config(["experiment=demo"], "train")
    assert (demo.seed, demo.data.seed) == (42, 0)
    ablation = compose_config(["experiment=ablation/pennfudan", "seed=2"], "train")
    assert ablation.data.seed == 2
