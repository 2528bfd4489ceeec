"""Phoneme transcripts for the phoneme recognition probe (PER), from any corpus with text.

Sources (``evaluate.probe.phonemes``), registered by kind:

- ``manifest``: the manifest's own ``phonemes`` (the demo corpus carries eSpeak NG's, in each
  speaker's accent);
- ``espeak``: eSpeak NG's phonemizer on the transcript, in one ``voice`` (IPA, stress removed);
- ``lexicon``: a pronunciation lexicon in LibriSpeech's format (``WORD PH1 PH2 ...`` per line,
  the first pronunciation of a word wins), ARPAbet stress digits removed unless ``stress``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pipeline.core.errors import CorpusError
from pipeline.core.registry import Registry
from pipeline.corpus.lines import numbered_lines
from pipeline.corpus.manifest import Utterance

PHONEMIZERS: Registry = Registry("phoneme source")


def normalize_text(text: str) -> str:
    """A transcript as the probes read it: lower case, letters, digits and apostrophes only,
    single spaces (applied to references and hypotheses alike)."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@dataclass(frozen=True)
class ManifestPhonemesConfig:
    """No settings: the manifest's ``phonemes`` field, as `prepare` wrote it."""


@PHONEMIZERS.register
class ManifestPhonemes:
    name = "manifest"
    config_type = ManifestPhonemesConfig

    def __init__(self, cfg: ManifestPhonemesConfig) -> None:
        pass

    def __call__(self, utt: Utterance) -> str:
        return utt.phonemes


@dataclass(frozen=True)
class ESpeakPhonemesConfig:
    """Attributes:
    voice: eSpeak NG's voice, i.e. accent (``en-us``, ``en``, ``en-gb-scotland``, ...).
    """

    voice: str = "en-us"


@PHONEMIZERS.register
class ESpeakPhonemes:
    name = "espeak"
    config_type = ESpeakPhonemesConfig

    def __init__(self, cfg: ESpeakPhonemesConfig) -> None:
        from pipeline.corpus.espeak import ESpeak

        self.engine = ESpeak(seed=0)
        self.engine.set_voice(cfg.voice, rate_wpm=175, pitch=50)  # rate and pitch: audio only

    def __call__(self, utt: Utterance) -> str:
        return " ".join(self.engine.phonemes(normalize_text(utt.transcript)))


@dataclass(frozen=True)
class LexiconConfig:
    """Attributes:
    path: the lexicon file (LibriSpeech's ``librispeech-lexicon.txt`` is one).
    stress: keep ARPAbet's stress digits (``AH0``); without them, 39 phonemes.
    """

    path: str
    stress: bool = False


@cache
def read_lexicon(path: str, stress: bool) -> dict[str, str]:
    """``WORD -> "PH1 PH2 ..."`` (words upper case; the first pronunciation of each).

    Raises:
        CorpusError: the file is missing, or a line has no pronunciation (named).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CorpusError(f"{file}: lexicon not found (evaluate.probe.phonemes.path)")
    lexicon: dict[str, str] = {}
    for where, line in numbered_lines(file, what="lexicon"):
        fields = line.split()
        if len(fields) < 2:
            raise CorpusError(f"{where}: expected 'WORD PH1 PH2 ...', got {line!r}")
        phones = fields[1:] if stress else [p.rstrip("012") for p in fields[1:]]
        lexicon.setdefault(fields[0].upper(), " ".join(phones))
    return lexicon


@PHONEMIZERS.register
class LexiconPhonemes:
    name = "lexicon"
    config_type = LexiconConfig

    def __init__(self, cfg: LexiconConfig) -> None:
        self.path = cfg.path
        self.lexicon = read_lexicon(cfg.path, cfg.stress)

    def __call__(self, utt: Utterance) -> str:
        out = []
        for word in normalize_text(utt.transcript).split():
            if word.upper() not in self.lexicon:
                raise CorpusError(
                    f"{self.path}: no pronunciation of {word!r} (utterance {utt.id}); add it to "
                    "the lexicon, or use evaluate.probe.phonemes {kind: espeak}"
                )
            out.append(self.lexicon[word.upper()])
        return " ".join(out)
