"""What the probes learn and how they are scored: references, the tasks (ASR over
characters, PR over phonemes), CTC vocabularies with greedy decoding, and each utterance's
edit errors, summed as jiwer sums them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jiwer
import torch

from pipeline.corpus.phonemes import normalize_text


@dataclass(frozen=True)
class Reference:
    """What an utterance says: its transcript and (if known) phonemes, space-separated."""

    transcript: str
    phonemes: str


@dataclass(frozen=True)
class Task:
    """A probe's job: the CTC symbols of a reference, how they join into text, the metrics it
    is scored on (each a metric name and whether it counts words or characters of that text),
    and whether its probe has a BiLSTM (the ASR probe) or is linear (SUPERB's PR)."""

    name: str
    symbols: Callable[[Reference], list[str]]
    joiner: str
    metrics: tuple[tuple[str, str], ...]
    recurrent: bool


ASR = Task("asr", lambda r: list(normalize_text(r.transcript)), "",
           (("wer", "words"), ("cer", "chars")), recurrent=True)  # fmt: skip
PR = Task("pr", lambda r: r.phonemes.split(), " ", (("per", "words"),), recurrent=False)


def tasks_for(refs: dict[str, Reference]) -> list[Task]:
    """ASR always; PR when every reference has phonemes."""
    return [ASR, PR] if all(r.phonemes for r in refs.values()) else [ASR]


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


def edit_counts(refs: list[str], hyps: list[str], unit: str) -> tuple[list[int], list[int]]:
    """Each pair's edit errors (substitutions + deletions + insertions) and reference length,
    in ``words`` (space-separated tokens) or ``chars``, from jiwer's alignments: summed, they
    give jiwer's corpus WER or CER."""
    if not refs:
        return [], []
    process = jiwer.process_words if unit == "words" else jiwer.process_characters
    out = process(refs, hyps)
    errors, tokens = [], []
    for chunks, ref in zip(out.alignments, out.references, strict=True):
        errors.append(sum(c.hyp_end_idx - c.hyp_start_idx if c.type == "insert"
                          else c.ref_end_idx - c.ref_start_idx
                          for c in chunks if c.type != "equal"))  # fmt: skip
        tokens.append(len(ref))
    return errors, tokens
