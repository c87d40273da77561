"""Draw a DATNet model's predictions: images or folders in, one PNG per image out.

    python scripts/predict.py --checkpoint last.ckpt experiment=demo model.num_classes=4 \\
        --class-names circle square triangle data/images/ --output-dir predictions
    python scripts/predict.py --checkpoint model.pt model=heavy --aux-maps photo.jpg

Positional arguments are image files, folders (searched recursively for image files) and, when they contain
``=`` and are not existing paths, Hydra overrides of the training configuration (``conf/train.yaml``):
``model=heavy``, ``experiment=demo``, ``model.backbone.name=resnet18``, ``model.num_classes=4`` - the model
is built as ``src/train.py`` builds it from the same overrides, then ``--checkpoint`` (a Lightning ``.ckpt``
or a model state dict) is loaded. Without a checkpoint the weights are random (a smoke test). The model
resizes each raw image itself, to the size that the training data pipeline gives its evaluation images
(``data.min_size``/``data.max_size``: 800/1333 for COCO, 160/256 for ``experiment=demo``); override
``model.detector.min_size``/``max_size`` for another size.

Each PNG shows the image at its original size with the masks, boxes and ``class score`` labels of the
detections scoring at least ``--score-threshold``. ``--aux-maps`` puts the auxiliary heads' predictions beside
it: the distance transform (expected bin, dark = background/edge, bright = object centre) and the semantic
map (most likely class, coloured like the boxes, background black). Unreadable images are reported by name,
skipped and counted; the exit status is 1 when no PNG was written.
"""

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor, nn

from datnet.configs import compose_config
from datnet.data.image_io import ImageLoadError, read_rgb
from datnet.data.transforms import image_to_uint8_tensor
from datnet.models import fold_batchnorm_, load_model_checkpoint
from datnet.models.backbone import backbone_for_checkpoint
from datnet.visualization import aux_panels, class_colors, draw_detections

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
BACKGROUND = "__background__"
DATA_PIPELINE_SIZES = ["model.detector.min_size=${data.min_size}", "model.detector.max_size=${data.max_size}"]


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


def build_model(overrides: list[str], checkpoint: str | None, device: str) -> nn.Module:
    """The model of ``conf/train.yaml`` with ``overrides``, in eval mode with BatchNorm folded into the
    convolutions, resizing raw images itself to the evaluation size of the training data pipeline
    (``data.min_size``/``data.max_size``) unless ``model.detector.min_size``/``max_size`` are overridden."""
    cfg = compose_config([*DATA_PIPELINE_SIZES, *overrides], config_name="train")
    # every weight comes from the checkpoint (or is random): no ImageNet file, the BatchNorm kind of training
    backbone = backbone_for_checkpoint(OmegaConf.to_container(cfg.model.backbone, resolve=True))
    model = instantiate(cfg.model, backbone=backbone, resize_images=True)
    if checkpoint:
        load_model_checkpoint(model, checkpoint)
    model.eval()
    fold_batchnorm_(model)
    return model.to(device)


def resolve_class_names(names: list[str] | None, names_file: Path | None, num_classes: int) -> list[str]:
    """Names by label, index 0 the background; given with or without the background, or ``class <i>``."""
    if names_file is not None:
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    if not names:
        return [BACKGROUND] + [f"class {i}" for i in range(1, num_classes)]
    if len(names) == num_classes - 1:
        names = [BACKGROUND, *names]
    if len(names) != num_classes:
        raise SystemExit(
            f"{len(names)} class names for a model with {num_classes} classes (background included): "
            f"give {num_classes - 1} names, or {num_classes} with the background first"
        )
    return names


def output_path(output_dir: Path, source: Path, used: set[str]) -> Path:
    """``<output_dir>/<stem>.png``, with ``_<n>`` appended when an earlier input had the same stem."""
    name, n = source.stem, 1
    while name in used:
        name, n = f"{source.stem}_{n}", n + 1
    used.add(name)
    return output_dir / f"{name}.png"


@torch.inference_mode()
def predict_file(
    model: nn.Module, path: Path, names: list[str], colors: list, args: argparse.Namespace
) -> Tensor:
    """The drawn PNG content (uint8 3xHx(W or 3W)) for one image file; raises ``ImageLoadError``."""
    rgb = image_to_uint8_tensor(read_rgb(path))  # the model scales uint8 images to [0, 1] on the device
    detection = model([rgb.to(args.device)], return_aux_maps=args.aux_maps)
    detection = {k: v.cpu() for k, v in detection[0].items()}
    drawn = draw_detections(rgb, detection, names, colors, args.score_threshold)
    if args.aux_maps:
        drawn = torch.cat([drawn, *aux_panels(detection, tuple(rgb.shape[-2:]), colors)], dim=2)
    return drawn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders, and Hydra overrides (key=value)")
    parser.add_argument("--checkpoint", help="Lightning .ckpt or model state dict (default: random weights)")
    parser.add_argument("--output-dir", type=Path, default=Path("predictions"))
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--class-names", nargs="+", help="names of labels 1..K-1 (or 0..K-1)")
    names.add_argument("--class-names-file", type=Path, help="a file with one class name per line")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--aux-maps", action="store_true", help="draw the DT and semantic maps beside")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_intermixed_args(argv)
    args.paths, args.overrides = split_arguments(args.inputs)
    if not args.paths:
        parser.error("no input image or folder given")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = collect_images(args.paths)
    model = build_model(args.overrides, args.checkpoint, args.device)
    if args.aux_maps and getattr(model, "auxiliary", None) is None:
        raise SystemExit("--aux-maps: the model has no auxiliary heads (model.aux.dt and model.aux.seg off)")
    num_classes = model.roi_heads.box_predictor.cls_score.out_features
    names = resolve_class_names(args.class_names, args.class_names_file, num_classes)
    colors = class_colors(num_classes)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written, unreadable = 0, 0
    for path in files:
        try:
            drawn = predict_file(model, path, names, colors, args)
        except ImageLoadError as error:
            print(f"skipped unreadable image: {error}", file=sys.stderr)
            unreadable += 1
            continue
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(output_path(args.output_dir, path, used))
        written += 1
    print(f"wrote {written} PNG(s) to {args.output_dir}; {unreadable} unreadable image(s) skipped")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
