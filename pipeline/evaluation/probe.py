"""The SUPERB-style ASR probe: a frozen upstream's layers, a learnt weighted sum, a small BiLSTM
and CTC heads on characters (WER, CER) and, when the manifest has them, phonemes (PER)."""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

import jiwer
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from pipeline.audio.batching import length_batches
from pipeline.core.config import non_negative, positive
from pipeline.core.progress import progress_bar

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
        train_utterances: train utterances used (evenly spaced; 0 = all).
        seed: initialisation and batch order.
    """

    hidden: int
    layers: int
    epochs: int
    batch_frames: int
    lr: float
    train_utterances: int
    seed: int

    def __post_init__(self) -> None:
        positive(self, "hidden", "layers", "epochs", "batch_frames", "lr")
        non_negative(self, "train_utterances")


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


def characters(text: str) -> list[str]:
    return list(normalize_text(text))


def phonemes(text: str) -> list[str]:
    return text.split()


@dataclass
class Sample:
    """One utterance's frozen upstream layers ``(L, T, D)`` (fp16) and its references."""

    layers: torch.Tensor
    transcript: str
    phonemes: str


class Probe(nn.Module):
    """Softmax-weighted sum of L layers, layer norm, BiLSTM, and one linear CTC head per task."""

    def __init__(self, num_layers: int, width: int, cfg: ProbeConfig, vocab_sizes: list[int]):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.norm = nn.LayerNorm(width)
        self.lstm = nn.LSTM(
            width, cfg.hidden, num_layers=cfg.layers, batch_first=True, bidirectional=True
        )
        self.heads = nn.ModuleList(nn.Linear(2 * cfg.hidden, n) for n in vocab_sizes)

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """``layers (B, L, T, D)`` -> per head ``(B, T, V)`` log-probabilities."""
        x = self.norm((self.weights.softmax(0)[:, None, None] * layers).sum(1))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        x, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        return [head(x).log_softmax(-1) for head in self.heads]


def _collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.layers.shape[1] for s in samples])
    layers = pad_sequence([s.layers.transpose(0, 1) for s in samples], batch_first=True)
    return layers.transpose(1, 2).float(), lengths  # (B, L, T, D)


def train_and_score(
    train: list[Sample], test: list[Sample], cfg: ProbeConfig, name: str
) -> dict[str, float]:
    """Train the probe on ``train`` and score greedy decoding on ``test``.

    Returns:
        ``wer``, ``cer`` and (when phonemes are known) ``per``, plus ``probe_loss`` (the last
        epoch's mean CTC loss) and ``layer_weights`` (the learnt softmax weights).
    """
    tasks = [("chars", characters, lambda s: s.transcript)]
    if all(s.phonemes for s in train + test):
        tasks.append(("phonemes", phonemes, lambda s: s.phonemes))
    vocabs = [Vocabulary([split(ref(s)) for s in train]) for _, split, ref in tasks]
    targets = {
        id(s): [v.encode(split(ref(s))) for v, (_, split, ref) in zip(vocabs, tasks, strict=True)]
        for s in train
    }
    torch.manual_seed(cfg.seed)
    num_layers, _, width = train[0].layers.shape
    model = Probe(num_layers, width, cfg, [len(v) for v in vocabs])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    groups = length_batches(train, lambda s: s.layers.shape[1], cfg.batch_frames)
    order = random.Random(cfg.seed)
    epoch_loss = float("nan")
    with progress_bar() as bar:
        task = bar.add_task(f"probe {name}", total=cfg.epochs * len(groups), info="")
        for _ in range(cfg.epochs):
            order.shuffle(groups)
            total = 0.0
            model.train()
            for group in groups:
                layers, lengths = _collate(group)
                outputs = model(layers, lengths)
                loss = layers.new_zeros(())
                for k, log_probs in enumerate(outputs):
                    ys = [targets[id(s)][k] for s in group]
                    loss = loss + F.ctc_loss(
                        log_probs.transpose(0, 1),
                        torch.cat(ys),
                        lengths,
                        torch.tensor([len(y) for y in ys]),
                        zero_infinity=True,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                total += loss.item()
                bar.update(task, advance=1, info=f"ctc {loss.item():.3f}")
            epoch_loss = total / len(groups)
    return {
        **score(model, test, vocabs, tasks, cfg.batch_frames),
        "probe_loss": round(epoch_loss, 4),
        "layer_weights": [round(w, 4) for w in model.weights.softmax(0).tolist()],
    }


@torch.inference_mode()
def score(model: Probe, test: list[Sample], vocabs, tasks, batch_frames: int) -> dict[str, float]:
    model.eval()
    refs: dict[str, list[str]] = {name: [] for name, _, _ in tasks}
    hyps: dict[str, list[str]] = {name: [] for name, _, _ in tasks}
    for group in length_batches(test, lambda s: s.layers.shape[1], batch_frames):
        layers, lengths = _collate(group)
        outputs = model(layers, lengths)
        for k, (name, split, ref) in enumerate(tasks):
            joiner = "" if name == "chars" else " "
            for i, s in enumerate(group):
                refs[name].append(joiner.join(split(ref(s))))
                hyps[name].append(joiner.join(vocabs[k].greedy(outputs[k][i, : lengths[i]])))
    result = {
        "wer": jiwer.wer(refs["chars"], hyps["chars"]),
        "cer": jiwer.cer(refs["chars"], hyps["chars"]),
    }
    if "phonemes" in refs:
        result["per"] = jiwer.wer(refs["phonemes"], hyps["phonemes"])  # phoneme tokens
    return {k: round(v, 4) for k, v in result.items()}
