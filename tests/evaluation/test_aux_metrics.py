"""The auxiliary heads' metrics: DT-bin accuracy and mean IoU, semantic mean IoU, ignore label excluded."""

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.multiprocessing import start_processes

from datnet.evaluation import AuxHeadMetrics
from datnet.evaluation.aux_metrics import predicted_labels
from datnet.models.build import build_auxiliary

IGNORE = 255


def one_hot_maps(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Softmax-like maps (C, H, W) whose argmax is ``labels``."""
    return F.one_hot(labels, classes).permute(2, 0, 1).float()


def hand_batch() -> tuple[list[dict], list[dict]]:
    """One 2x3 image; its DT confusion (target -> predicted, valid pixels): 0->0, 1->1, 2->1, 3->3, 1->2
    (a pixel predicted 0 is ignored); semantic: 0->0, 1->1, 1->2, 2->2, 2->2."""
    target = {
        "dt": torch.tensor([[0, 1, 2], [3, IGNORE, 1]], dtype=torch.uint8),
        "sem": torch.tensor([[0, 1, 1], [2, 2, IGNORE]], dtype=torch.uint8),
    }
    prediction = {
        "dt": one_hot_maps(torch.tensor([[0, 1, 1], [3, 0, 2]]), 4),
        "sem": one_hot_maps(torch.tensor([[0, 1, 2], [2, 2, 0]]), 3),
    }
    return [prediction], [target]


def test_metrics_of_a_hand_computed_confusion():
    metrics = AuxHeadMetrics(num_dt_bins=4, num_classes=3, ignore_index=IGNORE)
    metrics.update(*hand_batch())
    values = metrics.compute()
    # DT: 3 of 5 right; IoU per bin 1, 1/3 (1 tp, 1 fp, 1 fn), 0, 1
    assert values["aux/dt_acc"] == pytest.approx(3 / 5)
    assert values["aux/dt_miou"] == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    # semantic: IoU 1, 1/2 (1 tp, 1 fn), 2/3 (2 tp, 1 fp)
    assert values["aux/seg_miou"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    metrics.reset()
    metrics.update(*hand_batch())
    assert metrics.compute() == values  # reset forgets the first pass


def test_only_ignored_pixels_give_nan():
    metrics = AuxHeadMetrics(num_dt_bins=4, num_classes=None, ignore_index=IGNORE)
    prediction = {"dt": one_hot_maps(torch.zeros(2, 2, dtype=torch.long), 4)}
    metrics.update([prediction], [{"dt": torch.full((2, 2), IGNORE, dtype=torch.uint8)}])
    assert set(metrics.compute()) == {"aux/dt_acc", "aux/dt_miou"}
    assert math.isnan(metrics.compute()["aux/dt_miou"])


def test_stride4_maps_align_with_image_resolution_targets():
    """A 10x7 image's stride-4 maps are 3x2, upsampled x4 (bilinear) and cropped: a class boundary between
    cells falls between the pixels of those cells (rows 8 | 9 cover cell rows 1 | 2, columns 3 | 4 cell
    columns 0 | 1), not where resizing 3x2 to 10x7 would put it."""
    top_rows = torch.tensor([[1, 1], [1, 1], [0, 0]])
    left_column = torch.tensor([[1, 0], [1, 0], [1, 0]])
    expected = torch.zeros(10, 7, dtype=torch.long)
    expected[:8] = 1
    assert torch.equal(predicted_labels(one_hot_maps(top_rows, 2), (10, 7)), expected)
    expected = torch.zeros(10, 7, dtype=torch.long)
    expected[:, :4] = 1
    assert torch.equal(predicted_labels(one_hot_maps(left_column, 2), (10, 7)), expected)
    assert torch.equal(predicted_labels(one_hot_maps(top_rows, 2), (3, 2)), top_rows)
    # no integer stride between 2x2 and 3x5 (maps of an image the model resized itself): plain resizing
    expected = torch.zeros(3, 5, dtype=torch.long)
    expected[:, :2] = 1
    assert torch.equal(predicted_labels(one_hot_maps(left_column[:2], 2), (3, 5)), expected)


def test_metrics_follow_the_model_heads():
    def model(**aux) -> SimpleNamespace:
        return SimpleNamespace(auxiliary=build_auxiliary(5, channels=8, **aux))

    assert AuxHeadMetrics.for_model(model(dt=False, seg=False)) is None
    assert AuxHeadMetrics.for_model(model()).keys == ("dt", "sem")
    seg_only = AuxHeadMetrics.for_model(model(dt=False))
    assert seg_only.keys == ("sem",)
    prediction = {"sem": one_hot_maps(torch.tensor([[4, 0]]), 5)}
    seg_only.update([prediction], [{"sem": torch.tensor([[4, 0]], dtype=torch.uint8)}])
    assert seg_only.compute() == {"aux/seg_miou": 1.0}
    with pytest.raises(KeyError, match="no 'sem' map in the target"):
        seg_only.update([prediction], [{"dt": torch.zeros(1, 2, dtype=torch.uint8)}])


def _compute_on_rank(rank: int, init_file: Path, out_dir: Path) -> None:
    """Rank 0 adds the DT half of the hand batch's pixels it holds, rank 1 the rest (the semantic target
    only on rank 1); both compute."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        (prediction,), (target,) = hand_batch()
        columns = slice(0, 2) if rank == 0 else slice(2, 3)
        part = {key: value[..., columns] for key, value in target.items()}
        if rank == 0:
            part["sem"] = torch.full_like(part["sem"], IGNORE)
        metrics = AuxHeadMetrics(num_dt_bins=4, num_classes=3, ignore_index=IGNORE)
        metrics.update([{key: value[..., columns] for key, value in prediction.items()}], [part])
        (out_dir / f"rank{rank}.json").write_text(json.dumps(metrics.compute()))
    finally:
        dist.destroy_process_group()


def test_two_processes_sum_their_pixels(tmp_path: Path):
    """Under torch.distributed every rank gets the metrics of all ranks' pixels."""
    context = start_processes(
        _compute_on_rank, args=(tmp_path / "init", tmp_path), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 60
    while not context.join(timeout=0.2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("distributed auxiliary metrics did not finish within 60 s")
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert rank0 == rank1
    assert rank0["aux/dt_acc"] == pytest.approx(3 / 5)
    assert rank0["aux/dt_miou"] == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    # the semantic pixels of column 2 alone: target 1 -> 2 and an ignored one
    assert rank0["aux/seg_miou"] == pytest.approx(0.0)
