"""Lhotse manifests (the k2/icefall convention): a cut set, or recordings with supervisions,
as ``.jsonl`` or ``.jsonl.gz``, read through lhotse itself (an optional extra)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.core.errors import CorpusError
from pipeline.corpus.base import SOURCES, Entry, Span, safe_id


@dataclass(frozen=True)
class LhotseConfig:
    """Give ``cuts``, or ``recordings`` with (or without) ``supervisions``.

    Attributes:
        cuts: a cut set: each mono or multi-channel cut is an utterance, a time range of its
            recording (mixed cuts have no single recording and are bad entries).
        recordings: a recording set; with ``supervisions``, each supervision is an utterance
            (a time range of its recording); without, each whole recording is one.
        supervisions: a supervision set over ``recordings``.
        root: the folder relative audio paths start from; "" = the manifest's folder.
    """

    cuts: str = ""
    recordings: str = ""
    supervisions: str = ""
    root: str = ""

    def __post_init__(self) -> None:
        if bool(self.cuts) == bool(self.recordings):
            raise ValueError("give either cuts or recordings (with or without supervisions)")
        if self.supervisions and not self.recordings:
            raise ValueError("supervisions need the recordings they point into")


def _lhotse() -> Any:
    try:
        import lhotse.serialization
    except ImportError as err:
        raise ImportError(
            "prepare.source kind lhotse needs lhotse: pip install 'hubert-kd[corpora]' (or lhotse)"
        ) from err
    return lhotse.serialization


@SOURCES.register
class LhotseSource:
    """Utterances of a Lhotse cut set or supervision set. Each recording must be one audio
    file (any channel count: channels are averaged, whichever a cut or supervision names);
    a recording read from a URL, a command or memory, split over several files, or with
    transforms other than resampling is a bad entry, named with its manifest line."""

    name = "lhotse"
    config_type = LhotseConfig

    def __init__(self, cfg: LhotseConfig) -> None:
        self.cfg = cfg

    def inputs(self) -> list[tuple[str, Path]]:
        named = (("cuts", self.cfg.cuts), ("recordings", self.cfg.recordings),
                 ("supervisions", self.cfg.supervisions), ("root", self.cfg.root))  # fmt: skip
        return [(f"prepare.source.{key}", Path(value).expanduser()) for key, value in named
                if value]  # fmt: skip

    def entries(self, out_dir: Path) -> Iterator[Entry]:
        if self.cfg.cuts:
            for where, cut in self._items(self.cfg.cuts):
                yield self._cut(where, cut)
            return
        recordings = {rec.id: (where, rec) for where, rec in self._items(self.cfg.recordings)}
        if not self.cfg.supervisions:
            for where, rec in recordings.values():
                yield _entry(where, rec.id, self._audio(rec))
            return
        for where, sup in self._items(self.cfg.supervisions):
            if sup.recording_id not in recordings:
                error = f"recording {sup.recording_id!r} is not in {self.cfg.recordings}"
                yield _entry(where, sup.id, (Path(self.cfg.recordings), error), [sup])
                continue
            audio = self._audio(recordings[sup.recording_id][1])
            span = Span(_decimal(sup.start), duration=_decimal(sup.duration))
            yield _entry(where, sup.id, audio, [sup], span)

    def _cut(self, where: str, cut: Any) -> Entry:
        recording = getattr(cut, "recording", None)
        if recording is None:
            kind = type(cut).__name__
            return _entry(where, cut.id, (Path(self.cfg.cuts), f"a {kind} has no recording of "
                                          "its own to cut from"))  # fmt: skip
        span = Span(_decimal(cut.start), duration=_decimal(cut.duration))
        return _entry(where, cut.id, self._audio(recording), cut.supervisions, span)

    def _items(self, manifest: str) -> Iterator[tuple[str, Any]]:
        """``(path:line, lhotse object)`` for each line of a jsonl(.gz) manifest."""
        serialization = _lhotse()
        path = Path(manifest).expanduser()
        if not path.is_file():
            raise CorpusError(f"{path}: Lhotse manifest not found (prepare.source)")
        with serialization.open_best(path, "r") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    yield where, serialization.deserialize_item(json.loads(line))
                except (ValueError, TypeError, KeyError) as err:
                    raise CorpusError(f"{where}: not a Lhotse manifest item ({err})") from err

    def _audio(self, recording: Any) -> tuple[Path, str]:
        """The recording's file (relative paths from ``root``) and what is wrong with it."""
        manifest = Path(self.cfg.cuts or self.cfg.recordings).expanduser()
        root = Path(self.cfg.root).expanduser() if self.cfg.root else manifest.parent
        sources = recording.sources
        if len(sources) != 1 or sources[0].type != "file":
            kinds = ", ".join(s.type for s in sources)
            error = f"recording {recording.id!r} comes from {len(sources)} source(s) ({kinds})"
            return manifest, f"{error}; hubert-kd reads recordings held in one file"
        transforms = [t if isinstance(t, dict) else t.to_dict() for t in recording.transforms or []]
        others = [t.get("name") for t in transforms if t.get("name") != "Resample"]
        if others:
            return manifest, (f"recording {recording.id!r} has transforms {others}; hubert-kd "
                              "reads recordings as stored (resampling aside)")  # fmt: skip
        path = Path(sources[0].source).expanduser()
        return (path if path.is_absolute() else root / path), ""


def _entry(where: str, raw_id: str, audio: tuple[Path, str], supervisions=(), span=None) -> Entry:
    try:
        utt_id = safe_id(raw_id)
    except ValueError as err:
        raise CorpusError(f"{where}: {err}") from err
    sups = sorted(supervisions, key=lambda s: s.start)
    return Entry(
        id=utt_id,
        audio=audio[0],
        transcript=" ".join(s.text for s in sups if s.text),
        speaker=next((s.speaker for s in sups if s.speaker), ""),
        span=span,
        where=where,
        error=audio[1],
    )


def _decimal(seconds: float) -> Decimal:
    """A float as the decimal it was written as (``1.1``, not 1.100000000000000088...)."""
    return Decimal(repr(seconds))
