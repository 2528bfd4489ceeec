"""The probes' modules: the linear phoneme probes of several upstreams stacked into one, and
the BiLSTM ASR probe of one upstream. Both map ``layers (S, B, L, T, D)`` (S upstreams, L
layers each) to CTC log-probabilities ``(S, B, T, V)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nn.recurrent import LSTMStack


class LinearProbes(nn.Module):
    """SUPERB's PR probe for S upstreams at once: for each, a softmax-weighted sum of its L
    layers, a layer norm and a linear CTC head. Every parameter has a leading upstream axis,
    and upstream ``s`` uses only its own slice: each is trained exactly as it would be alone.

    It starts from zeros (equal layer weights, a zero head), so its only randomness is the
    batch order: a linear probe from random heads lands in visibly different places after a
    short training (on the demo, up to 6 PER points apart on one upstream), a noise that is
    the probe's, not the upstream's.
    """

    def __init__(self, upstreams: int, num_layers: int, width: int, vocab: int) -> None:
        super().__init__()
        self.upstreams = upstreams
        self.weights = nn.Parameter(torch.zeros(upstreams, num_layers))
        self.norm_weight = nn.Parameter(torch.ones(upstreams, width))
        self.norm_bias = nn.Parameter(torch.zeros(upstreams, width))
        self.head_weight = nn.Parameter(torch.zeros(upstreams, vocab, width))
        self.head_bias = nn.Parameter(torch.zeros(upstreams, vocab))

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``layers (S, B, L, T, D)`` -> ``(S, B, T, V)`` log-probabilities."""
        x = torch.einsum("sl,sbltd->sbtd", self.weights.softmax(-1), layers)
        x = F.layer_norm(x, x.shape[-1:])
        x = x * self.norm_weight[:, None, None] + self.norm_bias[:, None, None]
        logits = torch.einsum("sbtd,svd->sbtv", x, self.head_weight)
        return (logits + self.head_bias[:, None, None]).log_softmax(-1)

    def layer_weights(self) -> list[list[float]]:
        """Each upstream's learnt layer weights (softmax)."""
        return self.weights.softmax(-1).tolist()


class AsrProbe(nn.Module):
    """The ASR probe of one upstream: a softmax-weighted sum of its L layers, a layer norm, a
    BiLSTM and a linear CTC head over characters (randomly initialised: seeded per probe
    seed, the same for every upstream)."""

    upstreams = 1

    def __init__(self, num_layers: int, width: int, vocab: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.norm = nn.LayerNorm(width)
        self.lstm = LSTMStack(width, hidden, layers, bidirectional=True)
        self.head = nn.Linear(self.lstm.output_size, vocab)

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``layers (1, B, L, T, D)`` -> ``(1, B, T, V)`` log-probabilities."""
        x = self.norm((self.weights.softmax(0)[:, None, None] * layers[0]).sum(1))
        return self.head(self.lstm(x, lengths)[-1]).log_softmax(-1)[None]

    def layer_weights(self) -> list[list[float]]:
        return [self.weights.softmax(0).tolist()]


def clip_each(model: nn.Module, max_norm: float) -> None:
    """Clip each upstream's gradient to ``max_norm`` on its own, as if trained alone."""
    params = [p for p in model.parameters() if p.grad is not None]
    if model.upstreams == 1:
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    norms = torch.stack([p.grad.reshape(model.upstreams, -1).square().sum(1)
                         for p in params]).sum(0).sqrt()  # fmt: skip
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view(-1, *[1] * (p.grad.dim() - 1)))


def ctc_losses(
    log_probs: torch.Tensor, lengths: torch.Tensor, ys: list[torch.Tensor]
) -> torch.Tensor:
    """Each upstream's CTC loss on a batch ``(S,)``: ``log_probs (S, B, T, V)`` of frames
    ``lengths (B,)`` against the target sequences ``ys`` (B of them), per utterance over its
    target length, averaged over the batch (``F.ctc_loss``'s ``mean``)."""
    upstreams, count = log_probs.shape[:2]
    target_lengths = torch.tensor([len(y) for y in ys])
    losses = F.ctc_loss(
        log_probs.flatten(0, 1).transpose(0, 1), torch.cat(ys * upstreams).to(log_probs.device),
        lengths.repeat(upstreams), target_lengths.repeat(upstreams), reduction="none",
        zero_infinity=True,
    )  # fmt: skip
    per_utterance = losses / target_lengths.repeat(upstreams).clamp(min=1).to(losses.device)
    return per_utterance.view(upstreams, count).mean(1)
