"""An unknown key on the command line is named with the closest existing keys before Hydra runs (issue 21)."""

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from datnet.configs import CONF_DIR, compose_config
from datnet.runs.overrides import UnknownKeyError, check_override_keys, exit_on_unknown_keys, override_args


def test_mistyped_key_suggests_the_existing_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        exit_on_unknown_keys("train", ["model.aux.dtt=true"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unknown config key 'model.aux.dtt'" in error and "did you mean model.aux.dt" in error


def test_every_unknown_key_is_named_across_sweeps_and_groups() -> None:
    with pytest.raises(UnknownKeyError) as error:
        check_override_keys(CONF_DIR, "train", ["-m", "model=light,heavy", "trainer.devicess=2", "seed=0,1"])
    assert "trainer.devicess" in str(error.value) and "did you mean trainer.devices" in str(error.value)


@pytest.mark.parametrize(
    ("config_name", "argv"),
    [
        ("train", ["model=heavy", "data=coco", "trainer.devices=8"]),
        ("train", ["-m", "model.aux.dt=true,false", "seed=range(0,2)"]),
        ("train", ["experiment=table1/light_r50", "--cfg", "job", "--resolve"]),
        ("train", ["experiment=demo", "model.aux.dt_weight=2", "+callbacks.extra._target_=x.Y", "~logger"]),
        ("train", ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "trainer.strategy=ddp"]),
        ("eval", ["ckpt_path=run/checkpoints/last.ckpt", "split=test"]),
    ],
)
def test_documented_commands_pass_the_check(config_name: str, argv: list[str]) -> None:
    check_override_keys(CONF_DIR, config_name, override_args(argv))


def test_hydra_flags_and_their_values_are_not_overrides() -> None:
    assert override_args(["--cfg", "job", "-m", "a=1", "-cn", "eval", "b=2"]) == ["a=1", "b=2"]


def test_an_added_unknown_model_key_names_the_closest_one() -> None:
    """``+model.aux.dtt=true`` gets past Hydra (a new key); the model's builder then names it and the key it
    resembles, instead of a ``TypeError`` from a constructor."""
    cfg = compose_config(["experiment=demo", "+model.aux.dtt=true"], config_name="train")
    with pytest.raises(InstantiationException, match=r"model\.aux\.dtt \(did you mean model\.aux\.dt"):
        instantiate(cfg.model, num_classes=4, resize_images=False)
