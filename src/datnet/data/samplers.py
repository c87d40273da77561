"""Batch samplers: aspect-ratio grouped training batches and exact-once inference shards, both DDP-aware.

The trainer runs with `use_distributed_sampler=False`, so sharding by rank happens here. Training shards with
`torch.utils.data.DistributedSampler` (padded to equal shard sizes, reshuffled by `set_epoch`, which Lightning
calls on `batch_sampler.sampler`) and then groups each rank's indices by aspect ratio like torchvision's
detection references, so every batch is all-landscape or all-portrait and padding is small.

`ResumableLoader` makes the training loader's position in its epoch part of the checkpoint, through
Lightning's own mechanism for stateful loaders (the fit loop saves `state_dict()` of every training loader
that has one and gives it back with `load_state_dict()` before the resumed epoch starts): a run resumed
mid-epoch sees the rest of the interrupted epoch's batches, none twice and none skipped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

log = logging.getLogger(__name__)


def aspect_ratio_groups(aspect_ratios: Sequence[float], group_factor: int) -> np.ndarray:
    """Group id per image from its aspect ratio (width / height), as the factor `k` of torchvision references'
    `create_aspect_ratio_groups`: k > 0 quantises into 2k+1 log-spaced bins around 1; k = 0 gives two groups,
    landscape (0) and portrait or square (1): maskrcnn-benchmark's `DATALOADER.ASPECT_RATIO_GROUPING` (the
    paper's code; torchvision's k = 0 puts squares with the landscapes instead); k < 0 puts all images in one
    group (no grouping)."""
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    if group_factor < 0:
        return np.zeros(len(ratios), dtype=np.int64)
    if group_factor == 0:
        return (ratios <= 1).astype(np.int64)
    bins = 2 ** np.linspace(-1, 1, 2 * group_factor + 1)
    return np.digitize(ratios, bins).astype(np.int64)


class GroupedBatchSampler(BatchSampler):
    """Yields batches of `batch_size` indices from `sampler` whose `group_ids` agree.

    Exactly `len(sampler) // batch_size` batches per epoch (drop-last), so all ranks of a DDP run take the
    same number of steps; indices left in partially filled groups at the end are completed from their group.
    The batches depend only on the sampler's order (for `DistributedSampler`: seed, epoch, rank and number of
    ranks), so `skip` batches of an epoch can be passed over without loading them (a resumed epoch).
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        super().__init__(sampler, batch_size, drop_last=True)
        self.group_ids = np.asarray(group_ids)
        self.skip = 0  # batches of the next epoch to pass over: set by `ResumableLoader.load_state_dict`

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for k, batch in enumerate(self._batches()):
            if k >= skip:
                yield batch

    def _batches(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        seen: dict[int, list[int]] = defaultdict(list)
        emitted = 0
        for idx in self.sampler:
            group = int(self.group_ids[idx])
            buffers[group].append(idx)
            seen[group].append(idx)
            if len(buffers[group]) == self.batch_size:
                yield buffers.pop(group)
                emitted += 1
        # the largest leftover groups, completed with the group's earlier indices (torchvision-style padding);
        # there are always more non-empty leftover groups than missing batches
        for group, buf in sorted(buffers.items(), key=lambda kv: -len(kv[1]))[: len(self) - emitted]:
            in_buf = set(buf)
            fill = buf + [i for i in seen[group] if i not in in_buf]
            yield [fill[k % len(fill)] for k in range(self.batch_size)]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


class ResumableLoader(DataLoader):
    """The training `DataLoader` whose position in the epoch is saved in checkpoints and restored on resume.

    It counts the batches it has handed to the training loop in the current epoch (not those its workers have
    prefetched); `state_dict()` is that count with its epoch, the shuffling seed, the number of ranks and the
    batch size, and `load_state_dict()` makes the next epoch of the same number pass over that many batches
    without loading them. Lightning calls both (``FitLoop.on_save_checkpoint`` and
    ``_load_combined_loader_states``, for any loader with these two methods) and keeps counting the resumed
    epoch's batches from the saved position, so the epoch still ends after `len(self)` batches.

    Exact with the run's number of ranks and batch size: every rank rebuilds its shard of the epoch (a
    function of seed, epoch, rank and number of ranks) and continues after the batches already trained on.
    With another number of ranks the epoch's permutation is the same but it is sharded differently, so the
    rest of the interrupted epoch is each new rank's shard after the saved position: some of that epoch's
    images are seen twice and others not at all (reported when the state is loaded); the following epochs
    are whole. The skip applies only to the saved epoch: a checkpoint written when its epoch was over (the
    loop has moved on and set the next epoch) starts the next epoch from its beginning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, GroupedBatchSampler) or not isinstance(
            self.batch_sampler.sampler, DistributedSampler
        ):
            raise TypeError("ResumableLoader needs a GroupedBatchSampler over a DistributedSampler")
        self._epoch, self._yielded = self.batch_sampler.sampler.epoch, 0  # the batches of that epoch so far
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        sampler = self.batch_sampler.sampler
        resume, self._resume = self._resume, None
        self._epoch, self._yielded = sampler.epoch, 0
        if resume is not None and resume["epoch"] == sampler.epoch:
            self.batch_sampler.skip = self._yielded = resume["batches"]
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler.sampler
        return {
            "epoch": self._epoch,
            "seed": sampler.seed,
            "batches": self._yielded,
            "num_replicas": sampler.num_replicas,
            "batch_size": self.batch_sampler.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        sampler = self.batch_sampler.sampler
        changed = {
            key: (state_dict[key], now)
            for key, now in (
                ("seed", sampler.seed),
                ("num_replicas", sampler.num_replicas),
                ("batch_size", self.batch_sampler.batch_size),
            )
            if state_dict[key] != now
        }
        if changed:
            log.warning(
                "the interrupted epoch %d continues after batch %d, but %s changed since it was saved "
                "(saved, now): its order differs, so some of its images are seen twice and others not at all "
                "in that epoch; the following epochs are whole",
                state_dict["epoch"],
                state_dict["batches"],
                ", ".join(f"{key} {value}" for key, value in changed.items()),
            )
        self._resume = {"epoch": state_dict["epoch"], "batches": state_dict["batches"]}
        sampler.set_epoch(state_dict["epoch"])
        log.info(
            "training data: epoch %d resumes after its first %d batches (of %d%s)",
            state_dict["epoch"],
            state_dict["batches"],
            len(self),
            ": it was over, the next epoch starts from its beginning"
            if state_dict["batches"] >= len(self)
            else "",
        )


def training_batch_sampler(
    aspect_ratios: Sequence[float],
    batch_size: int,
    group_factor: int,
    rank: int,
    world_size: int,
    seed: int = 0,
) -> GroupedBatchSampler:
    """Shuffled, rank-sharded, aspect-ratio grouped training batches."""
    sampler = DistributedSampler(
        range(len(aspect_ratios)),
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=False,
    )
    return GroupedBatchSampler(sampler, aspect_ratio_groups(aspect_ratios, group_factor), batch_size)


class InferenceSampler(Sampler[int]):
    """Contiguous shard of range(size) for one rank (detectron2's InferenceSampler): every index is visited
    exactly once over all ranks, with no padding duplicates; shard sizes differ by at most one."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        shard, extra = divmod(size, world_size)
        self.begin = rank * shard + min(rank, extra)
        self.end = self.begin + shard + (rank < extra)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
