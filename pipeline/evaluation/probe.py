"""The SUPERB-style ASR probe: a frozen upstream's layers, a learnt weighted sum, a small BiLSTM
and CTC heads on characters (WER, CER) and, when the manifest has them, phonemes (PER).

The probe never holds a corpus of features: it reads batches (``ProbeBatch``) from a source
that streams them (``pipeline.evaluation.features``), so memory is bounded by the batch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jiwer
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.config import non_negative, positive
from pipeline.core.progress import progress_bar
from pipeline.nn.recurrent import LSTMStack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeConfig:
    """The ``evaluate.probe`` section.

    Attributes:
        hidden: BiLSTM hidden size per direction.
        layers: BiLSTM layers.
        epochs: passes over the probe's train utterances.
        batch_frames: padded upstream frames per batch.
        lr: Adam learning rate.
        train: the split or subset (``train``, ``train-clean-100``) the probe trains on.
        train_utterances: of those, this many (evenly spaced; 0 = all).
        seeds: probe trainings per model (initialisation and batch order), averaged in the
            report with their spread.
    """

    hidden: int
    layers: int
    epochs: int
    batch_frames: int
    lr: float
    train: str
    train_utterances: int
    seeds: int

    def __post_init__(self) -> None:
        positive(self, "hidden", "layers", "epochs", "batch_frames", "lr", "seeds")
        non_negative(self, "train_utterances")

    def describe(self) -> str:
        """The probe's size and budget, in words, for the report."""
        return (
            f"{self.layers} x {self.hidden} BiLSTM probe, {self.epochs} epochs of batches of "
            f"{self.batch_frames} frames on {self.train} "
            f"({self.train_utterances or 'all'} utterances), {self.seeds} seeds"
        )


@dataclass
class ProbeBatch:
    """Frozen upstream layers of a batch: ``layers (B, L, T, D)``, ``lengths (B,)`` frames."""

    keys: list[str]
    layers: torch.Tensor
    lengths: torch.Tensor


@dataclass(frozen=True)
class Reference:
    """What an utterance says: its transcript and (if known) phonemes."""

    transcript: str
    phonemes: str


