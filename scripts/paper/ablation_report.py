"""The real-data ablation's tables (docs/results.md) from the sweeps of ``scripts/paper/ablation.sh``.

    python scripts/paper/ablation_report.py logs/ablation                     # markdown on stdout
    python scripts/paper/ablation_report.py logs/ablation --output logs/ablation/results.md --json

``logs/ablation`` holds one Hydra sweep directory per dataset. Jobs are grouped by arm (the ``ablation``
override) and any other override but the seed; each group shows the number of seeds, mean and sample
standard deviation of box AP, AP50, mask AP and RPN AR@100, and the difference to the Mask R-CNN arm paired
by seed (same seed: same backbone initialisation and data order) with the number of seeds where the arm is
ahead, beside the paper's difference for the same row (Tables 2 and 3, read from ``conf/experiment``),
and the mean wall time of a job (equal steps are not equal time: compare it only within one sweep).
Failed or unfinished jobs are counted per group, never dropped silently.
"""

import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datnet.runs.sweep import collect_jobs

REPO = Path(__file__).resolve().parents[2]
BASELINE = "maskrcnn"
# arm (conf/ablation/<arm>.yaml) -> the paper's row for it and the baseline row of the same table
PAPER_ROWS = {
    "maskrcnn": ("table2/maskrcnn", "table2/maskrcnn"),
    "dt": ("table2/dt", "table2/maskrcnn"),
    "seg": ("table2/seg", "table2/maskrcnn"),
    "dt_seg": ("table2/dt_seg", "table2/maskrcnn"),
    "mspwa_2fc": ("table3/mspwa_2fc", "table3/fpn_2fc"),
    "fpn_res5": ("table3/fpn_res5", "table3/fpn_2fc"),
    "mspwa_res5": ("table3/mspwa_res5", "table3/fpn_2fc"),
}
METRICS = ("val/bbox/AP", "val/bbox/AP50", "val/segm/AP", "val/rpn/AR@100")
DELTAS = ("bbox/AP", "segm/AP")


@dataclass
class Arm:
    """The jobs of one arm (same overrides but the seed) of one dataset's sweep."""

    dataset: str
    arm: str
    extra: str
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> METRICS
    seconds: list[float] = field(default_factory=list)  # wall time of each finished job
    unfinished: list[str] = field(default_factory=list)  # job directories that failed or did not finish


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["a=1", "+b=x"]`` -> ``{"a": "1", "b": "x"}``."""
    pairs = (item.lstrip("+~").split("=", 1) for item in overrides)
    return {key: value for key, value in pairs}


def collect_arms(root: Path) -> list[Arm]:
    """The arms of every sweep directory under ``root`` (a sweep directory itself, or a folder of them)."""
    sweeps = sorted(p.parent for p in root.glob("*/multirun.yaml"))
    if (root / "multirun.yaml").is_file():
        sweeps = [root]
    if not sweeps:
        raise FileNotFoundError(f"{root}: no Hydra sweep directory (with multirun.yaml) in or under it")
    arms: dict[tuple[str, str, str], Arm] = {}
    for sweep in sweeps:
        for job in collect_jobs(sweep):
            overrides = parse_overrides(job["overrides"])
            seed = int(overrides.pop("seed", 0))
            arm_name = overrides.pop("ablation", BASELINE)
            overrides.pop("experiment", None)
            extra = " ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
            arm = arms.setdefault((sweep.name, arm_name, extra), Arm(sweep.name, arm_name, extra))
            if job["status"] == "completed":
                arm.metrics[seed] = job["metrics"]
                arm.seconds.append(job_seconds(sweep / job["job"]))
            else:
                arm.unfinished.append(f"{sweep.name}/{job['job']} ({job['status']})")
    order = list(PAPER_ROWS)
    return sorted(
        arms.values(),
        key=lambda a: (a.dataset, a.extra, order.index(a.arm) if a.arm in order else len(order), a.arm),
    )


def job_seconds(job_dir: Path) -> float:
    """Wall time of a finished job: from its composed config to its metrics file."""
    start = (job_dir / ".hydra" / "config.yaml").stat().st_mtime
    return (job_dir / "metrics.json").stat().st_mtime - start


def summary(values: list[float]) -> dict[str, float]:
    """n, mean, sample standard deviation (0 for one value), min and max."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def paper_metrics(row: str, experiments: Path) -> dict[str, float]:
    """The ``paper.metrics`` of ``conf/experiment/<row>.yaml``."""
    return yaml.safe_load((experiments / f"{row}.yaml").read_text())["paper"]["metrics"]


