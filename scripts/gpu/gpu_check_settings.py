"""The GPU check's sizes (``full`` on a GPU, ``smoke`` on a CPU) and the context every part runs in."""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TAIL_CHARS = 3000  # of an error or an output kept in the report
RESULT_PREFIX = "PART_RESULT "  # a part's result line; the last one printed is the part's result


def report_partial(result: dict) -> None:
    """Prints what a part has measured so far as its result: the report keeps it (``partial``) if the part is
    killed at its time limit later."""
    print(RESULT_PREFIX + json.dumps({"status": "ok", "result": result}), flush=True)


@dataclass(frozen=True)
class Settings:
    """Sizes of the check: ``full`` on a GPU, ``smoke`` on a CPU (toy sizes, to test the script)."""

    device: str = "cuda"
    backbone: str = "resnet50"
    min_size: int = 800
    max_size: int = 1333
    batch_size: int = 2
    num_workers: int = 4
    warmup: int = 3
    steps: int = 10
    train_steps: int = 30
    step_batch_sizes: tuple[int, ...] = (2, 4)  # coco_step: the paper's 2 images per GPU, and 4
    val_images: int = 8  # coco_step: tiny_coco val images timed for the validation estimate
    compile_steps: int = 60  # coco_compile: steps of the eager and of the compiled model
    compile_backend: str = "inductor"
    loader_overrides: tuple[str, ...] = ("data.multiscale=true",)  # the tiny_coco training loader
    model_overrides: tuple[str, ...] = ()
    train_overrides: tuple[str, ...] = ()
    table7_args: tuple[str, ...] = ("--backbones", "resnet50", "--num-images", "4", "--repeats", "5")

    @property
    def trainer(self) -> tuple[str, ...]:
        return ("trainer=gpu",) if self.device == "cuda" else ("trainer=cpu",)

    @property
    def ddp_trainer(self) -> tuple[str, ...]:
        accelerator = "gpu" if self.device == "cuda" else "cpu"
        return ("trainer=ddp", f"trainer.accelerator={accelerator}", "trainer.devices=1")

    @property
    def table7_devices(self) -> tuple[str, ...]:
        return ("cuda-fp32", "cuda-bf16") if self.device == "cuda" else ("cpu",)


FULL = Settings()
SMOKE = Settings(
    device="cpu",
    backbone="resnet18",
    min_size=96,
    max_size=128,
    num_workers=0,
    warmup=1,
    steps=1,
    train_steps=2,
    step_batch_sizes=(1, 2),
    val_images=1,
    compile_steps=2,
    compile_backend="eager",  # Dynamo's capture only: Inductor takes minutes of C++ on a CPU
    loader_overrides=(
        "data.multiscale=true",
        "data.multiscale_range=[64,96]",
        "data.multiscale_max_size=128",
        "data.min_size=96",
        "data.max_size=128",
    ),
    model_overrides=(
        "model.backbone.out_channels=32",
        "model.detector.box_batch_size_per_image=16",
        "++model.detector.rpn_pre_nms_top_n_train=100",
        "++model.detector.rpn_post_nms_top_n_train=50",
        "++model.detector.rpn_pre_nms_top_n_test=100",
        "++model.detector.rpn_post_nms_top_n_test=50",
    ),
    train_overrides=(
        "data.num_train=8",
        "data.num_val=4",
        "data.num_workers=0",
        "data.min_size=96",
        "data.max_size=128",
        "model.detector.box_batch_size_per_image=16",
    ),
    table7_args=(
        *("--backbones", "resnet18", "--size", "64", "--num-images", "1", "--repeats", "1"),
        *("--num-classes", "5", "--overrides", "+model.detector.rpn_post_nms_top_n_test=20"),
        "+model.detector.box_detections_per_img=10",
    ),
)


@dataclass
class Context:
    """What a part needs: the settings, a scratch directory of its own, the Python to run scripts with."""

    settings: Settings
    work_dir: Path
    python: str = sys.executable
