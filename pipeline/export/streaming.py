"""A unidirectional student on a live stream: audio goes in as chunks of any size, and the
frames it completes come out, the same as the whole utterance at once would give them.

Frame ``i`` of a conv stack without padding reads samples ``[hop * i, hop * i + field)`` only
(HuBERT: 320 and 400), so the stream keeps the samples from the next frame's start on and
runs the stack on whatever whole frames they hold; the LSTMs carry their state from chunk to
chunk. A frame is out ``field`` samples after it starts (25 ms at 16 kHz), then one per hop
(20 ms): the latency the front end adds, on top of the time to compute a chunk.

A front end streams only if each frame depends on its own samples alone: a layer-norm conv
stack on raw audio does (the demo teacher's, or any student's own ``frontend: conv`` with
``frontend_init: random``); HuBERT Base's group-norm stack, a waveform normalised over the
utterance, and the fbank front end's per-utterance CMVN do not.

    stream = StreamingStudent(student)
    for chunk in microphone:            # (S,) or (B, S) float tensors at 16 kHz
        logits = stream.push(chunk)     # (T_new, C) or (B, T_new, C), T_new >= 0
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.audio.files import SAMPLE_RATE


def _ms(samples: int) -> float:
    return 1000 * samples / SAMPLE_RATE


def streaming_problem(student: nn.Module) -> str | None:
    """Why ``student`` cannot stream, or None when it can."""
    lstms = getattr(student, "lstms", None)
    if lstms is None or not getattr(student, "predicts_logits", False):
        return f"a {type(student).__name__} is not an LSTM student; only those stream"
    if lstms.backward_lstms is not None:
        return (
            "it is bidirectional (it reads the whole utterance); train it with bidirectional: false"
        )
    frontend = student.frontend
    if frontend.kind == "fbank":
        return ("its fbank front end normalises over the whole utterance (CMVN); use frontend: "
                "conv with frontend_init: random (a causal layer-norm stack)")  # fmt: skip
    if frontend.spec.get("norm") != "layer" or frontend.spec.get("normalize", False):
        return ("its conv stack normalises over the whole utterance (group norm, or a "
                "normalised waveform); use frontend: conv with frontend_init: random")  # fmt: skip
    return None


def streaming_info(student: nn.Module) -> dict:
    """Whether ``student`` streams; if so its latency and hop (ms), else why not."""
    problem = streaming_problem(student)
    if problem:
        return {"streams": False, "why_not": problem}
    frames = student.frames
    return {"streams": True, "latency_ms": _ms(frames.receptive_field), "hop_ms": _ms(frames.hop)}


class StreamingStudent:
    """Stateful chunked inference for a unidirectional LSTM student with a causal front end.

    Args:
        student: the student (eval mode is set here).

    Raises:
        ValueError: the student cannot stream (the message says why and what to train).
    """

    def __init__(self, student: nn.Module) -> None:
        problem = streaming_problem(student)
        if problem:
            raise ValueError(f"this student cannot stream: {problem}")
        self.student = student.eval()
        self.hop = student.frames.hop
        self.field = student.frames.receptive_field
        self.reset()

    @property
    def latency_ms(self) -> float:
        """How long after its first sample a frame can be computed (the front end's field)."""
        return _ms(self.field)

    @property
    def hop_ms(self) -> float:
        return _ms(self.hop)

    def reset(self) -> None:
        """Start a new stream."""
        self.pending: torch.Tensor | None = None  # samples from the next frame's start
        self.states: list | None = None

    @torch.no_grad()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """The next samples ``(S,)`` (or ``(B, S)``, B streams in step) -> logits of the frames
        they complete, ``(T_new, C)`` (or ``(B, T_new, C)``)."""
        single = chunk.dim() == 1
        chunk = chunk[None] if single else chunk
        device = next(self.student.parameters()).device
        chunk = chunk.to(device=device, dtype=torch.float32)
        pending = chunk if self.pending is None else torch.cat([self.pending, chunk], dim=1)
        frames = int(self.student.frames.num_frames(pending.shape[1]))
        logits = pending.new_zeros(pending.shape[0], 0, self.student.num_classes)
        if frames:
            used = self.hop * (frames - 1) + self.field
            wav = pending[:, :used]
            lengths = torch.full((wav.shape[0],), used, device=device)
            x = self.student.proj(self.student.frontend(wav, lengths))
            layers, self.states = self.student.lstms.stream(x, self.states)
            logits = self.student.head(layers[-1])
            pending = pending[:, self.hop * frames :]
        self.pending = pending
        return logits[0] if single else logits
