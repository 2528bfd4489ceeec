"""MFCC + deltas aligned with HuBERT's frames (the first-iteration pre-training targets), with
per-utterance mean/variance normalisation. (Log-mel filterbanks: :mod:`pipeline.nn.fbank`.)"""

from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from pipeline.audio.files import SAMPLE_RATE

FEATURE_DESCRIPTION = "kaldi mfcc 13 + delta + delta-delta, 25 ms window, 20 ms hop, per-utt CMVN"


def mfcc_features(wav: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(samples,)`` 16 kHz audio -> ``(num_frames, 39)`` MFCC with deltas.

    A 25 ms window every 20 ms without edge padding puts frame ``i`` on samples
    ``[320 i, 320 i + 400)``: the receptive field of HuBERT's conv stack, so frame ``i`` here is
    frame ``i`` of the model. ``num_frames`` (the model's count) trims the at most one extra
    frame the two roundings can differ by. Each utterance is mean/variance normalised.
    """
    mfcc = kaldi.mfcc(
        wav[None].float() * 32768,  # Kaldi's int16 scale
        sample_frequency=SAMPLE_RATE,
        frame_length=25.0,
        frame_shift=20.0,
        num_ceps=13,
        dither=0.0,
        snip_edges=True,
    )
    if abs(mfcc.shape[0] - num_frames) > 1:
        raise ValueError(f"MFCC gives {mfcc.shape[0]} frames where the model has {num_frames}")
    if mfcc.shape[0] < num_frames:
        mfcc = torch.cat([mfcc, mfcc[-1:]])
    mfcc = mfcc[:num_frames].T  # (13, T)
    delta = AF.compute_deltas(mfcc)
    feats = torch.cat([mfcc, delta, AF.compute_deltas(delta)]).T
    return cmvn(feats)


def cmvn(feats: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean/variance normalisation of ``(T, D)`` features."""
    return (feats - feats.mean(0)) / (feats.std(0, correction=0) + 1e-5)
