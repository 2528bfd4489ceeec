"""A padded training batch: audio, cached teacher logits, targets and features, frame mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from pipeline.audio.frames import lengths_to_mask


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        ids: utterance ids, length B.
        wav: ``(B, S)`` float32 16 kHz audio, zero-padded.
        lengths: ``(B,)`` valid samples.
        targets: ``(B, T)`` int64 targets, 0 on padding.
        frame_mask: ``(B, T)`` True on valid frames.
        teacher_logits: ``(B, T, C)`` float32 decoded teacher logits, zero on padding (None
            where there is no teacher, as in pre-training).
        features: cached teacher features by name, each ``(B, T, D)`` float32, zero on padding.
    """

    ids: list[str]
    wav: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    frame_mask: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Valid frames (read on the CPU, before the batch moves to a device)."""
        return int(self.frame_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on ``device``."""
        move = {
            k: v.to(device, non_blocking=True) for k, v in vars(self).items() if torch.is_tensor(v)
        }
        feats = {k: v.to(device, non_blocking=True) for k, v in self.features.items()}
        return Batch(**{**vars(self), **move, "features": feats})


def collate(items: list[dict]) -> Batch:
    """Pad a list of dataset items into a :class:`Batch`."""
    lengths = torch.tensor([len(it["wav"]) for it in items])
    frame_lengths = torch.tensor([len(it["targets"]) for it in items])
    return Batch(
        ids=[it["id"] for it in items],
        wav=pad_sequence([it["wav"] for it in items], batch_first=True),
        lengths=lengths,
        teacher_logits=pad_sequence([it["logits"] for it in items], batch_first=True),
        targets=pad_sequence([it["targets"] for it in items], batch_first=True),
        frame_mask=lengths_to_mask(frame_lengths),
        features={
            name: pad_sequence([it["features"][name] for it in items], batch_first=True)
            for name in items[0].get("features", {})
        },
    )
