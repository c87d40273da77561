"""CocoEvaluator under a real 2-process gloo group on CPU: every image counted exactly once, on rank 0, and
the same metrics on every rank as in one process."""

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessRaisedException, start_processes

from datnet.evaluation import CocoEvaluator, coco_evaluator
from datnet.evaluation.distributed import all_gather_object, broadcast_from_rank0, gather_to_rank0

WORLD_SIZE = 2
TIMEOUT_S = 60


def _evaluate_shard(
    rank: int, init_file: Path, gt: dict, labels: dict, shards: list[list[tuple[int, dict]]], out_dir: Path
) -> None:
    """Process ``rank``: update with its shard, compute (gathering all shards on rank 0), save metrics and
    the images and records it holds afterwards."""
    torch.set_num_threads(1)  # as DataLoader workers: OpenMP thread pools do not survive fork
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        evaluator = CocoEvaluator(gt, labels, ("bbox", "segm"), evaluate_proposals=True)
        for image_id, prediction in shards[rank]:
            evaluator.update([prediction], [image_id])
        metrics = evaluator.compute()
        result = {
            "metrics": metrics,
            "image_ids": evaluator.image_ids,
            "records": len(evaluator.results("bbox")),
        }
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_distributed(
    tmp_path: Path, gt: dict, labels: dict, shards: list[list[tuple[int, dict]]]
) -> list[dict]:
    """Run ``_evaluate_shard`` in WORLD_SIZE forked processes (fork: this test module is not importable
    by name from a spawned interpreter under pytest's importlib mode); return each rank's output.
    Processes still running after TIMEOUT_S are killed and the test fails."""
    args = (tmp_path / "init", gt, labels, shards, tmp_path)
    context = start_processes(_evaluate_shard, args=args, nprocs=WORLD_SIZE, join=False, start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=0.2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail(f"distributed evaluation did not finish within {TIMEOUT_S} s")
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


@pytest.fixture
def five_images(hand_gt: dict, imperfect_predictions: Callable) -> tuple[dict, dict[int, dict]]:
    """The hand-built ground truth plus an empty image (5 images), with imperfect predictions."""
    hand_gt["images"].append({"id": 11, "height": 80, "width": 90})
    return hand_gt, imperfect_predictions(hand_gt, 3)


@pytest.mark.parametrize(
    ("rank_images", "images_per_round"),
    [(([1, 5, 11], [2, 7]), 256), (([1, 5, 11], [2, 7, 1]), 256), (([1, 5, 11], [2, 7]), 1)],
    ids=["uneven", "padded-with-identical-repeat", "one-image-per-gather-round"],
)
def test_two_processes_match_one(
    tmp_path: Path,
    five_images: tuple,
    label_to_category_id: dict,
    rank_images: tuple,
    images_per_round: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 0 ends with every image once, the other rank with none; both report one process's metrics."""
    monkeypatch.setattr(coco_evaluator, "GATHER_IMAGES_PER_ROUND", images_per_round)  # forked: inherited
    gt, predictions = five_images
    single = CocoEvaluator(gt, label_to_category_id, ("bbox", "segm"), evaluate_proposals=True)
    single.update(list(predictions.values()), list(predictions))
    expected = single.compute()
    shards = [[(image_id, predictions[image_id]) for image_id in images] for images in rank_images]
    rank0, rank1 = run_distributed(tmp_path, gt, label_to_category_id, shards)
    assert rank0["image_ids"] == [1, 2, 5, 7, 11] and rank1["image_ids"] == []
    assert rank0["records"] == len(single.results("bbox")) and rank1["records"] == 0
    assert rank0["metrics"] == rank1["metrics"] == expected
    assert 0 < expected["bbox/AP"] < 1 and 0 < expected["rpn/AR@100"] < 1


def test_conflicting_repeat_raises(tmp_path: Path, five_images: tuple, label_to_category_id: dict) -> None:
    """The same image with different predictions on two processes cannot be counted once: an error on
    every process (rank 0 finds it and tells the others), none left waiting."""
    gt, predictions = five_images
    changed = {**predictions[1], "scores": predictions[1]["scores"] * 0.5}
    shards = [[(1, predictions[1]), (5, predictions[5])], [(1, changed), (2, predictions[2])]]
    with pytest.raises(ProcessRaisedException, match="image 1 was evaluated more than once with different"):
        run_distributed(tmp_path, gt, label_to_category_id, shards)


def test_collectives_without_process_group() -> None:
    assert not dist.is_initialized()
    payload = {"a": torch.ones(2)}
    assert all_gather_object(payload) == [payload]
    assert broadcast_from_rank0(payload) is payload
    assert list(gather_to_rank0([1, 2, 3], 2)) == [1, 2, 3]
