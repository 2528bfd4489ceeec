"""How closely a student follows the teacher on held-out frames."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.losses import dkd_loss, kd_loss
from pipeline.training.batches import teacher_decoder
from pipeline.training.cache_batches import CacheBatches


@torch.inference_mode()
def teacher_agreement(model: nn.Module, batches: CacheBatches) -> dict[str, float]:
    """Frame-weighted metrics over ``batches`` (their teacher logits decoded on the model's
    device).

    Returns:
        ``top1_agreement`` (student argmax == cached target), ``kl`` (mean KL(teacher || student)
        at tau = 1), ``tckd`` and ``nckd`` (the DKD parts at tau = 1), and ``frames``.
    """
    sums = {"top1_agreement": 0.0, "kl": 0.0, "tckd": 0.0, "nckd": 0.0}
    frames = 0
    device = next(model.parameters()).device
    decode = teacher_decoder(batches.codec, batches.argmax_targets, device)
    for batch in batches:
        n = batch.num_frames
        batch = decode(batch)
        logits, _ = model(batch.wav, batch.lengths)
        hits = (logits.argmax(-1) == batch.targets) & batch.frame_mask
        sums["top1_agreement"] += float(hits.sum())
        sums["kl"] += (
            float(kd_loss(logits, batch.teacher_logits, batch.frame_mask, tau=1.0)["kd"]) * n
        )
        parts = dkd_loss(
            logits,
            batch.teacher_logits,
            batch.targets,
            batch.frame_mask,
            alpha=1.0,
            beta=1.0,
            tau=1.0,
        )
        sums["tckd"] += float(parts["tckd"]) * n
        sums["nckd"] += float(parts["nckd"]) * n
        frames += n
    if not frames:
        raise ValueError("no frames to evaluate")
    return {**{k: round(v / frames, 6) for k, v in sums.items()}, "frames": frames}


def seeds_agreement(models: list[nn.Module], batches: CacheBatches) -> dict[str, dict]:
    """:func:`teacher_agreement` of each training seed of a student: per metric, the mean over
    the seeds and each seed's value (``{"mean": ..., "seeds": [...]}``)."""
    per_seed = [teacher_agreement(model, batches) for model in models]
    out = {}
    for key in per_seed[0]:
        if key != "frames":
            values = [round(a[key], 6) for a in per_seed]
            out[key] = {"mean": round(sum(values) / len(values), 6), "seeds": values}
    return out
