"""SUPERB-style probes on frozen upstreams: a learnt softmax-weighted sum of an upstream's
layers, a layer norm, then

- **ASR**: a small BiLSTM and a CTC head over characters: WER and CER;
- **PR** (SUPERB's phoneme recognition): a linear CTC head over phonemes: PER, when every
  reference has phonemes (``evaluate.probe.phonemes``).

The upstreams of one model (a student's training seeds) are probed together, in one pass over
their features per epoch: a batch holds the same utterances' layers from each of them. The
linear PR probes of all of them are one stacked module (every parameter has an upstream axis,
each upstream's part trained exactly as it would be alone); the ASR probe, a BiLSTM, is one
module per upstream it runs on (``evaluate.probe.asr.training_seeds``). Scoring counts each
utterance's edit errors (jiwer's alignments), so that two models can be compared utterance by
utterance (:mod:`pipeline.evaluation.compare`).

The probes never hold a corpus of features: they read batches (``ProbeBatch``) from a source
that streams them (``pipeline.evaluation.features``), so memory is bounded by the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from pipeline.core.config import Choice, non_negative, positive
from pipeline.core.progress import progress_bar
from pipeline.corpus.phonemes import PHONEMIZERS
from pipeline.evaluation.probe_models import AsrProbe, LinearProbes, clip_each, ctc_losses
from pipeline.evaluation.tasks import ASR, PR, Reference, Task, Vocabulary, edit_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrProbeConfig:
    """The ASR probe (``evaluate.probe.asr``).

    Attributes:
        hidden: BiLSTM hidden size per direction.
        layers: BiLSTM layers.
        lr: Adam learning rate (its peak: it decays linearly over the epochs).
        epochs: passes over the probes' train utterances.
        training_seeds: the ASR probe runs on a student's first this many training seeds (its
            declared order, never chosen by results; 0: all of them); models not trained here
            have one upstream and always get it. Its WER varies so much between seeds that
            resolving a difference takes far more of them than PER does.
    """

    hidden: int
    layers: int
    lr: float
    epochs: int
    training_seeds: int = 0

    def __post_init__(self) -> None:
        positive(self, "hidden", "layers", "lr", "epochs")
        non_negative(self, "training_seeds")


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

    def settings(self, task: Task) -> AsrProbeConfig | PhonemeProbeConfig:
        """The settings of ``task``'s probe."""
        return {ASR.name: self.asr, PR.name: self.pr}[task.name]

    def describe(self) -> str:
        """The probes' size and budget, in words, for the report."""
        asr_seeds = self.asr.training_seeds
        return (
            f"a {self.asr.layers} x {self.asr.hidden} BiLSTM ASR probe ({self.asr.epochs} "
            f"epochs; on {f'the first {asr_seeds}' if asr_seeds else 'every one'} of a student's "
            f"training seeds) and a linear phoneme probe ({self.pr.epochs} epochs; every seed), "
            f"batches of {self.batch_frames} frames on {self.train} "
            f"({self.train_utterances or 'all'} utterances), {self.seeds} probe "
            f"seed{'s' if self.seeds > 1 else ''} per upstream"
        )


@dataclass
class ProbeBatch:
    """Frozen layers of the same utterances from S upstreams: ``layers (S, B, L, T, D)``,
    ``lengths (B,)`` frames."""

    keys: list[str]
    layers: torch.Tensor
    lengths: torch.Tensor


@dataclass(frozen=True)
class TrainedProbe:
    """A trained probe of one task over some upstreams of a batch.

    Attributes:
        task: what it learnt.
        model: a :class:`~pipeline.evaluation.probe_models.LinearProbes` or an
            :class:`~pipeline.evaluation.probe_models.AsrProbe`.
        vocab: its CTC symbols.
        upstreams: which of the batch's upstreams it reads (a slice of the ``S`` axis).
        curve: per epoch, each of its upstreams' mean CTC loss.
    """

    task: Task
    model: nn.Module
    vocab: Vocabulary
    upstreams: slice
    curve: list[list[float]]

    def indices(self, count: int) -> list[int]:
        """The batch's upstreams it reads, of ``count``."""
        return list(range(count))[self.upstreams]


class _Training:
    """A probe while it learns: its model, optimizer, schedule and the CTC targets of the
    train utterances; :meth:`done` gives the :class:`TrainedProbe`."""

    def __init__(self, task: Task, upstreams: slice, model: nn.Module, vocab: Vocabulary,
                 targets: dict[str, torch.Tensor], settings) -> None:  # fmt: skip
        self.task, self.upstreams, self.model, self.vocab = task, upstreams, model, vocab
        self.targets = targets
        self.epochs = settings.epochs
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: 1 - e / self.epochs
        )
        self.curve: list[list[float]] = []

    def step(self, layers: torch.Tensor, batch: ProbeBatch) -> torch.Tensor:
        """One update on a batch; returns each upstream's CTC loss ``(S,)`` (detached)."""
        self.model.train()
        ys = [self.targets[key] for key in batch.keys]
        losses = ctc_losses(self.model(layers[self.upstreams], batch.lengths), batch.lengths, ys)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # upstreams share no parameter: each gets its own gradient
        clip_each(self.model, 5.0)
        self.optimizer.step()
        return losses.detach()

    def done(self) -> TrainedProbe:
        return TrainedProbe(self.task, self.model.eval(), self.vocab, self.upstreams, self.curve)


