"""Frozen upstream models for evaluation: the teacher, students, and a log-mel baseline.

An upstream maps zero-padded audio ``(B, S)`` with sample lengths to a list of layer outputs
``(B, T, D_l)`` at the teacher's frame rate plus frame lengths. The downstream probe learns a
weighted sum of the layers that share the last layer's width (SUPERB style).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.audio.files import SAMPLE_RATE
from pipeline.nn.fbank import LogMel, masked_cmvn
from pipeline.nn.frames import FrameSpec
from pipeline.nn.hidden import same_width

Layers = Callable[[torch.Tensor, torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]


@dataclass
class Upstream:
    """Attributes:
    name: the report's row label.
    kind: ``teacher``, ``student`` or ``baseline``.
    layers: the feature function; with ``front``, it also takes that front end's output on
        the audio (``front=``).
    module: the model (for its parameter count; None for the baseline).
    front: a front end this upstream shares with others (a frozen one, the same weights),
        whose output a caller that runs them all on the same audio computes once.
    """

    name: str
    kind: str
    layers: Layers
    module: nn.Module | None
    front: nn.Module | None = None

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters()) if self.module is not None else 0

    @torch.inference_mode()
    def probe_layers(
        self, wav: torch.Tensor, lengths: torch.Tensor, front: torch.Tensor | None = None
    ):
        """The layers the probe weighs: those as wide as the last one. ``(B, L, T, D)``.
        ``front``: the output of :attr:`front` on this audio, if the caller has it."""
        extra = {} if front is None else {"front": front}
        layers, frame_lengths = self.layers(wav, lengths, **extra)
        return torch.stack(same_width(layers), 1), frame_lengths


def student_upstreams(name: str, models: dict[int, nn.Module]) -> dict[int, Upstream]:
    """One upstream per training seed of student ``name``. Where the seeds have the same
    front-end weights (the teacher's frozen conv stack of ``frontend: cached``), they share it:
    :func:`~pipeline.evaluation.features.write_stores` runs it once per batch of audio for all
    of them (the same features, a fraction of the cost)."""
    front = shared_frontend(list(models.values()))
    return {seed: Upstream(name, "student", m.extract_features, m, front)
            for seed, m in models.items()}  # fmt: skip


def shared_frontend(models: list[nn.Module]) -> nn.Module | None:
    """The front end of several students when they all have the same weights (the teacher's
    frozen conv stack of ``frontend: cached``): a caller running them on the same audio
    computes it once. None for one model or front ends that differ."""
    if len(models) < 2:
        return None
    states = [m.frontend.state_dict() for m in models]
    same = all(s.keys() == states[0].keys() and all(torch.equal(s[k], states[0][k]) for k in s)
               for s in states[1:])  # fmt: skip
    return models[0].frontend if same else None


def fbank_layers(frames: FrameSpec, bins: int = 80) -> Layers:
    """Log-mel filterbank features (Kaldi-compatible, ``bins`` bins, 25 ms window, 20 ms hop,
    per-utterance mean/variance normalised) aligned with the teacher's frames: frame ``i``
    covers the same samples as frame ``i`` of a HuBERT conv stack."""
    log_mel = LogMel(bins, shift_ms=20.0)

    def layers(wav: torch.Tensor, lengths: torch.Tensor):
        feats, fbank_frames = log_mel.to(wav.device)(wav, lengths)  # as many as the teacher's
        frame_lengths = frames.num_frames(lengths)
        return [masked_cmvn(feats, fbank_frames)[:, : int(frame_lengths.max())]], frame_lengths

    return layers


@torch.inference_mode()
def efficiency(upstream: Upstream, seconds: float = 10.0, repeats: int = 5) -> dict[str, float]:
    """Real-time factor (the fastest of ``repeats`` forwards after a warm-up: the one least
    disturbed by other work on the machine) and peak memory of one forward on ``seconds`` of
    audio, on the device of the module.

    Peak memory is CUDA's peak allocation on GPU; on CPU it is the high-water mark of the
    tensors torch allocates during the forward (torch profiler), beyond the weights.
    """
    device = next(upstream.module.parameters()).device if upstream.module is not None else "cpu"
    device = torch.device(device)
    n = int(seconds * SAMPLE_RATE)
    wav = 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    wav, lengths = wav.to(device), torch.tensor([n], device=device)
    upstream.layers(wav, lengths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        upstream.layers(wav, lengths)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {
        "rtf": round(min(times) / seconds, 5),
        "peak_memory_mb": round(_peak_bytes(upstream, wav, lengths, device) / 2**20, 1),
    }


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Standard error closed to native code for a while: torch's profiler (kineto) prints a
    trace line at each start and stop that no setting turns off. Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_bytes(upstream: Upstream, wav, lengths, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        upstream.layers(wav, lengths)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU],
                                            profile_memory=True) as prof:  # fmt: skip
        upstream.layers(wav, lengths)
    live = peak = 0
    # Each op's own allocations (frees are negative), in the order the ops started.
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak
