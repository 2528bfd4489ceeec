"""s3prl's upstream interface for a student exported by hubert-kd (its ``hf`` directory)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence


class UpstreamExpert(nn.Module):
    """A list of 1-D 16 kHz waveforms in, ``{"hidden_states": [(B, T, D), ...]}`` out: the
    layers a downstream model weighs (those as wide as the last), one frame every 320
    samples, zero beyond each utterance's frames.

    Args:
        ckpt: the exported student's ``hf`` directory (or a hub id).
    """

    def __init__(self, ckpt: str, model_config: str | None = None, **kwargs) -> None:
        super().__init__()
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(ckpt, trust_remote_code=True).eval()

    def get_downsample_rates(self, key: str) -> int:
        """Samples per frame of every output (320: 50 frames per second at 16 kHz)."""
        return self.model.hop

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        device = next(self.model.parameters()).device
        lengths = torch.tensor([len(w) for w in wavs], device=device)
        wav = pad_sequence([w.to(device) for w in wavs], batch_first=True)
        mask = torch.arange(wav.shape[1], device=device)[None] < lengths[:, None]
        out = self.model(input_values=wav, attention_mask=mask.long(), output_hidden_states=True)
        hidden = self.model.downstream_layers(out.hidden_states)
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