def normalize_text(text: str) -> str:
    """Lower case, letters, digits and apostrophes only, single spaces: applied to references
    and hypotheses alike."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


class Vocabulary:
    """Output symbols of one CTC head; index 0 is the blank."""

    def __init__(self, sequences: list[list[str]]) -> None:
        self.symbols = sorted({s for seq in sequences for s in seq})
        self.index = {s: i + 1 for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols) + 1

    def encode(self, seq: list[str]) -> torch.Tensor:
        return torch.tensor([self.index[s] for s in seq if s in self.index], dtype=torch.long)

    def greedy(self, logits: torch.Tensor) -> list[str]:
        """Best path: argmax per frame, repeats merged, blanks dropped."""
        best = torch.unique_consecutive(logits.argmax(-1)).tolist()
        return [self.symbols[i - 1] for i in best if i]


@dataclass(frozen=True)
class Task:
    """A CTC head: how references become symbol sequences, and how they are joined."""

    name: str
    split: Callable[[Reference], list[str]]
    joiner: str


TASKS = {
    "chars": Task("chars", lambda r: list(normalize_text(r.transcript)), ""),
    "phonemes": Task("phonemes", lambda r: r.phonemes.split(), " "),
}


class Probe(nn.Module):
    """Softmax-weighted sum of L layers, layer norm, BiLSTM, and one linear CTC head per task."""

    def __init__(self, num_layers: int, width: int, cfg: ProbeConfig, vocab_sizes: list[int]):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.norm = nn.LayerNorm(width)
        self.lstm = LSTMStack(width, cfg.hidden, cfg.layers, bidirectional=True)
        self.heads = nn.ModuleList(nn.Linear(self.lstm.output_size, n) for n in vocab_sizes)

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """``layers (B, L, T, D)`` -> per head ``(B, T, V)`` log-probabilities."""
        x = self.norm((self.weights.softmax(0)[:, None, None] * layers).sum(1))
        x = self.lstm(x, lengths)[-1]
        return [head(x).log_softmax(-1) for head in self.heads]


def tasks_for(refs: dict[str, Reference]) -> list[Task]:
    """Characters always; phonemes when every reference has them."""
    return [TASKS["chars"]] + ([TASKS["phonemes"]] if all(r.phonemes for r in refs.values())
                               else [])  # fmt: skip


def train_probe(
    epochs: Callable[[int], Iterable[ProbeBatch]],
    refs: dict[str, Reference],
    shape: tuple[int, int],
    cfg: ProbeConfig,
    seed: int,
    device: torch.device,
) -> tuple[Probe, list[Vocabulary], list[float]]:
    """Train a probe on the batches of ``epochs(e)`` (each streamed, never all in memory).

    Args:
        refs: the references of the train utterances, by key.
        shape: ``(L, D)``: layers per frame and their width.

    Returns:
        The probe, its vocabularies (one per task) and the mean CTC loss of each epoch.
    """
    tasks = tasks_for(refs)
    vocabs = [Vocabulary([t.split(r) for r in refs.values()]) for t in tasks]
    targets = {k: [v.encode(t.split(r)) for v, t in zip(vocabs, tasks, strict=True)]
               for k, r in refs.items()}  # fmt: skip
    torch.manual_seed(seed)
    model = Probe(*shape, cfg, [len(v) for v in vocabs]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    curve = []
    with progress_bar() as bar:
        task = bar.add_task(f"probe (seed {seed})", total=cfg.epochs, info="")
        for epoch in range(cfg.epochs):
            model.train()
            total, count = torch.zeros((), device=device), 0
            for batch in epochs(epoch):
                loss = _ctc(model, batch, targets, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                total, count = total + loss.detach(), count + 1
            curve.append(float(total) / max(count, 1))
            bar.update(task, advance=1, info=f"ctc {curve[-1]:.3f}")
    return model, vocabs, curve


def _ctc(model: Probe, batch: ProbeBatch, targets: dict, device: torch.device) -> torch.Tensor:
    outputs = model(batch.layers.to(device), batch.lengths)
    loss = torch.zeros((), device=device)
    for k, log_probs in enumerate(outputs):
        ys = [targets[key][k] for key in batch.keys]
        loss = loss + F.ctc_loss(
            log_probs.transpose(0, 1), torch.cat(ys).to(device), batch.lengths,
            torch.tensor([len(y) for y in ys]), zero_infinity=True,
        )  # fmt: skip
    return loss


@torch.inference_mode()
def score(
    model: Probe,
    vocabs: list[Vocabulary],
    batches: Iterable[ProbeBatch],
    refs: dict[str, Reference],
    device: torch.device,
) -> dict[str, float]:
    """Greedy decoding of ``batches`` scored with jiwer: ``wer``, ``cer`` and (with phonemes)
    ``per``, edit distance over phoneme tokens."""
    model.eval()
    tasks = tasks_for(refs)[: len(vocabs)]
    ref_text = {t.name: [] for t in tasks}
    hyp_text = {t.name: [] for t in tasks}
    for batch in batches:
        outputs = model(batch.layers.to(device), batch.lengths)
        for k, task in enumerate(tasks):
            for i, key in enumerate(batch.keys):
                ref_text[task.name].append(task.joiner.join(task.split(refs[key])))
                hyp = vocabs[k].greedy(outputs[k][i, : batch.lengths[i]].cpu())
                hyp_text[task.name].append(task.joiner.join(hyp))
    result = {
        "wer": jiwer.wer(ref_text["chars"], hyp_text["chars"]),
        "cer": jiwer.cer(ref_text["chars"], hyp_text["chars"]),
    }
    if "phonemes" in ref_text:
        result["per"] = jiwer.wer(ref_text["phonemes"], hyp_text["phonemes"])
    return {k: round(v, 4) for k, v in result.items()}
