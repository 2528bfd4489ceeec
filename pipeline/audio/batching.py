"""Length bucketing shared by stage one (teacher batches) and stage two (student batches)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def length_batches(
    items: list[T],
    seconds: Callable[[T], float],
    batch_seconds: float,
    sort_key: Callable[[T], Any] | None = None,
) -> list[list[T]]:
    """Sort ``items`` (by ``sort_key``, default their length) and cut them into batches whose
    padded audio, ``len(batch) * longest``, stays within ``batch_seconds``; a batch always holds
    at least one item, so ``batch_seconds = 0`` gives one item per batch."""
    batches: list[list[T]] = []
    batch: list[T] = []
    longest = 0.0
    for item in sorted(items, key=sort_key or seconds):
        length = max(longest, seconds(item))
        if batch and (len(batch) + 1) * length > batch_seconds:
            batches.append(batch)
            batch, length = [], seconds(item)
        batch.append(item)
        longest = length
    if batch:
        batches.append(batch)
    return batches
