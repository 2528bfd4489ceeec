"""SUPERB-style probes on a frozen upstream: a learnt softmax-weighted sum of its layers, a
layer norm, then

- **ASR**: a small BiLSTM and a CTC head over characters: WER and CER;
- **PR** (SUPERB's phoneme recognition): a linear CTC head over phonemes: PER, when every
  reference has phonemes (``evaluate.probe.phonemes``).

Both learn from the same batches, in one pass over the features per epoch, each with its own
optimizer. Scoring counts each utterance's edit errors (jiwer's alignments), so that two
models can be compared utterance by utterance (:mod:`pipeline.evaluation.compare`).

The probes never hold a corpus of features: they read batches (``ProbeBatch``) from a source
that streams them (``pipeline.evaluation.features``), so memory is bounded by the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.config import Choice, non_negative, positive
from pipeline.core.progress import progress_bar
from pipeline.corpus.phonemes import PHONEMIZERS
from pipeline.evaluation.tasks import Reference, Task, Vocabulary, edit_counts
from pipeline.nn.recurrent import LSTMStack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrProbeConfig:
    """The ASR probe (``evaluate.probe.asr``).

    Attributes:
        hidden: BiLSTM hidden size per direction.
        layers: BiLSTM layers.
        lr: Adam learning rate (its peak: it decays linearly over the epochs).
        epochs: passes over the probes' train utterances.
    """

    hidden: int
    layers: int
    lr: float
    epochs: int

    def __post_init__(self) -> None:
        positive(self, "hidden", "layers", "lr", "epochs")


@dataclass(frozen=True)
class PhonemeProbeConfig:
    """The phoneme recognition probe (``evaluate.probe.pr``): a linear CTC head, as SUPERB's PR.

    Attributes:
        lr: Adam learning rate (its peak: it decays linearly over the epochs).
        epochs: passes over the probes' train utterances (a linear probe is cheap: give it
            enough to settle, so that its PER is the upstream's, not the probe's luck).
    """

    lr: float
    epochs: int

    def __post_init__(self) -> None:
        positive(self, "lr", "epochs")


@dataclass(frozen=True)
class ProbeConfig:
    """The ``evaluate.probe`` section.

    Attributes:
        train: the split or subset (``train``, ``train-clean-100``) the probes train on.
        train_utterances: of those, this many (evenly spaced; 0 = all).
        seeds: probe trainings per upstream (per training seed of a student): initialisation
            and batch order.
        batch_frames: padded upstream frames per batch.
        asr: the BiLSTM ASR probe.
        pr: the linear phoneme recognition probe.
        phonemes: where the references' phonemes come from: ``{kind: manifest}`` (the
            manifest's own, e.g. the demo's), ``{kind: espeak, voice}`` or ``{kind: lexicon,
            path}`` (:mod:`pipeline.corpus.phonemes`).
    """

    train: str
    train_utterances: int
    seeds: int
    batch_frames: int
    asr: AsrProbeConfig
    pr: PhonemeProbeConfig
    phonemes: Annotated[Choice, PHONEMIZERS]

    def __post_init__(self) -> None:
        positive(self, "batch_frames", "seeds")
        non_negative(self, "train_utterances")

    def describe(self) -> str:
        """The probes' size and budget, in words, for the report."""
        return (
            f"a {self.asr.layers} x {self.asr.hidden} BiLSTM ASR probe ({self.asr.epochs} "
            f"epochs) and a linear phoneme probe ({self.pr.epochs} epochs), batches of "
            f"{self.batch_frames} frames on {self.train} ({self.train_utterances or 'all'} "
            f"utterances), {self.seeds} probe seed{'s' if self.seeds > 1 else ''} per upstream"
        )


@dataclass
class ProbeBatch:
    """Frozen upstream layers of a batch: ``layers (B, L, T, D)``, ``lengths (B,)`` frames."""

    keys: list[str]
    layers: torch.Tensor
    lengths: torch.Tensor


