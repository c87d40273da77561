"""Collection of evaluation state on rank 0 and distribution of its outcome (torch.distributed).

Results go to rank 0 alone with ``gather_object``, in rounds of a bounded number of items, so that every
process pickles at most one round's items at a time and only rank 0 ever holds them all. No shared
filesystem is needed (per-rank files would need a directory every node can see); with NCCL the pickles
travel through the current CUDA device, as for any ``*_object`` collective.
"""

import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_object(obj: T) -> list[T]:
    """Return ``obj`` from every process, ordered by rank (``[obj]`` when torch.distributed is not
    initialised). Collective: every process of the default group must call it.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[T] = [None] * world_size  # type: ignore[list-item]
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_to_rank0(items: Sequence[T], items_per_round: int) -> Iterator[T]:
    """Yield on rank 0 the ``items`` of every process, round by round (at most ``items_per_round`` of each
    process per round) and by rank within a round; yield nothing on the other processes. Without
    torch.distributed (or with one process) the ``items`` themselves are yielded.

    Collective: every process must iterate it to the end.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        yield from items
        return
    rounds = max(all_gather_object(math.ceil(len(items) / items_per_round)))
    for index in range(rounds):
        chunk = list(items[index * items_per_round : (index + 1) * items_per_round])
        gathered: list[list[T]] | None = [[] for _ in range(world_size)] if rank == 0 else None
        dist.gather_object(chunk, gathered, dst=0)
        del chunk
        if gathered is not None:
            for part in gathered:
                yield from part


def broadcast_from_rank0(obj: T) -> T:
    """Return rank 0's ``obj`` on every process (``obj`` itself without torch.distributed). Collective."""
    if rank_and_world_size()[1] == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
