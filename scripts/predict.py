"""Draw a trained DATNet model's predictions: images or folders in, one PNG per image out.

    python scripts/predict.py --checkpoint logs/train/runs/<run>/checkpoints/last.ckpt data/images/
    python scripts/predict.py --checkpoint last.ckpt data.root=/datasets/coco --aux-maps --coco-json photo.jpg
    python scripts/predict.py --checkpoint model.pt model=heavy data=coco photo.jpg   # no run directory

The model, the data and hence the class names come from the training run that wrote ``--checkpoint``
(``<run>/.hydra/config.yaml``, as ``src/eval.py`` takes them): positional arguments that contain ``=`` and are
not existing paths are Hydra overrides of ``conf/train.yaml`` applied on top (``data.root=/elsewhere``,
``+model.detector.box_score_thresh=0.2``); one that picks a ``model=``, ``data=`` or ``experiment=`` option,
or a checkpoint without such a run directory, builds model and data from the command line alone. The other
positional arguments are image files and folders (searched recursively for image files). The data config is
read (its annotation files: the first configured split's categories, as in training) for the class names and
the label -> category id map; the model is built for its classes, with the checkpoint's weights (a Lightning
``.ckpt``, a model state dict, or a torchvision COCO detector's, mapped to the data's category ids:
``datnet.models.load_model_checkpoint``; without ``--checkpoint`` the weights are random, a smoke test).
The model resizes each raw image itself to the size the training data pipeline gives its evaluation images
(``data.min_size``/``data.max_size``) unless ``model.detector.min_size``/``max_size`` are overridden.

Each PNG shows the image at its original size with the masks, boxes and ``class score`` labels of the
detections scoring at least ``--score-threshold``. ``--aux-maps`` puts the auxiliary heads' predictions beside
it: the distance transform (expected bin, dark = background/edge, bright = object centre) and the semantic
map (most likely class, coloured like the boxes, background black). ``--coco-json`` also writes, beside the
PNGs, every detection the model returns (not only those drawn) in the COCO results format,
``coco_results.json`` (``image_id``, the dataset's ``category_id``, ``bbox`` as ``[x, y, w, h]``, ``score``
and, for models with masks, ``segmentation`` as compressed RLE), and ``image_info.json``, a COCO image-info
file (``images`` with ``id``, ``file_name`` as given, ``width``, ``height``; ``categories``). Image ids are
the numbers of COCO-style file names (``000000397133.jpg``) when every input has one, else 1..N in input
order. Unreadable images are reported by name, skipped and counted; the exit status is 1 when no PNG was
written.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn

from datnet.configs import compose_config
from datnet.data.datamodule import DetectionDataModule
from datnet.data.image_io import ImageLoadError, read_rgb
from datnet.data.transforms import image_to_uint8_tensor
from datnet.evaluation.coco_results import ImageResults
from datnet.models import fold_batchnorm_
from datnet.runs.build import build_model as build_run_model
from datnet.runs.config import for_checkpoint, with_run_config
from datnet.visualization import aux_panels, class_colors, draw_detections

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
EVAL_SIZES = ("min_size", "max_size")


def split_arguments(values: list[str]) -> tuple[list[Path], list[str]]:
    """Positional arguments into input paths and Hydra overrides (``key=value`` that is not a path)."""
    paths, overrides = [], []
    for value in values:
        if "=" in value and not Path(value).exists():
            overrides.append(value)
        else:
            paths.append(Path(value))
    return paths, overrides


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given (whatever their suffix, so that a bad file is reported) and the image files found
    recursively under folders, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def run_config(overrides: list[str], checkpoint: str | None) -> tuple[DictConfig, bool]:
    """The config to predict with, and whether its model and data come from the training run that wrote
    ``checkpoint`` (``overrides`` on top); its detector resizes raw images to the data's evaluation size
    unless ``model.detector.min_size``/``max_size`` are overridden, and its backbone is built for a
    whole-model checkpoint (no ImageNet file is looked for)."""
    composed = compose_config(overrides, config_name="train")
    cfg = composed
    if checkpoint:
        composed.ckpt_path = checkpoint
        cfg = with_run_config(composed, overrides)
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}
    for size in EVAL_SIZES:
        if f"model.detector.{size}" not in keys:
            OmegaConf.update(cfg, f"model.detector.{size}", cfg.data[size], force_add=True)
    return for_checkpoint(cfg), cfg is not composed


def build_data(cfg: DictConfig) -> DetectionDataModule:
    """The data module of ``cfg.data`` (its label space: class names and category ids)."""
    try:
        return instantiate(cfg.data)
    except InstantiationException as error:
        raise SystemExit(
            f"the data config ({cfg.data._target_}) gives the class names and category ids, and it cannot "
            f"be read: {error.__cause__ or error}\npoint it at the dataset with an override (data.root=...)"
        ) from error


def build_model(cfg: DictConfig, data: DetectionDataModule, checkpoint: str | None, device: str) -> nn.Module:
    """``cfg.model`` for the classes of ``data`` with the checkpoint's weights (random without one; a
    torchvision COCO detector's 91 indices mapped to the data's category ids), resizing raw images itself, in
    eval mode with BatchNorm folded into the convolutions."""
    strict = cfg.model.get("checkpoint_strict", True)
    model = build_run_model(cfg, data, resize_images=True, checkpoint=checkpoint, strict=strict)
    model.eval()
    fold_batchnorm_(model)
    return model.to(device)


def output_path(output_dir: Path, source: Path, used: set[str]) -> Path:
    """``<output_dir>/<stem>.png``, with ``_<n>`` appended when an earlier input had the same stem."""
    name, n = source.stem, 1
    while name in used:
        name, n = f"{source.stem}_{n}", n + 1
    used.add(name)
    return output_dir / f"{name}.png"


def image_ids(files: list[Path]) -> list[int]:
    """COCO image ids of the inputs: the numbers of COCO-style file names (``000000397133.jpg``) when every
    stem is one and no two are equal, else 1..N in input order."""
    stems = [f.stem for f in files]
    if all(s.isdecimal() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def coco_records(detection: dict[str, Tensor], image_id: int, label_to_category_id: dict[int, int]) -> list:
    """One image's detections as COCO result records: ``bbox`` (xywh) and, with masks, ``segmentation``."""
    results = ImageResults.from_prediction(detection, label_to_category_id, "masks" in detection, 0)
    boxes = results.records(image_id, "bbox")
    if "masks" not in detection:
        return boxes
    masks = results.records(image_id, "segm")
    return [{**box, "segmentation": mask["segmentation"]} for box, mask in zip(boxes, masks, strict=True)]


