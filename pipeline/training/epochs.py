"""Where the loop's batches come from: deterministic epochs with a resumable position, and the
set of data streams one rank reads (each update takes one micro-batch from each stream)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pipeline.training import distributed
from pipeline.training.batches import Batch


class EpochStream:
    """Batches of epoch 0, 1, 2, ... of a deterministic source, forever.

    ``make_epoch(e, k)`` gives the batches of epoch ``e`` from its ``k``-th on; the position
    (epoch, batch) is what a checkpoint stores, so a resumed run continues exactly.
    """

    def __init__(self, make_epoch: Callable[[int, int], Iterable[Batch]]) -> None:
        self.make_epoch = make_epoch
        self.epoch, self.index = 0, 0
        self._batches: Iterator[Batch] | None = None

    def __next__(self) -> Batch:
        for _ in range(2):  # the rest of this epoch, else the start of the next
            if self._batches is None:
                self._batches = iter(self.make_epoch(self.epoch, self.index))
            batch = next(self._batches, None)
            if batch is not None:
                self.index += 1
                return batch
            self.epoch, self.index, self._batches = self.epoch + 1, 0, None
        raise ValueError("the training data gives no batches (an empty split?)")

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self._batches = state["epoch"], state["index"], None


class StreamSet:
    """This rank's streams: of ``count`` streams, those ``k`` with ``k % world == rank``.

    ``next()`` gives one ``(k, batch)`` per own stream: the rank's micro-batches of an update.
    ``state()`` gathers every rank's positions (a collective under torchrun), so a checkpoint
    holds all streams and resumes on any number of ranks that divides ``count``.
    """

    def __init__(self, count: int, make: Callable[[int], EpochStream]) -> None:
        world, rank = distributed.world_size(), distributed.rank()
        if count % world:
            raise ValueError(
                f"train.streams = {count} cannot be split over {world} ranks: make it a multiple"
            )
        self.streams = {k: make(k) for k in range(rank, count, world)}

    def __next__(self) -> list[tuple[int, Batch]]:
        return [(k, next(stream)) for k, stream in self.streams.items()]

    def state(self) -> dict[str, dict[str, int]]:
        mine = {str(k): s.state() for k, s in self.streams.items()}
        return {k: v for part in distributed.gather(mine) for k, v in part.items()}

    def restore(self, state: dict[str, dict[str, int]]) -> None:
        for k, stream in self.streams.items():
            stream.restore(state[str(k)])


def single(make_epoch: Callable[[int, int], Iterable[Batch]]) -> StreamSet:
    """A stream set of one stream (pre-training, benchmarks)."""
    return StreamSet(1, lambda _: EpochStream(make_epoch))
