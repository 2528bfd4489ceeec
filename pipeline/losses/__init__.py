"""Losses, one per file, each a pure tensor function plus a registered wrapper.

A wrapper is built as ``LOSSES[name](cfg)`` and called as ``loss(outputs, batch) -> dict of
named terms``, where ``outputs`` is the student's ``train_outputs(batch)`` (``logits`` and/or
predicted teacher ``features``) and ``batch`` a ``pipeline.training.batches.Batch``; the term
named like the loss is the one weighted into the total (``cfg.weight``). Wrappers with
``distillation = True`` get the trainer's distillation warm-up factor.
"""

from pipeline.losses import ce, dkd, feature, kd, masked  # noqa: F401  (register the losses)
from pipeline.losses.base import LOSSES, masked_mean
from pipeline.losses.ce import ce_loss
from pipeline.losses.dkd import dkd_loss
from pipeline.losses.kd import kd_loss

__all__ = ["LOSSES", "ce_loss", "dkd_loss", "kd_loss", "masked_mean"]
