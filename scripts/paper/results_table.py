"""The paper's tables with our numbers beside them, from finished runs (markdown).

    python scripts/paper/results_table.py logs/train            # every run and sweep job under a logs root
    python scripts/paper/results_table.py RUN_DIR SWEEP_DIR ... --output results.md
    python scripts/paper/results_table.py logs/train --table7 table7.json  # + Table 7 from `table7.py --json`

A run is a directory with ``.hydra/config.yaml`` and/or ``metrics.json`` (sweep jobs are found under their
sweep directory). A run whose config has a ``paper`` field (``conf/experiment/table*/``) belongs to a row of
its table: each row shows the paper's numbers, then one line per run of that row (``-`` if none yet).
Rows of other papers (PANet) are listed as comparison. Runs without ``paper`` go to an "Other runs" table.
Numbers are in %, 1 decimal, like the paper; Tables 2-4 show box/mask pairs as the paper does.
"""

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datnet.paper_tables import TABLE7
from datnet.runs.job_process import FAILED_FILE
from datnet.runs.sweep import METRICS_FILE

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "conf" / "experiment"
AP = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
AR = ("AR@100", "AR_S@100", "AR_M@100", "AR_L@100", "AR@1000", "AR_S@1000", "AR_M@1000", "AR_L@1000")
BOX_MASK = [(t, k) for t in ("bbox", "segm") for k in AP]
PAIRED = [(f"{k}/{k}^M", (f"bbox/{k}", f"segm/{k}")) for k in AP]
# table -> (caption, [(column header, metric keys shown in the cell, joined by "/")])
LAYOUTS: dict[int, tuple[str, list[tuple[str, tuple[str, ...]]]]] = {
    1: (
        "Table 1. Box and mask AP (paper: COCO test-dev; ours: the split of METRICS)",
        [(k, (f"bbox/{k}",)) for k in AP] + [(f"{k}^M", (f"segm/{k}",)) for k in AP],
    ),
    2: ("Table 2. Auxiliary image heads, Mask R-CNN pooling and ROI heads (COCO 2017 val)", PAIRED),
    3: ("Table 3. Pooler x box feature extractor, w1 = w2 = 0 (COCO 2017 val)", PAIRED),
    4: ("Table 4. Training settings and ROI heads (COCO 2017 val)", PAIRED),
    5: ("Table 5. RPN proposal recall (COCO 2017 val)", [(k, (f"rpn/{k}",)) for k in AR]),
    6: ("Table 6. Pascal VOC 2007 test, box-proxy masks", [(k, (f"bbox/{k}",)) for k in AP[:3]]),
}
# Rows of other papers, not runnable here: (table, index, row, metrics).
PANET = [
    (1, 1, "PANet [21] ResNet-50", "41.2 60.4 44.4 22.7 44.0 54.6 36.6 58.0 39.3 16.3 38.1 53.1"),
    (1, 2, "PANet (MST) [21] ResNet-50", "42.5 62.3 46.4 26.3 47.0 52.3 38.2 60.2 41.4 19.1 41.1 52.6"),
    (1, 10, "PANet [21] X101-64x4d", "45.0 65.0 48.6 25.4 48.6 59.1 40.0 62.8 43.1 18.8 42.3 57.2"),
    (1, 11, "PANet (MST) [21] X101-64x4d", "47.4 67.2 51.8 30.1 51.7 60.0 42.0 65.1 45.7 22.4 44.7 58.1"),
]
OTHER_KEYS = ("val/bbox/AP", "val/segm/AP", "val/rpn/AR@100", "val/rpn/AR@1000")


@dataclass
class Run:
    """A run: where it is, its ``paper`` field, overrides, METRICS and status: ``finished`` (METRICS
    written), ``failed`` (``failed.json`` written, by a single run or a sweep job; its ``error``) or
    ``unfinished`` (neither: still running, or stopped without a trace)."""

    path: Path
    paper: dict[str, Any] | None
    overrides: list[str]
    metrics: dict[str, Any]
    status: str = "finished"
    error: str = ""