def arm_report(arm: Arm, baseline: Arm | None, experiments: Path) -> dict[str, Any]:
    """Statistics of one arm: per metric over seeds, and per DELTAS key the paired difference to the
    baseline (seeds both finished), the seeds where the arm is ahead, and the paper's difference."""
    report: dict[str, Any] = {
        "dataset": arm.dataset,
        "arm": arm.arm,
        "extra": arm.extra,
        "seeds": sorted(arm.metrics),
        "unfinished": arm.unfinished,
        "seconds_per_job": statistics.fmean(arm.seconds) if arm.seconds else None,
        "metrics": {},
        "delta": {},
    }
    for key in METRICS:
        values = [m[key] for m in arm.metrics.values() if key in m]
        if values:
            report["metrics"][key] = summary(values)
    rows = PAPER_ROWS.get(arm.arm)
    for key in DELTAS:
        paper = None
        if rows and arm.arm != BASELINE:
            paper = paper_metrics(rows[0], experiments)[key] - paper_metrics(rows[1], experiments)[key]
        seeds = sorted(set(arm.metrics) & set(baseline.metrics)) if baseline and arm is not baseline else []
        diffs = [
            arm.metrics[s][f"val/{key}"] - baseline.metrics[s][f"val/{key}"]
            for s in seeds
            if f"val/{key}" in arm.metrics[s] and f"val/{key}" in baseline.metrics[s]
        ]
        entry: dict[str, Any] = {"paper": paper}
        if diffs:
            entry.update(summary(diffs), ahead=sum(d > 0 for d in diffs))
        report["delta"][key] = entry
    return report


def build_reports(root: Path, experiments: Path = REPO / "conf" / "experiment") -> list[dict[str, Any]]:
    """One report per arm of every dataset under ``root``; the baseline is the Mask R-CNN arm of the same
    dataset and extra overrides."""
    arms = collect_arms(root)
    baselines = {(a.dataset, a.extra): a for a in arms if a.arm == BASELINE}
    return [arm_report(a, baselines.get((a.dataset, a.extra)), experiments) for a in arms]


def percent(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{100 * value:{'+' if signed else ''}.1f}"


def mean_sd(stats: dict[str, float] | None, signed: bool = False) -> str:
    """``mean ± sd`` in %, ``-`` when missing."""
    if not stats:
        return "-"
    return f"{percent(stats['mean'], signed)} ± {100 * stats['sd']:.1f}"


def delta_cell(entry: dict[str, Any]) -> str:
    """``+1.2 ± 0.8 (2/3)``: paired mean difference ± sd, seeds ahead / seeds."""
    if "mean" not in entry:
        return "-"
    return f"{mean_sd(entry, signed=True)} ({entry['ahead']}/{entry['n']})"


def markdown(reports: list[dict[str, Any]]) -> str:
    """One table per dataset (and extra overrides); values in %, mean ± sample sd over seeds."""
    header = [
        "arm", "seeds", "box AP", "box AP50", "mask AP", "RPN AR@100",
        "Δ box AP (ahead)", "paper Δ box", "Δ mask AP (ahead)", "paper Δ mask", "min/job", "unfinished",
    ]
    out = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for report in reports:
        groups.setdefault((report["dataset"], report["extra"]), []).append(report)
    for (dataset, extra), group in groups.items():
        out.append(f"### {dataset}" + (f" ({extra})" if extra else ""))
        out += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in group:
            m, d = r["metrics"], r["delta"]
            cells = [
                r["arm"], str(len(r["seeds"])),
                *(mean_sd(m.get(k)) for k in METRICS),
                delta_cell(d["bbox/AP"]), percent(d["bbox/AP"]["paper"], signed=True),
                delta_cell(d["segm/AP"]), percent(d["segm/AP"]["paper"], signed=True),
                "-" if r["seconds_per_job"] is None else f"{r['seconds_per_job'] / 60:.1f}",
                str(len(r["unfinished"])),
            ]
            out.append("| " + " | ".join(cells) + " |")
        unfinished = [job for r in group for job in r["unfinished"]]
        if unfinished:
            out += ["", "Unfinished jobs: " + ", ".join(unfinished)]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="a sweep directory or a folder of them (logs/ablation)")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON line")
    args = parser.parse_args()
    reports = build_reports(args.root)
    text = markdown(reports)
    print(text)
    if args.output:
        args.output.write_text(text)
    if args.json:
        print(json.dumps(reports))


if __name__ == "__main__":
    main()
