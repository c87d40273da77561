"""Look at what the model is trained on: samples of any data config after its transform pipeline, into PNGs.

    python scripts/browse_dataset.py experiment=demo --num 8                      # the embedded shapes data
    python scripts/browse_dataset.py data=coco data.root=/datasets/coco --num 8 --output-dir browse/
    python scripts/browse_dataset.py data=voc data.root=/datasets/VOCdevkit data.multiscale=true --split val

Positional arguments are Hydra overrides of ``conf/train.yaml`` (so ``experiment=...`` and every ``data.*``
key apply, as in ``src/train.py``). ``--num`` samples of ``--split`` are drawn at random (``--seed``) and
loaded exactly as the loader workers load them: the training split through the training pipeline (colour
jitter, flip, single- or multi-scale resize, so every run with another seed shows other augmentations), the
val split through the deterministic evaluation resize. Each PNG (``<split>_<index>_<image id>.png``) shows,
each panel under its title and a legend of the class colours below, the augmented image with the instances'
masks, boxes and class names, then the dense auxiliary targets of
Sec. 3.1 at the image's size, whatever their own resolution (stride 4 or the image's): the distance-transform
bins (grey levels, black = background, brighter = nearer the object's centre) and the semantic labels (each
class in its box colour, background black); ignored regions (crowd, VOC void or difficult) are white. Images
that cannot be read are reported with the reason and counted; the exit status is 1 when no PNG was written.
"""

import argparse
import random
import sys
from pathlib import Path

from hydra.utils import instantiate
from PIL import Image

from datnet.configs import compose_config
from datnet.data.dataset import SkippedSample
from datnet.visualization import class_colors, classes_legend, draw_targets, figure, target_panels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (key=value) of conf/train.yaml")
    parser.add_argument("--num", type=int, default=8, help="samples to draw (all when the split has fewer)")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--output-dir", type=Path, default=Path("browse"))
    parser.add_argument("--seed", type=int, default=0, help="picks the samples and their augmentation")
    args = parser.parse_intermixed_args(argv)
    not_overrides = [value for value in args.overrides if "=" not in value]
    if not_overrides:
        parser.error(f"not a Hydra override (key=value): {' '.join(not_overrides)}")
    if args.num < 1:
        parser.error("--num must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = compose_config(args.overrides, config_name="train")
    data = instantiate(cfg.data)
    dataset = data.dataset(args.split)
    rng = random.Random(args.seed)
    indices = sorted(rng.sample(range(len(dataset)), min(args.num, len(dataset))))
    if len(indices) < args.num:
        print(f"the {args.split} split has {len(dataset)} images: drawing all of them")
    dataset.transforms.set_random_seed(args.seed)
    names, colors = data.class_names, class_colors(data.num_classes)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    written, unreadable = 0, 0
    for index in indices:
        sample = dataset[index]
        if isinstance(sample, SkippedSample):
            print(f"skipped unreadable image: {sample.reason}", file=sys.stderr)
            unreadable += 1
            continue
        image, target = sample
        panels = [("image", draw_targets(image, target, names, colors))]
        panels += target_panels(target, tuple(image.shape[-2:]), colors)
        drawn = figure(panels, classes_legend(target["labels"].tolist(), names, colors))
        path = args.output_dir / f"{args.split}_{index:06d}_{target['image_id']}.png"
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(path)
        written += 1
    print(f"wrote {written} PNG(s) to {args.output_dir}; {unreadable} unreadable image(s) skipped")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
