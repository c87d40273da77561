"""What the data modules set up in each loader worker process."""

from __future__ import annotations

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from datnet.data.datamodule import ShapesDataModule


class OpenCVThreads(Dataset):
    """Reports OpenCV's thread count in the process that loads the item; `transforms` as the worker
    initialisation expects of a dataset."""

    def __init__(self, transforms) -> None:
        self.transforms = transforms

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        cv2.resize(np.zeros((600, 800, 3), np.uint8), (1200, 900))  # runs on a pool if there is one
        return cv2.getNumThreads()


def test_workers_run_opencv_on_one_thread_even_after_the_parent_started_its_pool(tmp_path):
    """The training loader's worker initialisation makes OpenCV sequential; with a thread pool already
    running in the parent (forked into the worker without its threads) it must not hang either."""
    dm = ShapesDataModule(tmp_path / "s", num_train=4, num_val=2, num_workers=1, pin_memory=False)
    init = dm.train_dataloader().worker_init_fn
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    cv2.resize(np.zeros((600, 800, 3), np.uint8), (1200, 900))  # starts the parent's pool
    try:
        loader = DataLoader(
            OpenCVThreads(dm.dataset("train").transforms), num_workers=1, worker_init_fn=init, timeout=60
        )
        assert [int(n) for n in loader] == [1, 1]
    finally:
        cv2.setNumThreads(before)
    assert cv2.getNumThreads() == before
