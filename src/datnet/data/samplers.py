"""Batch samplers: aspect-ratio grouped training batches and exact-once inference shards, both DDP-aware.

The trainer runs with `use_distributed_sampler=False`, so sharding by rank happens here. Training shards with
`torch.utils.data.DistributedSampler` (padded to equal shard sizes, reshuffled by `set_epoch`, which Lightning
calls on `batch_sampler.sampler`) and then groups each rank's indices by aspect ratio like torchvision's
detection references, so every batch is all-landscape or all-portrait and padding is small.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import BatchSampler, DistributedSampler, Sampler


def aspect_ratio_groups(aspect_ratios: Sequence[float], group_factor: int) -> np.ndarray:
    """Group id per image: aspect ratios quantised into 2*group_factor+1 log-spaced bins around 1 (torchvision
    references' `create_aspect_ratio_groups`); group_factor <= 0 puts all images in one group."""
    if group_factor <= 0:
        return np.zeros(len(aspect_ratios), dtype=np.int64)
    bins = 2 ** np.linspace(-1, 1, 2 * group_factor + 1)
    return np.digitize(np.asarray(aspect_ratios, dtype=np.float64), bins).astype(np.int64)


class GroupedBatchSampler(BatchSampler):
    """Yields batches of `batch_size` indices from `sampler` whose `group_ids` agree.

    Exactly `len(sampler) // batch_size` batches per epoch (drop-last), so all ranks of a DDP run take the
    same number of steps; indices left in partially filled groups at the end are completed from their group.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        super().__init__(sampler, batch_size, drop_last=True)
        self.group_ids = np.asarray(group_ids)

    def __iter__(self) -> Iterator[list[int]]:
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
