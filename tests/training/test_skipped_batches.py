"""Unreadable images never end a run (issue 13): through ``src/train.py``, the Lightning loop and loader
workers, a batch holding skipped items trains on the rest, a rank whose whole batch was skipped still takes
part in the backward and every collective, and the skips are counted per epoch (summed over the ranks, by
reason) and at validation."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from datnet.data.samplers import training_batch_sampler
from datnet.data.shapes import ensure_shapes

from .conftest import QUIET, TINY

REPO = Path(__file__).resolve().parents[2]

# the harness's tiny model on COCO-format data, read by a loader worker (it decodes the unreadable files)
RUN = [
    "experiment=demo",
    "data=coco",
    *(o for o in TINY if o != "data.num_workers=0"),
    "data.num_workers=1",
    *QUIET,
    "callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null",
]


def coco_dir(root: Path, num_train: int, num_val: int) -> tuple[Path, list[str]]:
    """A generated COCO directory and its training images' file names, in dataset order."""
    ensure_shapes(root, num_train=num_train, num_val=num_val)
    ann = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    return root, [image["file_name"] for image in ann["images"]]


def run_with_timeout(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Runs ``command`` from the repository root in its own process group, all of which is killed (DDP
    ranks, loader workers) if it has not ended within ``timeout`` seconds."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    with subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            message = f"still running after {timeout} s (a rank out of step?):\n{stderr[-3000:]}"
            raise AssertionError(message) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def metrics_line(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("METRICS ")][-1][8:])


def logged(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_one_epoch_over_unreadable_images_trains_on_the_rest(tmp_path, run_script):
    """6 training images, batches of 2, one loader worker: a truncated JPEG, a missing, an empty and a
    non-image file (a batch may hold nothing else); a CMYK JPEG and a 16-bit PNG are read. One of the two
    validation images is truncated too."""
    root, names = coco_dir(tmp_path / "coco", num_train=6, num_val=2)
    train_dir = root / "train2017"
    truncate(train_dir / names[1])
    (train_dir / names[3]).unlink()
    (train_dir / names[4]).write_bytes(b"")
    (train_dir / names[5]).write_text("not an image\n")
    Image.open(train_dir / names[0]).convert("CMYK").save(train_dir / names[0], format="JPEG")
    gray = np.asarray(Image.open(train_dir / names[2]).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(train_dir / names[2], format="PNG")  # a 16-bit PNG named .jpg
    truncate(root / "val2017" / "000002.jpg")
    run_dir = tmp_path / "run"
    out = run_script(
        "src/train.py",
        [
            *RUN,
            f"data.root={root}",
            "data.batch_size=2",
            "data.aspect_ratio_group_factor=-1",  # no aspect-ratio groups: every image once in the epoch
            "trainer.max_epochs=1",
            f"hydra.run.dir={run_dir}",
        ],
    )
    metrics = metrics_line(out.stdout)
    assert metrics["step"] == 3 and metrics["val/skipped"] == 1 and metrics["val/bbox/AP"] is not None
    assert logged(run_dir, "data/skipped") == [4]
    by_reason = {k: logged(run_dir, f"data/skipped/{k}") for k in ("missing", "empty", "unreadable")}
    assert by_reason == {"missing": [1], "empty": [1], "unreadable": [2]}
    log = out.stdout + out.stderr
    assert "epoch 0: rank 0 skipped 4 images" in log and all(names[k] in log for k in (1, 3, 4, 5))
    assert all(names[k] not in log for k in (0, 2))  # odd colour modes are read, not skipped


def test_ddp_rank_whose_whole_batch_is_skipped_keeps_in_step(tmp_path):
    """2 gloo ranks, one image per batch: rank 1's first image is truncated, so at step 0 rank 1 has nothing
    to train on while rank 0 trains; the run ends (no hang) with METRICS, the skip summed over the ranks."""
    root, names = coco_dir(tmp_path / "coco", num_train=4, num_val=2)
    # one image per batch: rank 1's batches follow its shard of the shuffled order, whatever the grouping
    first_of_rank1 = next(iter(training_batch_sampler([1.0] * len(names), 1, -1, rank=1, world_size=2)))[0]
    truncate(root / "train2017" / names[first_of_rank1])
    run_dir = tmp_path / "run"
    args = [
        *RUN,
        f"data.root={root}",
        "data.batch_size=1",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
    ]
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    out = run_with_timeout([sys.executable, "src/train.py", *args, *ddp], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert metrics_line(out.stdout)["step"] == 2
    assert logged(run_dir, "data/skipped") == [1] and logged(run_dir, "data/skipped/unreadable") == [1]
    rank1_log = (run_dir / "train_ddp_process_1.log").read_text()
    assert "epoch 0: rank 1 skipped 1 images" in rank1_log and names[first_of_rank1] in rank1_log
