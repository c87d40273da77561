"""Parameter counts of the model presets against Table 7 of the paper.

    python scripts/paper/model_report.py            # a table
    python scripts/paper/model_report.py --json     # one line: rows {model, backbone, num_classes, params}

Models are built from ``conf/model/<preset>.yaml`` with random weights (nothing is downloaded).
"""

import argparse
import json

from hydra.utils import instantiate

from datnet.configs import compose_config
from datnet.paper_tables import TABLE7


def count_parameters(preset: str, backbone: str, num_classes: int) -> int:
    cfg = compose_config(
        [
            f"+model={preset}",
            f"model.backbone.name={backbone}",
            "model.backbone.weights=scratch",  # random weights: nothing to look for, the same parameters
            f"model.num_classes={num_classes}",
        ]
    )
    model = instantiate(cfg.model)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--num-classes", type=int, default=81)
    args = parser.parse_args()
    rows = [
        {
            "model": preset,
            "backbone": backbone,
            "num_classes": args.num_classes,
            "params": count_parameters(preset, backbone, args.num_classes),
        }
        for preset, backbone in TABLE7
    ]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'model':<10}{'backbone':<20}{'params (M)':>12}{'Table 7 (M)':>13}{'diff':>9}")
    for row in rows:
        paper = TABLE7[(row["model"], row["backbone"])][1]
        params = row["params"] / 1e6
        diff = params / paper - 1
        print(f"{row['model']:<10}{row['backbone']:<20}{params:>12.2f}{paper:>13.1f}{diff:>9.2%}")


if __name__ == "__main__":
    main()