class Probe(nn.Module):
    """Softmax-weighted sum of L layers, layer norm, an optional BiLSTM, a linear CTC head.

    Without a BiLSTM the probe starts from zeros (equal layer weights, a zero head), so its
    only randomness is the batch order: a linear probe from random heads lands in visibly
    different places after a short training (on the demo, up to 6 PER points apart on one
    upstream), a noise that is the probe's, not the upstream's.
    """

    def __init__(self, num_layers: int, width: int, vocab: int, lstm: AsrProbeConfig | None):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.norm = nn.LayerNorm(width)
        self.lstm = None if lstm is None else LSTMStack(width, lstm.hidden, lstm.layers,
                                                        bidirectional=True)  # fmt: skip
        self.head = nn.Linear(width if lstm is None else self.lstm.output_size, vocab)
        if lstm is None:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``layers (B, L, T, D)`` -> ``(B, T, V)`` log-probabilities."""
        x = self.norm((self.weights.softmax(0)[:, None, None] * layers).sum(1))
        if self.lstm is not None:
            x = self.lstm(x, lengths)[-1]
        return self.head(x).log_softmax(-1)


@dataclass
class TrainedProbe:
    """A probe of one task, its vocabulary, and what trains it: its epochs, the CTC targets of
    the train utterances, the optimizer and the learning-rate schedule; its curve (mean CTC
    per epoch) grows as it trains."""

    task: Task
    model: Probe
    vocab: Vocabulary
    epochs: int
    targets: dict[str, torch.Tensor] = field(repr=False)
    optimizer: torch.optim.Optimizer = field(repr=False)
    schedule: torch.optim.lr_scheduler.LRScheduler = field(repr=False)
    curve: list[float] = field(default_factory=list)

    def layer_weights(self) -> list[float]:
        """The learnt weight of each upstream layer (softmax of the probe's weights)."""
        return self.model.weights.softmax(0).tolist()

    def step(self, layers: torch.Tensor, batch: ProbeBatch) -> torch.Tensor:
        """One update on a batch; returns its CTC loss (on the device, detached)."""
        self.model.train()
        loss = _ctc(self.model(layers, batch.lengths), batch, self.targets, layers.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return loss.detach()


def _probe(task: Task, refs: dict[str, Reference], shape, cfg: ProbeConfig, device):
    """A fresh probe for ``task`` with its settings (``cfg.asr``, ``cfg.pr``)."""
    settings = getattr(cfg, task.name)
    vocab = Vocabulary([task.symbols(r) for r in refs.values()])
    model = Probe(*shape, len(vocab), settings if task.recurrent else None).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    epochs = settings.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1 - e / epochs)
    targets = {k: vocab.encode(task.symbols(r)) for k, r in refs.items()}
    return TrainedProbe(task, model, vocab, epochs, targets, optimizer, schedule)


def train_probes(
    epochs: Callable[[int], Iterable[ProbeBatch]],
    refs: dict[str, Reference],
    tasks: list[Task],
    shape: tuple[int, int],
    cfg: ProbeConfig,
    seed: int,
    device: torch.device,
) -> list[TrainedProbe]:
    """Train a probe for each of ``tasks`` on the batches of ``epochs(e)`` (each streamed,
    never all in memory): each probe takes a step on every batch of each of its epochs (one
    pass over the features serves all the probes still training), its learning rate decaying
    linearly (epoch ``e`` of ``E`` at ``(E - e) / E`` of the peak), so that it ends where it
    settled, not at a noisy last step.

    Args:
        refs: the references of the train utterances, by key.
        tasks: what to probe (:func:`~pipeline.evaluation.tasks.tasks_for` all references).
        shape: ``(L, D)``: layers per frame and their width.
    """
    torch.manual_seed(seed)
    probes = [_probe(task, refs, shape, cfg, device) for task in tasks]
    longest = max(p.epochs for p in probes)
    with progress_bar() as bar:
        job = bar.add_task(f"probes (seed {seed})", total=longest, info="")
        for epoch in range(longest):
            active = [p for p in probes if epoch < p.epochs]
            totals = [torch.zeros((), device=device) for _ in active]
            count = 0
            for batch in epochs(epoch):
                layers = batch.layers.to(device)
                totals = [t + p.step(layers, batch) for t, p in zip(totals, active, strict=True)]
                count += 1
            for probe, total in zip(active, totals, strict=True):
                probe.curve.append(float(total) / max(count, 1))
                probe.schedule.step()
            info = "  ".join(f"{p.task.name} ctc {p.curve[-1]:.3f}" for p in probes)
            bar.update(job, advance=1, info=info)
    return probes


def _ctc(log_probs: torch.Tensor, batch: ProbeBatch, targets: dict, device) -> torch.Tensor:
    ys = [targets[key] for key in batch.keys]
    return F.ctc_loss(
        log_probs.transpose(0, 1), torch.cat(ys).to(device), batch.lengths,
        torch.tensor([len(y) for y in ys]), zero_infinity=True,
    )  # fmt: skip


@torch.inference_mode()
def score(
    probes: list[TrainedProbe],
    batches: Iterable[ProbeBatch],
    refs: dict[str, Reference],
    device: torch.device,
) -> dict[str, dict]:
    """Greedy decoding of ``batches`` by every probe, scored per utterance.

    Returns:
        Per metric (``wer``, ``cer``, ``per``): ``{"ids": [...], "errors": [...], "tokens":
        [...]}``, utterances sorted by id.
    """
    texts: dict[str, dict[str, tuple[str, str]]] = {p.task.name: {} for p in probes}
    for probe in probes:
        probe.model.eval()
    for batch in batches:
        layers = batch.layers.to(device)
        for probe in probes:
            outputs = probe.model(layers, batch.lengths).cpu()
            joiner = probe.task.joiner
            for i, key in enumerate(batch.keys):
                hyp = probe.vocab.greedy(outputs[i, : batch.lengths[i]])
                ref = joiner.join(probe.task.symbols(refs[key]))
                texts[probe.task.name][key] = (ref, joiner.join(hyp))
    result = {}
    for probe in probes:
        pairs = texts[probe.task.name]
        ids = sorted(pairs)
        for metric, unit in probe.task.metrics:
            errors, tokens = edit_counts([pairs[k][0] for k in ids], [pairs[k][1] for k in ids],
                                         unit)  # fmt: skip
            result[metric] = {"ids": ids, "errors": errors, "tokens": tokens}
    return result
