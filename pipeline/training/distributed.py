"""Data-parallel training under ``torchrun``: process group, rank, device, collectives.

One process is rank 0 of a world of 1 and every helper is then a no-op, so the training loop
reads the same with and without DistributedDataParallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pipeline.core.device import resolve_device
from pipeline.core.errors import OutputError
from pipeline.core.locks import output_lock


def setup(device: str, key: str, timeout: float = 600.0) -> torch.device:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1) and return this
    rank's device: ``cuda`` becomes ``cuda:<LOCAL_RANK>``; nccl on CUDA, gloo on the CPU. A
    collective that waits more than ``timeout`` seconds for a rank fails the run."""
    resolved = resolve_device(device, key)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return resolved


@contextmanager
def main_lock(path: Path) -> Iterator[None]:
    """Rank 0 holds the one-writer lock of output ``path``; every rank learns at once whether
    it got it, so a refusal stops all of them with rank 0's message (none waits in a
    collective for a rank that has left).

    Raises:
        OutputError: another run writes ``path`` (on every rank).
    """
    with ExitStack() as held:
        refused = None
        if is_main():
            try:
                held.enter_context(output_lock(path))
            except OutputError as err:
                refused = str(err)
        refused = broadcast(refused)
        if refused is not None:
            raise OutputError(refused)
        yield


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown() -> None:
    """Leave the process group, if in one (at the end of a run under torchrun)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (in place; on the device, no host sync)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order."""
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when in a process group (else as is)."""
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
