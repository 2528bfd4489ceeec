"""A student as an upstream of SUPERB's toolkit (s3prl): a list of 16 kHz waveforms in, every
layer's hidden states out, one frame every 320 samples.

s3prl weighs an upstream's hidden states in a learnt sum, so they must share a width: the
layers given are those as wide as the last (the LSTM layers of an LSTM student, every
Transformer layer of a DistilHuBERT-style one), as this project's own probe weighs them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from pipeline.export.hf import HubertKDStudent
from pipeline.nn.hidden import same_width
from pipeline.students.checkpoint import load_student


class UpstreamExpert(nn.Module):
    """s3prl's upstream interface for a student.

    Args:
        ckpt: an exported directory (``pipeline export --format hf``) or a ``model.pt``.
    """

    def __init__(self, ckpt: str, model_config: str | None = None, **kwargs) -> None:
        super().__init__()
        path = Path(ckpt)
        student = (
            HubertKDStudent.from_pretrained(str(path)).student
            if path.is_dir()
            else load_student(path)[0]
        )
        self.student = student.eval()
        self.hop = student.frames.hop

    def get_downsample_rates(self, key: str) -> int:
        """Samples per frame of every output (320: 50 frames per second at 16 kHz)."""
        return self.hop

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """``wavs``: 1-D float waveforms at 16 kHz -> ``hidden_states`` ``[(B, T, D)]`` (zero
        beyond each utterance's frames) and ``last_hidden_state``."""
        device = next(self.student.parameters()).device
        lengths = torch.tensor([len(w) for w in wavs], device=device)
        wav = pad_sequence([w.to(device) for w in wavs], batch_first=True)
        hidden = same_width(self.student.extract_features(wav, lengths)[0])
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