@dataclass
class Row:
    """A row of a paper table: the paper's numbers and the runs that reproduce it."""

    table: int
    index: int
    name: str
    paper: dict[str, float]
    runs: list[Run] = field(default_factory=list)
    runnable: bool = True


def read_yaml(path: Path) -> Any:
    """The YAML file's content, None when it does not exist."""
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_run(path: Path) -> Run:
    """The run in directory ``path`` (missing files read as empty); failed when it has a ``failed.json``,
    even if a rank got as far as its METRICS."""
    config = read_yaml(path / ".hydra" / "config.yaml") or {}
    metrics_file, failed_file = path / METRICS_FILE, path / FAILED_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    run = Run(path, config.get("paper"), read_yaml(path / ".hydra" / "overrides.yaml") or [], metrics)
    if failed_file.is_file():
        run.status, run.error = "failed", json.loads(failed_file.read_text()).get("error", "")
        run.metrics = {}
    elif not metrics:
        run.status = "unfinished"
    return run


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run directory in or under ``paths`` (run dirs, sweep dirs or a logs root), sorted by path."""
    found: set[Path] = set()
    for root in paths:
        found.update(p.parent.parent for p in root.glob("**/.hydra/config.yaml"))
        found.update(p.parent for p in root.glob("**/metrics.json"))
    return [load_run(p) for p in sorted(found)]


def experiment_rows(experiments: Path = EXPERIMENTS) -> dict[tuple[int, str], Row]:
    """The paper's rows from the experiment files (``paper`` field), so that rows not run yet show too,
    and the rows of other papers (PANet)."""
    rows = {}
    for file in sorted(experiments.glob("table*/*.yaml")):
        paper = (read_yaml(file) or {}).get("paper")
        if paper:
            rows[(paper["table"], paper["row"])] = row_from_paper(paper)
    for table, index, name, numbers in PANET:
        metrics = {f"{t}/{k}": float(v) / 100 for (t, k), v in zip(BOX_MASK, numbers.split())}
        rows[(table, name)] = Row(table, index, name, metrics, runnable=False)
    return rows


def row_from_paper(paper: dict[str, Any]) -> Row:
    """A row from a config's ``paper`` field."""
    return Row(int(paper["table"]), int(paper.get("index", 0)), str(paper["row"]), dict(paper["metrics"]))


def assign_runs(runs: list[Run], rows: dict[tuple[int, str], Row]) -> list[Run]:
    """Attaches each run with a ``paper`` field to its row (a new row when the experiment files lack it);
    returns the runs without one."""
    others = []
    for run in runs:
        if not run.paper:
            others.append(run)
            continue
        key = (int(run.paper["table"]), str(run.paper["row"]))
        rows.setdefault(key, row_from_paper(run.paper)).runs.append(run)
    return others


def percent(value: Any) -> str:
    """A fraction as % with 1 decimal, ``-`` when missing."""
    return "-" if value is None else f"{100 * float(value):.1f}"


def cell(metrics: dict[str, Any], keys: tuple[str, ...], prefix: str = "") -> str:
    """The metrics ``prefix + key`` for ``keys`` in %, joined by "/" (the paper's box/mask pairs)."""
    values = [metrics.get(prefix + k) for k in keys]
    return "-" if all(v is None for v in values) else "/".join(percent(v) for v in values)


def run_label(run: Run) -> str:
    """The run's directory, shortened to its last two parts (``<date>/<job>``)."""
    return "/".join(run.path.parts[-2:])


def status_note(run: Run) -> str:
    """`` (failed: <error>)`` or `` (unfinished)`` after a run's label; nothing for a finished run."""
    if run.status == "failed":
        error = run.error.splitlines()[0] if run.error else "see failed.json"
        return f" (failed: {error.replace('|', '/')[:120]})"
    return " (unfinished)" if run.status == "unfinished" else ""


def markdown(header: list[str], lines: list[list[str]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def render_table(table: int, rows: list[Row]) -> str:
    """One paper table: per row the paper's line, then a line per run (``-`` for a row not run yet)."""
    caption, columns = LAYOUTS.get(table, (f"Table {table}", [(k, (k,)) for k in sorted(rows[0].paper)]))
    lines = []
    for row in sorted(rows, key=lambda r: (r.index, r.name)):
        lines.append([row.name, "paper" if row.runnable else "paper (other work)"])
        lines[-1] += [cell(row.paper, keys) for _, keys in columns]
        if row.runnable and not any(run.status == "finished" for run in row.runs):
            lines.append(["", "ours (not run)"] + ["-"] * len(columns))
        for run in row.runs:
            cells = [cell(run.metrics, keys, "val/") for _, keys in columns]
            lines.append(["", f"ours `{run_label(run)}`{status_note(run)}", *cells])
    return f"### {caption}\n\n" + markdown(["Row", "Source", *(h for h, _ in columns)], lines)


def render_others(runs: list[Run]) -> str:
    """Runs without a ``paper`` field: their overrides and headline metrics."""
    lines = [
        [
            f"`{run_label(r)}`{status_note(r)}",
            " ".join(r.overrides),
            *(percent(r.metrics.get(k)) for k in OTHER_KEYS),
        ]
        for r in runs
    ]
    return "### Other runs\n\n" + markdown(["Run", "Overrides", *OTHER_KEYS], lines)


def render_table7(rows: list[dict[str, Any]]) -> str:
    """Table 7 from ``scripts/paper/table7.py --json`` rows beside the paper's (P100) time and parameters."""
    lines = []
    for row in rows:
        paper_ms, paper_params = TABLE7.get((row["model"], row["backbone"]), (None, None))
        paper_base = TABLE7.get(("maskrcnn", row["backbone"]), (None, None))[0]
        ratio = row.get("ratio_to_maskrcnn")
        lines.append(
            [
                row["model"],
                row["backbone"],
                row["device"],
                f"{row['ms_per_image']:.0f}",
                "-" if ratio is None else f"{ratio:.2f}",
                f"{row['params'] / 1e6:.1f}",
                "-" if paper_ms is None else str(paper_ms),
                "-" if not (paper_ms and paper_base) else f"{paper_ms / paper_base:.2f}",
                "-" if paper_params is None else f"{paper_params:.1f}",
            ]
        )
    header = ["Model", "Backbone", "Device", "ms", "x Mask R-CNN", "Params (M)"]
    header += ["paper ms", "paper x", "paper M"]
    return "### Table 7. Inference time per image and parameters (paper: P100)\n\n" + markdown(header, lines)


def results_markdown(
    paths: list[Path], experiments: Path = EXPERIMENTS, table7: list[dict[str, Any]] | None = None
) -> str:
    """Every table, in order: the paper's rows with the runs found under ``paths``, then other runs."""
    rows = experiment_rows(experiments)
    others = assign_runs(find_runs(paths), rows)
    tables = sorted({r.table for r in rows.values()})
    parts = [render_table(t, [r for r in rows.values() if r.table == t]) for t in tables]
    if table7 is not None:
        parts.append(render_table7(table7))
    if others:
        parts.append(render_others(others))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: prints the tables, and writes them to ``--output``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or a logs root")
    parser.add_argument("--output", type=Path, help="also write the markdown to this file")
    parser.add_argument("--table7", type=Path, help="JSON rows from `scripts/paper/table7.py --json`")
    parser.add_argument(
        "--experiments", type=Path, default=EXPERIMENTS, help="experiment configs (the paper's rows)"
    )
    args = parser.parse_args(argv)
    table7 = json.loads(args.table7.read_text()) if args.table7 else None
    text = results_markdown(args.paths, args.experiments, table7)
    print(text, end="")
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
