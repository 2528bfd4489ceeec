"""A padded training batch: audio, cached teacher logits, targets and features, frame mask."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from pipeline.nn.frames import lengths_to_mask
from storage.codecs import Codec, repair_argmax


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        ids: utterance ids, length B.
        wav: ``(B, S)`` float32 16 kHz audio, zero-padded.
        lengths: ``(B,)`` valid samples.
        targets: ``(B, T)`` int64 targets, 0 on padding.
        frame_mask: ``(B, T)`` True on valid frames.
        teacher_logits: ``(B, T, C)`` float32 teacher logits, zero on padding, once decoded
            where the student trains (:meth:`decode_teacher`); None before, and where there is
            no teacher (pre-training).
        teacher_fields: the cached, still encoded logits by field (``(B, T, ...)``, as the
            cache's codec stores them), until decoded.
        features: cached teacher features by name, each ``(B, T, D)`` float32, zero on padding.
    """

    ids: list[str]
    wav: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    frame_mask: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    teacher_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Valid frames (read on the CPU, before the batch moves to a device)."""
        return int(self.frame_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on ``device`` (copied without blocking: from pinned
        memory, the copy overlaps the device's work)."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (what ``DataLoader(pin_memory=True)`` calls)."""
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn) -> Batch:
        def apply(v):
            if isinstance(v, dict):
                return {k: fn(t) for k, t in v.items()}
            return fn(v) if torch.is_tensor(v) else v

        return Batch(**{k: apply(v) for k, v in vars(self).items()})

    def decode_teacher(self, codec: Codec, argmax_targets: bool) -> Batch:
        """The batch with ``teacher_logits`` decoded from ``teacher_fields`` by ``codec``, where
        the fields are (the student's device: one gather and matmul for a batch); each frame's
        argmax restored from its target when the targets are the teacher's argmax."""
        if not self.teacher_fields:
            return self
        logits = codec.decode(self.teacher_fields)
        if argmax_targets:
            logits = repair_argmax(logits, self.targets)
        logits = logits * self.frame_mask[..., None]
        return dataclasses.replace(self, teacher_logits=logits, teacher_fields={})


def teacher_decoder(
    codec: Codec, argmax_targets: bool, device: torch.device
) -> Callable[[Batch], Batch]:
    """What makes a streamed batch trainable: moved to ``device``, teacher logits decoded there."""
    return lambda batch: batch.to(device).decode_teacher(codec, argmax_targets)


def collate(items: list[dict]) -> Batch:
    """Pad a list of dataset items into a :class:`Batch`."""
    lengths = torch.tensor([len(it["wav"]) for it in items])
    frame_lengths = torch.tensor([len(it["targets"]) for it in items])
    return Batch(
        ids=[it["id"] for it in items],
        wav=pad_sequence([it["wav"] for it in items], batch_first=True),
        lengths=lengths,
        targets=pad_sequence([it["targets"] for it in items], batch_first=True),
        teacher_fields={
            name: pad_sequence([it["teacher"][name] for it in items], batch_first=True)
            for name in items[0]["teacher"]
        },
        frame_mask=lengths_to_mask(frame_lengths),
        features={
            name: pad_sequence([it["features"][name] for it in items], batch_first=True)
            for name in items[0].get("features", {})
        },
    )