def _training(task: Task, upstreams: slice, refs: dict[str, Reference], shape, cfg: ProbeConfig,
              device) -> _Training:  # fmt: skip
    """A fresh probe for ``task`` on ``upstreams`` (of a stacked batch), with its settings."""
    settings = cfg.settings(task)
    vocab = Vocabulary([task.symbols(r) for r in refs.values()])
    count = len(range(upstreams.stop)[upstreams])
    if task.recurrent:
        model = AsrProbe(*shape, len(vocab), settings.hidden, settings.layers)
    else:
        model = LinearProbes(count, *shape, len(vocab))
    targets = {k: vocab.encode(task.symbols(r)) for k, r in refs.items()}
    return _Training(task, upstreams, model.to(device), vocab, targets, settings)


def train_probes(
    epochs: Callable[[int], Iterable[ProbeBatch]],
    refs: dict[str, Reference],
    plan: list[tuple[Task, list[int]]],
    shape: tuple[int, int],
    cfg: ProbeConfig,
    seed: int,
    device: torch.device,
) -> list[TrainedProbe]:
    """Train the probes of ``plan`` on the batches of ``epochs(e)`` (each streamed, never all in
    memory), in one pass over the features per epoch for them all: each probe takes a step on
    every batch of each of its epochs, its learning rate decaying linearly (epoch ``e`` of
    ``E`` at ``(E - e) / E`` of the peak), so that it ends where it settled, not at a noisy
    last step.

    Args:
        refs: the references of the train utterances, by key.
        plan: each task (:func:`~pipeline.evaluation.tasks.tasks_for` all references) and the
            batch's upstreams it probes: a linear task as one stacked probe over all of them
            (in order), a recurrent one as a probe per upstream, each initialised from
            ``seed``.
        shape: ``(L, D)``: layers per frame and their width.
        seed: the probe seed.
    """
    probes = []
    for task, upstreams in plan:
        if task.recurrent:
            for i in upstreams:
                torch.manual_seed(seed)  # every upstream's ASR probe starts alike
                probes.append(_training(task, slice(i, i + 1), refs, shape, cfg, device))
        elif upstreams:
            if upstreams != list(range(upstreams[0], upstreams[-1] + 1)):
                raise ValueError(f"a stacked probe reads consecutive upstreams, not {upstreams}")
            chosen = slice(upstreams[0], upstreams[-1] + 1)
            probes.append(_training(task, chosen, refs, shape, cfg, device))
    longest = max(p.epochs for p in probes)
    with progress_bar() as bar:
        job = bar.add_task(f"probes (seed {seed})", total=longest, info="")
        for epoch in range(longest):
            active = [p for p in probes if epoch < p.epochs]
            totals: list[torch.Tensor | float] = [0.0 for _ in active]
            count = 0
            for batch in epochs(epoch):
                layers = batch.layers.to(device)
                totals = [t + p.step(layers, batch) for t, p in zip(totals, active, strict=True)]
                count += 1
            for probe, total in zip(active, totals, strict=True):
                probe.curve.append((torch.as_tensor(total) / max(count, 1)).tolist())
                probe.schedule.step()
            last: dict[str, list[float]] = {}
            for probe in probes:
                last.setdefault(probe.task.name, []).extend(probe.curve[-1])
            info = "  ".join(f"{name} ctc {sum(v) / len(v):.3f}" for name, v in last.items())
            bar.update(job, advance=1, info=info)
    return [p.done() for p in probes]


@torch.inference_mode()
def score(
    probes: list[TrainedProbe],
    batches: Iterable[ProbeBatch],
    refs: dict[str, Reference],
    device: torch.device,
) -> dict[int, dict[str, dict]]:
    """Greedy decoding of ``batches`` by every probe, scored per utterance.

    Returns:
        Per upstream of the batches (its index), per metric it was probed for (``wer``,
        ``cer``, ``per``): ``{"ids": [...], "errors": [...], "tokens": [...]}``, utterances
        sorted by id.
    """
    texts: dict[tuple[int, str], dict[str, tuple[str, str]]] = {}
    for batch in batches:
        layers = batch.layers.to(device)
        for probe in probes:
            outputs = probe.model(layers[probe.upstreams], batch.lengths).cpu()
            joiner = probe.task.joiner
            for s, upstream in enumerate(probe.indices(layers.shape[0])):
                found = texts.setdefault((upstream, probe.task.name), {})
                for i, key in enumerate(batch.keys):
                    hyp = probe.vocab.greedy(outputs[s, i, : batch.lengths[i]])
                    found[key] = (joiner.join(probe.task.symbols(refs[key])), joiner.join(hyp))
    tasks = {p.task.name: p.task for p in probes}
    result: dict[int, dict[str, dict]] = {}
    for (upstream, name), pairs in sorted(texts.items()):
        ids = sorted(pairs)
        for metric, unit in tasks[name].metrics:
            errors, tokens = edit_counts([pairs[k][0] for k in ids], [pairs[k][1] for k in ids],
                                         unit)  # fmt: skip
            result.setdefault(upstream, {})[metric] = {"ids": ids, "errors": errors,
                                                       "tokens": tokens}  # fmt: skip
    return result
