"""HuBERT first-iteration pre-training: masked prediction of MFCC k-means clusters.

The recipe of HuBERT's first iteration at a size two CPU cores can train: k-means on MFCC +
deltas gives each 20 ms frame a cluster; spans of frames are masked (a span starts at each frame
with probability ``mask_prob / mask_length``, ``mask_length`` frames long) and replaced by the
learnt mask embedding; the cosine cluster head predicts the cluster of every masked frame.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import HubertModel

from pipeline.audio.batching import length_batches
from pipeline.audio.files import read_audio
from pipeline.audio.frames import FrameSpec, lengths_to_mask
from pipeline.core.config import check, non_negative, positive
from pipeline.corpus.manifest import Utterance, audio_path
from pipeline.teacher.head import ClusterHead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain_teacher`` section of params.yaml (the model size is ``model``).

    Attributes:
        kmeans_utterances: train utterances (evenly spaced) whose MFCC frames fit k-means.
        steps: optimizer updates.
        batch_seconds: padded audio per batch.
        lr: peak AdamW learning rate (linear warm-up, then linear decay to 0).
        warmup_steps: warm-up updates.
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm.
        mask_prob: share of frames that start a masked span, times ``mask_length`` (HuBERT: 0.8).
        mask_length: frames per masked span (HuBERT: 10).
        unmasked_weight: weight of the loss on unmasked frames (fairseq's ``pred_nomask_weight``;
            HuBERT Base: 0). Above 0 it gives a short run an easier signal to start from.
        threads: torch intra-op threads.
        checkpoint_every: updates between resumable checkpoints.
    """

    kmeans_utterances: int
    steps: int
    batch_seconds: float
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    mask_prob: float
    mask_length: int
    unmasked_weight: float
    threads: int
    checkpoint_every: int

    def __post_init__(self) -> None:
        positive(self, "kmeans_utterances", "steps", "mask_length", "batch_seconds", "lr",
                 "grad_clip", "threads", "checkpoint_every")  # fmt: skip
        non_negative(self, "warmup_steps", "weight_decay", "unmasked_weight")
        check(0 < self.mask_prob < 1, "mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        check(self.warmup_steps <= self.steps, "warmup_steps", "must be <= steps")


def span_mask(lengths: torch.Tensor, prob: float, span: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, T)`` boolean mask: per utterance of ``n`` frames, ``round(prob * n / span)`` spans
    (at least one) of ``span`` frames at distinct random starts; spans may overlap."""
    mask = torch.zeros(len(lengths), int(lengths.max()), dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        starts_max = max(1, n - span + 1)
        count = min(starts_max, max(1, round(prob * n / span)))
        for start in torch.randperm(starts_max, generator=gen)[:count].tolist():
            mask[i, start : min(n, start + span)] = True
    return mask


class MaskedPredictor(torch.nn.Module):
    """A HuBERT encoder and its cluster head trained on masked frames."""

    def __init__(self, encoder: HubertModel, head: ClusterHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        hcfg = encoder.config
        self.frames = FrameSpec(tuple(hcfg.conv_kernel), tuple(hcfg.conv_stride))

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Zero-padded ``wav (B, S)`` -> logits ``(B, T, C)``; masked frames get the mask
        embedding before the Transformer."""
        samples = lengths_to_mask(lengths, wav.shape[1]).long()
        out = self.encoder(wav, attention_mask=samples, mask_time_indices=mask)
        return self.head(out.last_hidden_state)


@dataclass
class Example:
    """A train utterance and its MFCC cluster labels."""

    utt: Utterance
    labels: torch.Tensor


def batches(
    examples: list[Example], batch_seconds: float, epoch: int, seed: int
) -> Iterator[list[Example]]:
    """Length-bucketed batches in a seeded order that changes every epoch."""
    groups = length_batches(examples, lambda e: e.utt.seconds, batch_seconds)
    random.Random(seed * 100_003 + epoch).shuffle(groups)
    yield from groups


def load_batch(
    group: list[Example], manifest: Path
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Audio ``(B, S)`` zero-padded, sample lengths ``(B,)``, labels ``(B, T)`` padded with -1."""
    wavs = [read_audio(audio_path(e.utt, manifest)) for e in group]
    lengths = torch.tensor([len(w) for w in wavs])
    labels = pad_sequence([e.labels.long() for e in group], batch_first=True, padding_value=-1)
    return pad_sequence(wavs, batch_first=True), lengths, labels


def masked_loss(
    model: MaskedPredictor, wav, lengths, labels, mask, unmasked_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the masked frames (plus ``unmasked_weight`` times that over the
    unmasked ones) and the accuracy on masked frames; padding never counts."""
    logits = model(wav, lengths, mask)
    keep = mask & (labels >= 0)
    loss = F.cross_entropy(logits[keep], labels[keep])
    if unmasked_weight:
        rest = ~mask & (labels >= 0)
        loss = loss + unmasked_weight * F.cross_entropy(logits[rest], labels[rest])
    accuracy = (logits[keep].argmax(-1) == labels[keep]).float().mean()
    return loss, accuracy


@torch.inference_mode()
def evaluate(
    model: MaskedPredictor,
    examples: list[Example],
    manifest: Path,
    cfg: PretrainConfig,
    seed: int,
) -> dict[str, float]:
    """Agreement of the model's argmax with the MFCC k-means labels on held-out utterances:
    on masked frames (the training task) and with no mask (what the teacher cache stores),
    beside the majority-class rate (what always guessing the commonest cluster scores)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    hits = {"masked": 0, "unmasked": 0}
    counts = {"masked": 0, "unmasked": 0}
    all_labels = []
    for group in length_batches(examples, lambda e: e.utt.seconds, cfg.batch_seconds):
        wav, lengths, labels = load_batch(group, manifest)
        frame_lengths = model.frames.num_frames(lengths)
        valid = labels >= 0
        mask = span_mask(frame_lengths, cfg.mask_prob, cfg.mask_length, gen) & valid
        for name, m in (("masked", mask), ("unmasked", None)):
            pred = model(wav, lengths, m).argmax(-1)
            sel = mask if name == "masked" else valid
            hits[name] += int((pred[sel] == labels[sel]).sum())
            counts[name] += int(sel.sum())
        all_labels.append(labels[valid])
    labels = torch.cat(all_labels)
    majority = torch.bincount(labels).max().item() / len(labels)
    return {
        "masked_accuracy": hits["masked"] / max(1, counts["masked"]),
        "unmasked_accuracy": hits["unmasked"] / max(1, counts["unmasked"]),
        "majority_class_rate": majority,
        "frames": len(labels),
    }


def label_frames(features: list[np.ndarray], centroids: np.ndarray) -> list[torch.Tensor]:
    """Nearest-centroid labels for each utterance's ``(T, D)`` features."""
    c = torch.from_numpy(centroids).float()
    out = []
    for f in features:
        x = torch.from_numpy(f).float()
        dist = (x * x).sum(-1, keepdim=True) - 2 * x @ c.T + (c * c).sum(-1)
        out.append(dist.argmin(-1))
    return out
