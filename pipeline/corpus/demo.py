"""The offline demo corpus: multi-speaker English synthesised with eSpeak NG.

Speakers differ in accent, voice variant, speaking rate and pitch; sentences come from a
small grammar over a closed vocabulary, so an ASR probe trained on a few hundred utterances
gives a meaningful word error rate. Everything is a deterministic function of the seed.

eSpeak NG keeps internal state between utterances, so each speaker is synthesised in a fresh
process with a seeded generator (see :mod:`pipeline.espeak`): the audio then depends only on
the seed, the speaker and its sentences, not on the order or parallelism of the work.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.audio.files import SAMPLE_RATE, AudioFile, resample, write_audio
from pipeline.corpus.base import SOURCES, Entry, Source
from pipeline.corpus.espeak import speak

# eSpeak NG voice names; "en" is British English.
ACCENTS = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)  # fmt: skip
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3",
)  # fmt: skip
RATE_WPM = (130, 200)
PITCH = (25, 75)

DETERMINERS = ("the", "a", "this", "that", "every")
ADJECTIVES = (
    "red", "green", "blue", "yellow", "black", "white", "small", "big", "old", "young",
    "happy", "quiet",
)  # fmt: skip
NOUNS = (
    "cat", "dog", "bird", "fish", "horse", "child", "teacher", "farmer", "doctor", "king",
    "house", "tree", "boat", "car", "ball", "book", "garden", "river",
)  # fmt: skip
VERBS = (
    "sees", "finds", "likes", "takes", "moves", "pushes", "follows", "watches", "paints",
    "helps", "needs", "wants",
)  # fmt: skip
PREPOSITIONS = ("near", "behind", "under", "beside", "over", "inside")
ADVERBS = ("today", "slowly", "quickly", "again", "now", "later")
VOCABULARY = frozenset(
    DETERMINERS + ADJECTIVES + NOUNS + VERBS + PREPOSITIONS + ADVERBS + ("put", "is")
)


@dataclass(frozen=True)
class DemoConfig:
    """Size and seed of the demo corpus.

    Attributes:
        seed: makes speakers, sentences and splits reproducible.
        speakers: number of synthetic speakers.
        utterances_per_speaker: sentences spoken by each speaker.
        dev_speakers: speakers held out for the dev split.
        test_speakers: speakers held out for the test split (never seen in train).
        workers: processes synthesising speakers in parallel.
        test_utterances_per_speaker: sentences spoken by each test speaker (0: as many as the
            others). A test split larger than the rest narrows every comparison's interval
            (the seeds' spread on a small test set is mostly which utterances each model gets
            wrong); the extra sentences are drawn after everyone else's, so the other
            speakers' audio is the same whatever this is.
    """

    seed: int
    speakers: int
    utterances_per_speaker: int
    dev_speakers: int
    test_speakers: int
    workers: int
    test_utterances_per_speaker: int = 0

    def __post_init__(self) -> None:
        if self.dev_speakers + self.test_speakers >= self.speakers:
            raise ValueError("dev_speakers + test_speakers must leave at least one train speaker")
        if min(self.speakers, self.utterances_per_speaker, self.workers) < 1:
            raise ValueError("speakers, utterances_per_speaker and workers must be >= 1")
        if self.test_utterances_per_speaker and (
            self.test_utterances_per_speaker < self.utterances_per_speaker
        ):
            raise ValueError("test_utterances_per_speaker must be 0 or >= utterances_per_speaker")


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str
    rate_wpm: int
    pitch: int
    split: str


def _noun_phrase(rng: random.Random) -> list[str]:
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.7:
        words.append(rng.choice(ADJECTIVES))
    return words + [rng.choice(NOUNS)]


def sentence(rng: random.Random) -> str:
    """One sentence of the demo grammar (lowercase, no punctuation)."""
    kind = rng.random()
    if kind < 0.6:
        words = _noun_phrase(rng) + [rng.choice(VERBS)] + _noun_phrase(rng)
        if rng.random() < 0.5:
            words += [rng.choice(PREPOSITIONS)] + _noun_phrase(rng)
    elif kind < 0.8:
        words = ["put"] + _noun_phrase(rng) + [rng.choice(PREPOSITIONS)] + _noun_phrase(rng)
    else:
        words = _noun_phrase(rng) + ["is", rng.choice(ADJECTIVES)]
    if rng.random() < 0.4:
        words.append(rng.choice(ADVERBS))
    return " ".join(words)


def speakers(cfg: DemoConfig) -> list[Speaker]:
    """Distinct speaker voices; the first ones go to test, then dev, the rest to train."""
    rng = random.Random(cfg.seed)
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    if cfg.speakers > len(combos):
        raise ValueError(f"the demo corpus has at most {len(combos)} distinct speakers")
    out = []
    for i, (accent, variant) in enumerate(rng.sample(combos, cfg.speakers)):
        split = (
            "test"
            if i < cfg.test_speakers
            else "dev"
            if i < cfg.test_speakers + cfg.dev_speakers
            else "train"
        )
        out.append(
            Speaker(
                id=f"spk{i:03d}",
                voice=f"{accent}+{variant}",
                rate_wpm=rng.randint(*RATE_WPM),
                pitch=rng.randint(*PITCH),
                split=split,
            )
        )
    return out


@SOURCES.register
class DemoSource(Source):
    """Synthesise the demo corpus into ``<out_dir>/audio/*.flac`` (16 kHz, 16-bit); it reads
    no file (no :attr:`paths`)."""

    name = "demo"
    config_type = DemoConfig
    summary = "the offline demo corpus, synthesised with eSpeak NG"

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        audio_dir = out_dir / "audio"
        audio_dir.mkdir(parents=True, exist_ok=True)
        rng = random.Random(self.cfg.seed + 1)
        voices = speakers(self.cfg)
        texts = [[sentence(rng) for _ in range(self.cfg.utterances_per_speaker)] for _ in voices]
        more = max(0, self.cfg.test_utterances_per_speaker - self.cfg.utterances_per_speaker)
        for spk, lines in zip(voices, texts, strict=True):  # drawn last: the rest stay as they are
            lines += [sentence(rng) for _ in range(more)] if spk.split == "test" else []
        pool = ProcessPoolExecutor(
            self.cfg.workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
        )
        jobs = pool.map(
            speak,
            [s.voice for s in voices], [s.rate_wpm for s in voices], [s.pitch for s in voices],
            [self.cfg.seed * 1000 + i for i in range(len(voices))], texts,
        )  # fmt: skip
        with pool:
            for spk, lines, (rate, audio, phonemes) in zip(voices, texts, jobs, strict=True):
                for j, (text, pcm, phones) in enumerate(zip(lines, audio, phonemes, strict=True)):
                    utt_id = f"{spk.id}-{j:04d}"
                    path = audio_dir / f"{utt_id}.flac"
                    wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
                    write_audio(path, resample(wav, rate, SAMPLE_RATE))
                    yield Entry(
                        id=utt_id, audio=AudioFile(path), transcript=text, speaker=spk.id,
                        split=spk.split, phonemes=" ".join(phones),
                    )  # fmt: skip
