"""Export a trained DATNet model to ONNX or TorchScript, and check the export against the eager model.

    python scripts/export.py --checkpoint logs/train/runs/<run>/checkpoints/last.ckpt --format onnx --output x
    python scripts/export.py --checkpoint last.ckpt --format torchscript --output out --check
    python scripts/export.py --checkpoint model.pt --format onnx --output out model=heavy data=coco  # no run

The model and data come from the training run that wrote ``--checkpoint``, as for ``scripts/predict.py``
(positional ``key=value`` Hydra overrides on top; one that picks ``model=``, ``data=`` or ``experiment=``,
or a checkpoint without a run directory, builds them from the command line alone). What is exported is the
inference model for one image with its postprocessing (``datnet.deploy.SingleImageDetector``): a float RGB
image ``(3, H, W)`` in [0, 1] of any size in; ``boxes`` (N, 4) xyxy in that image's pixels, ``labels``,
``scores`` and, with a mask head, ``masks`` (N, 1, H, W) probabilities out. The model resizes and
normalises the image itself (to the data's evaluation size), with its configured box score threshold, NMS
and detections per image, and BatchNorm folded into the convolutions. The files: ``<output>/model.onnx``
(opset 17, run with onnxruntime) or ``<output>/model.pt`` (``torch.jit.load``), and
``<output>/export.json`` (the format, the input and outputs, the class names and the label -> dataset
category id map). The tracing example is the first image of the data's ``--split``.

``--check`` runs the exported file and the eager model on the first ``--num-images`` images of that split
(whatever their sizes: the image size is dynamic) and prints one JSON line: the detections each way, the
images whose count or labels differ, the largest box (px), score and mask-probability differences, and
``match`` (every count and label equal, every box within 0.01 px); the exit status is 1 when they do not
match. See docs/export.md.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from datnet.data.datamodule import DetectionDataModule
from datnet.data.image_io import read_rgb
from datnet.data.transforms import image_to_tensor
from datnet.deploy import FORMATS, SingleImageDetector, compare_detections
from datnet.runs.inference import DataConfigError, build_data, build_inference_model, run_config

MODEL_FILE = "model"
METADATA_FILE = "export.json"


def split_images(data: DetectionDataModule, split: str, count: int) -> list[Tensor]:
    """The first ``count`` images of ``split`` as float RGB (3, H, W) tensors in [0, 1]."""
    records = data.dataset(split).records
    if len(records) == 0:
        raise SystemExit(f"--split {split}: the data's {split} split has no images")
    return [image_to_tensor(read_rgb(records[i].path)) for i in range(min(count, len(records)))]


def write_metadata(path: Path, fmt: str, detector: SingleImageDetector, data: DetectionDataModule) -> None:
    """``export.json``: what the exported file takes and gives, and the label space."""
    metadata = {
        "format": fmt,
        "file": path.name,
        "input": {"name": "image", "shape": ["3", "H", "W"], "dtype": "float32", "range": [0, 1]},
        "outputs": list(detector.output_names),
        "class_names": data.class_names,
        "label_to_category_id": {str(k): v for k, v in data.label_to_category_id.items()},
        "torch": torch.__version__,
    }
    (path.parent / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


@torch.inference_mode()
def eager_detections(detector: SingleImageDetector, images: list[Tensor]) -> list[dict[str, Tensor]]:
    """The eager model's own detections (``DATNet.forward``) of each image, the exported outputs only."""
    detections = [detector.model([image])[0] for image in images]
    return [{k: detection[k] for k in detector.output_names} for detection in detections]


def check(path: Path, fmt: str, detector: SingleImageDetector, images: list[Tensor]) -> dict:
    """The exported file at ``path`` run on ``images`` against the eager model: ``compare_detections``'s
    summary with the format, file and runtime."""
    runner = FORMATS[fmt].load(path)
    exported = [dict(zip(detector.output_names, runner(image), strict=True)) for image in images]
    summary = compare_detections(eager_detections(detector, images), exported)
    return {"format": fmt, "file": str(path), "runtime": FORMATS[fmt].runtime(), **summary}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (key=value) of the run's config")
    parser.add_argument("--checkpoint", required=True, help="Lightning .ckpt or model state dict")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), dest="fmt")
    parser.add_argument("--output", required=True, type=Path, help="folder for the exported files")
    parser.add_argument("--check", action="store_true", help="compare with the eager model, one JSON line")
    parser.add_argument("--num-images", type=int, default=8, help="images of --split that --check runs")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: checkpoint file {args.checkpoint} does not exist")
    if args.num_images < 1:
        parser.error("--num-images must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, from_run = run_config(args.overrides, args.checkpoint)
    source = "the training run of the checkpoint" if from_run else "the command line"
    print(f"model and data configs from {source} (data: {cfg.data._target_})", file=sys.stderr)
    try:
        data = build_data(cfg)
    except DataConfigError as error:
        raise SystemExit(str(error)) from error
    detector = SingleImageDetector(build_inference_model(cfg, data, args.checkpoint, "cpu"))
    images = split_images(data, args.split, args.num_images)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{MODEL_FILE}{FORMATS[args.fmt].suffix}"
    start = time.perf_counter()
    FORMATS[args.fmt].export(detector, images[0], path)
    write_metadata(path, args.fmt, detector, data)
    print(f"exported {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if not args.check:
        return 0
    summary = check(path, args.fmt, detector, images)
    print(json.dumps(summary))
    return 0 if summary["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
