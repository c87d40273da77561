"""Gathering of evaluation state across torch.distributed processes."""

from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


def all_gather_object(obj: T) -> list[T]:
    """Return ``obj`` from every process, ordered by rank (``[obj]`` when torch.distributed is not
    initialised). Collective: every process of the default group must call it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[T] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, obj)
    return gathered
