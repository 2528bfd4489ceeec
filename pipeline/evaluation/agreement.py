"""How closely a student follows the teacher on held-out frames."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.evaluation.upstream import shared_frontend
from pipeline.losses import dkd_loss, kd_loss
from pipeline.training.batches import teacher_decoder
from pipeline.training.cache_batches import CacheBatches

METRICS = ("top1_agreement", "kl", "tckd", "nckd")


@torch.inference_mode()
def teacher_agreement(models: list[nn.Module], batches: CacheBatches) -> list[dict[str, float]]:
    """Frame-weighted metrics of each model over ``batches``, in one pass over them (each
    batch's audio read and teacher logits decoded once for all; a front end the models share,
    :func:`~pipeline.evaluation.upstream.shared_frontend`, run once).

    Returns:
        Per model: ``top1_agreement`` (student argmax == cached target), ``kl`` (mean KL(teacher
        || student) at tau = 1), ``tckd`` and ``nckd`` (the DKD parts at tau = 1), and
        ``frames``.

    Raises:
        ValueError: ``batches`` hold no frame.
    """
    sums = [dict.fromkeys(METRICS, 0.0) for _ in models]
    frames = 0
    device = next(models[0].parameters()).device
    decode = teacher_decoder(batches.codec, batches.argmax_targets, device)
    front = shared_frontend(models)
    for batch in batches:
        n = batch.num_frames
        batch = decode(batch)
        shared = None if front is None else front(batch.wav, batch.lengths)
        for model, acc in zip(models, sums, strict=True):
            logits, _ = model(batch.wav, batch.lengths, front=shared)
            _add(acc, logits, batch, n)
        frames += n
    if not frames:
        raise ValueError("no frames to evaluate")
    return [{**{k: round(v / frames, 6) for k, v in acc.items()}, "frames": frames}
            for acc in sums]  # fmt: skip


def _add(acc: dict[str, float], logits: torch.Tensor, batch, n: int) -> None:
    """Add one batch's frame-weighted metrics to ``acc``."""
    hits = (logits.argmax(-1) == batch.targets) & batch.frame_mask
    acc["top1_agreement"] += float(hits.sum())
    acc["kl"] += float(kd_loss(logits, batch.teacher_logits, batch.frame_mask, tau=1.0)["kd"]) * n
    parts = dkd_loss(logits, batch.teacher_logits, batch.targets, batch.frame_mask,
                     alpha=1.0, beta=1.0, tau=1.0)  # fmt: skip
    acc["tckd"] += float(parts["tckd"]) * n
    acc["nckd"] += float(parts["nckd"]) * n


def seeds_agreement(models: list[nn.Module], batches: CacheBatches) -> dict[str, dict]:
    """:func:`teacher_agreement` of each training seed of a student: per metric, the mean over
    the seeds and each seed's value (``{"mean": ..., "seeds": [...]}``)."""
    per_seed = teacher_agreement(models, batches)
    out = {}
    for key in METRICS:
        values = [a[key] for a in per_seed]
        out[key] = {"mean": round(sum(values) / len(values), 6), "seeds": values}
    return out
