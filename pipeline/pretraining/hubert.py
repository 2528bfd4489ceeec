"""HuBERT first-iteration pre-training: masked prediction of MFCC k-means clusters.

The recipe of HuBERT's first iteration at a size two CPU cores can train: k-means on MFCC +
deltas gives each 20 ms frame a cluster; spans of frames are masked (a span starts at each frame
with probability ``mask_prob / mask_length``, ``mask_length`` frames long) and replaced by the
learnt mask embedding; the cosine cluster head predicts the cluster of every masked frame. The
model trains through the one training loop with the ``masked`` loss.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import HubertModel

from pipeline.audio.batching import length_batches
from pipeline.audio.features import mfcc_features
from pipeline.core.config import check, positive
from pipeline.core.progress import progress_bar
from pipeline.corpus.manifest import Utterance, read_utterance
from pipeline.nn.frames import FrameSpec, lengths_to_mask
from pipeline.teacher.config import RandomTeacherConfig
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.kmeans import fit_centroids
from pipeline.training.batches import Batch
from pipeline.training.config import LoopConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig(LoopConfig):
    """The ``pretrain_teacher`` section of params.yaml: the loop's settings and

    Attributes:
        model: the architecture trained (a small HuBERT with a cosine cluster head).
        kmeans_utterances: train utterances (evenly spaced) whose MFCC frames fit k-means.
        mask_prob: share of frames that start a masked span, times ``mask_length`` (HuBERT: 0.8).
        mask_length: frames per masked span (HuBERT: 10).
        unmasked_weight: weight of the loss on unmasked frames (fairseq's ``pred_nomask_weight``;
            HuBERT Base: 0). Above 0 it gives a short run an easier signal to start from.
    """

    model: RandomTeacherConfig
    kmeans_utterances: int
    mask_prob: float
    mask_length: int
    unmasked_weight: float

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "kmeans_utterances", "mask_length")
        check(self.unmasked_weight >= 0, "unmasked_weight", "must be >= 0")
        check(0 < self.mask_prob < 1, "mask_prob", f"must be in (0, 1), got {self.mask_prob}")


def span_mask(
    lengths: torch.Tensor, prob: float, span: int, gen: torch.Generator | None = None
) -> torch.Tensor:
    """``(B, T)`` boolean mask: per utterance of ``n`` frames, ``round(prob * n / span)`` spans
    (at least one) of ``span`` frames at distinct random starts; spans may overlap. Draws from
    ``gen``, or torch's global generator (which the training loop seeds per micro-batch)."""
    mask = torch.zeros(len(lengths), int(lengths.max()), dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        starts_max = max(1, n - span + 1)
        count = min(starts_max, max(1, round(prob * n / span)))
        for start in torch.randperm(starts_max, generator=gen)[:count].tolist():
            mask[i, start : min(n, start + span)] = True
    return mask


class MaskedPredictor(torch.nn.Module):
    """A HuBERT encoder and its cluster head trained on masked frames."""

    def __init__(
        self, encoder: HubertModel, head: ClusterHead, mask_prob: float, mask_length: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.mask_prob, self.mask_length = mask_prob, mask_length
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

    def train_outputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": (B, T, C), "mask": (B, T)}`` with fresh span masks (for ``masked``)."""
        frame_lengths = self.frames.num_frames(batch.lengths.cpu())
        mask = span_mask(frame_lengths, self.mask_prob, self.mask_length).to(batch.wav.device)
        return {"logits": self(batch.wav, batch.lengths, mask), "mask": mask}


@dataclass
class Example:
    """A train utterance and its MFCC cluster labels."""

    utt: Utterance
    labels: torch.Tensor


def mfcc_examples(
    utts: list[Utterance],
    manifest: Path,
    frames: FrameSpec,
    description: str,
    centroids: np.ndarray | None = None,
) -> list[np.ndarray] | list[Example]:
    """Per utterance, MFCC features ``(T, 39)``; or, given ``centroids``, an :class:`Example`
    with only its cluster labels (int16), so labelling a large corpus never holds its features
    in memory."""
    out = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(utts), info="")
        for utt in utts:
            wav = read_utterance(utt, manifest)
            feats = mfcc_features(wav, int(frames.num_frames(len(wav)))).numpy()
            if centroids is None:
                out.append(feats)
            else:
                out.append(Example(utt, label_frames([feats], centroids)[0].short()))
            bar.update(task, advance=1)
    return out


@dataclass
class MfccTargets:
    """The k-means model on MFCC frames and the labelled train and dev utterances."""

    centroids: np.ndarray
    fit_frames: int
    train: list[Example]
    dev: list[Example]


def mfcc_targets(
    cfg: PretrainConfig,
    frames: FrameSpec,
    train: list[Utterance],
    dev: list[Utterance],
    manifest: Path,
) -> MfccTargets:
    """Fit k-means (C = ``cfg.model.num_classes``) on the MFCC frames of
    ``cfg.kmeans_utterances`` evenly spaced train utterances, then label train and dev."""
    picks = np.linspace(0, len(train) - 1, min(cfg.kmeans_utterances, len(train)))
    fit_utts = [train[i] for i in sorted({int(i) for i in picks})]
    fit = np.concatenate(mfcc_examples(fit_utts, manifest, frames, "MFCC (k-means fit)"))
    log.info("fitting k-means (C=%d) on %d MFCC frames", cfg.model.num_classes, len(fit))
    centroids = fit_centroids(fit, cfg.model.num_classes, cfg.model.seed)
    labelled = [mfcc_examples(utts, manifest, frames, f"MFCC labels ({name})", centroids)
                for name, utts in (("train", train), ("dev", dev))]  # fmt: skip
    return MfccTargets(centroids, len(fit), *labelled)


def batches(
    examples: list[Example], batch_seconds: float, epoch: int, seed: int
) -> Iterator[list[Example]]:
    """Length-bucketed batches in a seeded order that changes every epoch."""
    groups = length_batches(examples, lambda e: e.utt.seconds, batch_seconds)
    random.Random(seed * 100_003 + epoch).shuffle(groups)
    yield from groups


def load_batch(group: list[Example], manifest: Path) -> Batch:
    """Audio, zero-padded, with the MFCC cluster labels as the targets."""
    wavs = [read_utterance(e.utt, manifest) for e in group]
    labels = [e.labels.long() for e in group]
    return Batch(
        ids=[e.utt.id for e in group],
        wav=pad_sequence(wavs, batch_first=True),
        lengths=torch.tensor([len(w) for w in wavs]),
        targets=pad_sequence(labels, batch_first=True),
        frame_mask=lengths_to_mask(torch.tensor([len(y) for y in labels])),
    )


@torch.inference_mode()
def evaluate(
    model: MaskedPredictor,
    examples: list[Example],
    manifest: Path,
    batch_seconds: float,
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
    for group in length_batches(examples, lambda e: e.utt.seconds, batch_seconds):
        batch = load_batch(group, manifest)
        valid, labels = batch.frame_mask, batch.targets
        frame_lengths = valid.sum(1)
        mask = span_mask(frame_lengths, model.mask_prob, model.mask_length, gen) & valid
        for name, m in (("masked", mask), ("unmasked", None)):
            pred = model(batch.wav, batch.lengths, m).argmax(-1)
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
