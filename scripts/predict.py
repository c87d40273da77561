"""Draw a trained DATNet model's predictions: images or folders in, one PNG per image out.

    python scripts/predict.py --checkpoint logs/train/runs/<run>/checkpoints/last.ckpt data/images/
    python scripts/predict.py --checkpoint last.ckpt data.root=/datasets/coco --aux-maps --coco-json photo.jpg
    python scripts/predict.py --checkpoint model.pt model=heavy data=coco photo.jpg   # no run directory
    python scripts/predict.py --checkpoint last.ckpt --video clip.mp4 --output clip_detections.mp4

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

``--tta-flip`` and ``--tta-scales S [S ...]`` draw the detections merged over augmented views (each short
side ``S`` in pixels, default the model's, and with ``--tta-flip`` each flipped left-right), as
``src/eval.py tta.flip=true tta.scales=[...]`` evaluates them (docs/tta.md).

``--video IN --output OUT.mp4`` draws every frame of a video file (anything OpenCV's ``VideoCapture`` reads)
the same way into an mp4 (``mp4v`` codec, the input's frame rate, no audio), with a progress bar of frames
and frames per second; it takes no image paths and no ``--coco-json``.
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from datnet.data.datamodule import DetectionDataModule
from datnet.data.image_io import ImageLoadError, read_rgb
from datnet.data.transforms import image_to_uint8_tensor
from datnet.deploy.video import Mp4Writer, VideoError, VideoFrames, frame_progress
from datnet.evaluation.coco_results import ImageResults
from datnet.models.tta import TestTimeAugmentation
from datnet.runs.inference import DataConfigError, build_data, build_inference_model, run_config
from datnet.visualization import aux_panels, class_colors, classes_legend, draw_detections, figure

Detector = Callable[..., list[dict[str, Tensor]]]  # the model, or its test-time augmentation
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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
def detect(model: Detector, rgb: Tensor, device: str, aux_maps: bool) -> dict[str, Tensor]:
    """The model's detection of one uint8 3xHxW image (on the CPU); the model scales it to [0, 1] on the
    device."""
    detection = model([rgb.to(device)], return_aux_maps=aux_maps)[0]
    return {k: v.cpu() for k, v in detection.items()}


def draw(
    rgb: Tensor,
    detection: dict,
    names: list[str],
    colors: list,
    args: argparse.Namespace,
    every_class: bool = False,
) -> Tensor:
    """The PNG content (uint8): the detections above the threshold, captioned, at the image's size; with
    ``--aux-maps``, a figure of titled panels (prediction, DT and semantic predictions) with a legend of the
    classes detected (``every_class``: of all classes, so that every video frame has the same size)."""
    drawn = draw_detections(rgb, detection, names, colors, args.score_threshold)
    if not args.aux_maps:
        return drawn
    if every_class:
        shown = list(range(1, len(names)))
    else:
        shown = detection["labels"][detection["scores"] >= args.score_threshold].tolist()
    panels = [("prediction", drawn), *aux_panels(detection, tuple(rgb.shape[-2:]), colors)]
    return figure(panels, classes_legend(shown, names, colors))


def write_coco_json(output_dir: Path, records: list[dict], images: list[dict], data: DetectionDataModule):
    """``coco_results.json`` (result records) and ``image_info.json`` (images and categories)."""
    categories = [{"id": c.id, "name": c.name} for c in data.categories]
    (output_dir / "coco_results.json").write_text(json.dumps(records))
    (output_dir / "image_info.json").write_text(json.dumps({"images": images, "categories": categories}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="*", help="image files, folders, and Hydra overrides (key=value)")
    parser.add_argument("--checkpoint", help="Lightning .ckpt or model state dict (default: random weights)")
    parser.add_argument("--output-dir", type=Path, default=Path("predictions"))
    parser.add_argument("--video", type=Path, help="a video file to draw every frame of, instead of images")
    parser.add_argument("--output", type=Path, help="with --video: the mp4 file to write (OUT.mp4)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="of the drawn detections")
    parser.add_argument("--aux-maps", action="store_true", help="draw the DT and semantic maps beside")
    parser.add_argument("--coco-json", action="store_true", help="write COCO-format results beside the PNGs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tta-flip", action="store_true", help="test-time augmentation: also flipped views")
    parser.add_argument(
        "--tta-scales", type=int, nargs="+", metavar="S", help="test-time augmentation: views' short sides"
    )
    args = parser.parse_intermixed_args(argv)
    args.paths, args.overrides = split_arguments(args.inputs)
    scales = args.tta_scales
    if scales is not None and (min(scales) <= 0 or len(set(scales)) != len(scales)):
        parser.error(f"--tta-scales: distinct positive short sides in pixels; got {scales}")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: checkpoint file {args.checkpoint} does not exist")
    if args.video is None:
        if args.output is not None:
            parser.error("--output is the mp4 file of --video; images go to --output-dir")
        if not args.paths:
            parser.error("no input image or folder given")
        return args
    if not args.video.is_file():
        parser.error(f"--video: video file {args.video} does not exist")
    if args.output is None or args.paths or args.coco_json:
        parser.error("--video takes --output OUT.mp4, and no image paths or --coco-json")
    return args


def predict_images(model: Detector, data: DetectionDataModule, args: argparse.Namespace) -> int:
    """One PNG per readable input image in ``--output-dir`` (and the COCO JSON files if asked); 0 when any
    was written."""
    files = collect_images(args.paths)
    names, colors = data.class_names, class_colors(data.num_classes)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    records, images, unreadable = [], [], 0
    for path, image_id in zip(files, image_ids(files), strict=True):
        try:
            rgb = image_to_uint8_tensor(read_rgb(path))
        except ImageLoadError as error:
            print(f"skipped unreadable image: {error}", file=sys.stderr)
            unreadable += 1
            continue
        detection = detect(model, rgb, args.device, args.aux_maps)
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


def predict_video(model: Detector, data: DetectionDataModule, args: argparse.Namespace) -> int:
    """Every frame of ``--video`` drawn into the mp4 ``--output`` (at the input's frame rate, no audio),
    with a progress bar; 0 when any frame was written."""
    names, colors = data.class_names, class_colors(data.num_classes)
    try:
        frames = VideoFrames(args.video)
        start = time.perf_counter()
        with Mp4Writer(args.output, frames.fps) as writer, frame_progress() as progress:
            task = progress.add_task("frames", total=frames.count or None)
            for frame in frames:
                rgb = image_to_uint8_tensor(frame)
                detection = detect(model, rgb, args.device, args.aux_maps)
                drawn = draw(rgb, detection, names, colors, args, every_class=True)
                writer.write(drawn.permute(1, 2, 0).numpy())
                progress.advance(task)
    except VideoError as error:
        raise SystemExit(str(error)) from error
    rate = writer.frames / max(time.perf_counter() - start, 1e-9)
    print(f"wrote {writer.frames} frame(s) to {args.output} ({rate:.1f} frames/s)")
    return 0 if writer.frames else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, from_run = run_config(args.overrides, args.checkpoint)
    source = "the training run of the checkpoint" if from_run else "the command line"
    print(f"model and data configs from {source} (data: {cfg.data._target_})")
    try:
        data = build_data(cfg)
    except DataConfigError as error:
        raise SystemExit(str(error)) from error
    model = build_inference_model(cfg, data, args.checkpoint, args.device)
    if args.aux_maps and getattr(model, "auxiliary", None) is None:
        raise SystemExit("--aux-maps: the model has no auxiliary heads (model.aux.dt and model.aux.seg off)")
    detector: Detector = model
    if args.tta_flip or args.tta_scales:
        tta = TestTimeAugmentation(model.transform.min_size[-1], args.tta_scales, args.tta_flip)
        detector = partial(tta, model)
    return predict_video(detector, data, args) if args.video else predict_images(detector, data, args)


if __name__ == "__main__":
    sys.exit(main())