@torch.inference_mode()
def predict_file(model: nn.Module, path: Path, device: str, aux_maps: bool) -> tuple[Tensor, dict]:
    """The uint8 3xHxW image of one file and the model's detection for it (on the CPU); raises
    ``ImageLoadError``."""
    rgb = image_to_uint8_tensor(read_rgb(path))  # the model scales uint8 images to [0, 1] on the device
    detection = model([rgb.to(device)], return_aux_maps=aux_maps)[0]
    return rgb, {k: v.cpu() for k, v in detection.items()}


def draw(rgb: Tensor, detection: dict, names: list[str], colors: list, args: argparse.Namespace) -> Tensor:
    """The PNG content (uint8 3xHx(W or 3W)): detections above the threshold, then the aux maps if asked."""
    drawn = draw_detections(rgb, detection, names, colors, args.score_threshold)
    if args.aux_maps:
        drawn = torch.cat([drawn, *aux_panels(detection, tuple(rgb.shape[-2:]), colors)], dim=2)
    return drawn


def write_coco_json(output_dir: Path, records: list[dict], images: list[dict], data: DetectionDataModule):
    """``coco_results.json`` (result records) and ``image_info.json`` (images and categories)."""
    categories = [{"id": c.id, "name": c.name} for c in data.categories]
    (output_dir / "coco_results.json").write_text(json.dumps(records))
    (output_dir / "image_info.json").write_text(json.dumps({"images": images, "categories": categories}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders, and Hydra overrides (key=value)")
    parser.add_argument("--checkpoint", help="Lightning .ckpt or model state dict (default: random weights)")
    parser.add_argument("--output-dir", type=Path, default=Path("predictions"))
    parser.add_argument("--score-threshold", type=float, default=0.5, help="of the drawn detections")
    parser.add_argument("--aux-maps", action="store_true", help="draw the DT and semantic maps beside")
    parser.add_argument("--coco-json", action="store_true", help="write COCO-format results beside the PNGs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_intermixed_args(argv)
    args.paths, args.overrides = split_arguments(args.inputs)
    if not args.paths:
        parser.error("no input image or folder given")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: checkpoint file {args.checkpoint} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = collect_images(args.paths)
    cfg, from_run = run_config(args.overrides, args.checkpoint)
    source = "the training run of the checkpoint" if from_run else "the command line"
    print(f"model and data configs from {source} (data: {cfg.data._target_})")
    data = build_data(cfg)
    model = build_model(cfg, data, args.checkpoint, args.device)
    if args.aux_maps and getattr(model, "auxiliary", None) is None:
        raise SystemExit("--aux-maps: the model has no auxiliary heads (model.aux.dt and model.aux.seg off)")
    names, colors = data.class_names, class_colors(data.num_classes)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    records, images, unreadable = [], [], 0
    for path, image_id in zip(files, image_ids(files), strict=True):
        try:
            rgb, detection = predict_file(model, path, args.device, args.aux_maps)
        except ImageLoadError as error:
            print(f"skipped unreadable image: {error}", file=sys.stderr)
            unreadable += 1
            continue
        drawn = draw(rgb, detection, names, colors, args)
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(output_path(args.output_dir, path, used))
        height, width = rgb.shape[-2:]
        images.append({"id": image_id, "file_name": str(path), "width": int(width), "height": int(height)})
        if args.coco_json:
            records += coco_records(detection, image_id, data.label_to_category_id)
    if args.coco_json:
        write_coco_json(args.output_dir, records, images, data)
        print(f"wrote {len(records)} COCO result record(s) to {args.output_dir / 'coco_results.json'}")
    print(f"wrote {len(images)} PNG(s) to {args.output_dir}; {unreadable} unreadable image(s) skipped")
    return 0 if images else 1


if __name__ == "__main__":
    sys.exit(main())
