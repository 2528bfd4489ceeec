"""Stage `prepare`: find or synthesise a corpus, check every audio file, write the manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pipeline.audio.files import SAMPLE_RATE, AudioError, resampled_length
from pipeline.core.config import Choice, check, non_negative
from pipeline.core.errors import CorpusError
from pipeline.core.io import atomic_dir, write_json
from pipeline.core.locks import output_lock
from pipeline.core.outputs import Outputs
from pipeline.core.progress import progress_bar
from pipeline.corpus.base import Entry, Source, UtteranceIds, text_of
from pipeline.corpus.manifest import SUMMARY, Utterance, write_manifest
from pipeline.corpus.sources import SOURCES
from pipeline.nn.frames import HUBERT_FRAMES

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class PrepareConfig:
    """The `prepare` section of params.yaml.

    Attributes:
        source: the corpus source and its settings: ``{kind: <a registered source>, ...its
            settings}`` (:func:`pipeline.corpus.sources.described`, `pipeline prepare --help`).
        skip_bad: skip and count unusable audio (missing, unreadable, empty, non-finite,
            shorter than a frame, a segment outside its recording, a source's bad entry)
            instead of stopping.
        max_bad_fraction: even with ``skip_bad``, fail when more than this fraction is bad.
        dev_fraction: share of speakers put in dev when the source gives no split.
        test_fraction: share of speakers put in test when the source gives no split.
    """

    source: Annotated[Choice, SOURCES]
    skip_bad: bool
    max_bad_fraction: float
    dev_fraction: float
    test_fraction: float

    def __post_init__(self) -> None:
        non_negative(self, "dev_fraction", "test_fraction", "max_bad_fraction")
        check(self.max_bad_fraction <= 1, "max_bad_fraction", "must be <= 1")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("dev_fraction + test_fraction must be below 1")


def assign_split(key: str, dev_fraction: float, test_fraction: float) -> str:
    """A stable split for a speaker (or utterance) key, by hashing it to [0, 1)."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12
    return "test" if u < test_fraction else "dev" if u < test_fraction + dev_fraction else "train"


def run(cfg: PrepareConfig, out_dir: Path) -> dict:
    """Build ``out_dir/manifest.jsonl`` (+ ``summary.json``, + demo audio) atomically.

    Audio paths are relative to the corpus's audio root (the folder holding all its files,
    recorded in ``summary.json``), and every row carries the sha256 of the bytes it uses: the
    same corpus moved elsewhere gives the same manifest, byte for byte, so nothing downstream
    reruns.

    Returns:
        The corpus summary (utterances, hours, speakers, per-split counts, vocabulary, skipped,
        audio root).

    Only an absent folder, an empty one or an earlier corpus written by this stage, holding
    nothing else, is replaced, and only the files it wrote are removed. No input may lie inside
    ``out_dir`` or another output of the DVC project around it.

    Raises:
        OutputError: an input lies inside an output (refused before any work), or ``out_dir``
            holds other data (e.g. the user's audio), or another run writes it; nothing is
            touched.
        AudioError: a bad audio file, naming it (unless ``skip_bad``).
        CorpusError: a malformed corpus, or too many bad files.
    """
    source = cfg.source.build()
    outputs = Outputs(out_dir)
    for key, path in source.inputs():
        outputs.check(path, key)
    with output_lock(out_dir), atomic_dir(out_dir, kind="corpus") as tmp, progress_bar() as bar:
        task = bar.add_task(f"prepare ({cfg.source.kind})", total=None, info="")
        rows, bad, ids = [], [], UtteranceIds()
        for entry in source.entries(tmp):
            try:
                rows.append(_checked(entry, cfg, ids, outputs, tmp))
            except AudioError as err:
                if not cfg.skip_bad:
                    raise AudioError(f"{err} (or rerun with --skip-bad)") from err
                log.warning("skipping bad audio: %s", err)
                bad.append(str(err))
            bar.update(task, advance=1, info=f"{len(bad)} skipped")
        _check_corpus(rows, bad, cfg, source)
        root = _audio_root(rows, tmp)
        write_manifest(tmp / MANIFEST, [_relative(r, root) for r in rows])
        summary = summarize(rows, skipped=len(bad))
        summary["audio_root"] = "." if root == _absolute(tmp) else str(root)
        write_json(tmp / SUMMARY, summary)
    log.info("wrote %s: %s", out_dir / MANIFEST, summary)
    return summary


def _checked(entry: Entry, cfg: PrepareConfig, ids: UtteranceIds, outputs: Outputs,
             tmp: Path) -> Utterance:  # fmt: skip
    """The manifest row of ``entry``: its id, transcript and speaker checked (CorpusError,
    never skipped), its audio outside every output (OutputError) and sound (AudioError)."""
    where = entry.where or entry.audio.where
    utt_id = ids.add(entry.id, where)
    transcript = text_of(entry.transcript, where, "the transcript")
    speaker = text_of(entry.speaker, where, "the speaker")
    path = entry.audio.path
    if not entry.error and not path.is_relative_to(tmp):  # the demo's own audio aside
        outputs.check(path, where)
    found = entry.locate()
    least = HUBERT_FRAMES.receptive_field
    if (n := resampled_length(found.samples, found.sample_rate)) < least:
        prefix = f"{entry.where}: " if entry.where else ""
        raise AudioError(
            f"{prefix}{path}{'' if entry.audio.whole else f' ({utt_id})'}: {n} samples at 16 "
            f"kHz, shorter than one teacher frame ({least} samples, "
            f"{1000 * least / SAMPLE_RATE:g} ms)"
        )
    split = entry.split or assign_split(speaker or utt_id, cfg.dev_fraction, cfg.test_fraction)
    return Utterance(
        id=utt_id,
        audio=dataclasses.replace(found.address, path=_absolute(path)),
        samples=found.samples,
        sample_rate=found.sample_rate,
        transcript=transcript,
        speaker=speaker,
        split=split,
        phonemes=entry.phonemes,
        subset=entry.subset,
        sha256=found.sha256,
    )


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute without following symlinks: a corpus whose files are links (a
    DVC or git-annex checkout, a hub cache) keeps the paths it shows, not its blobs'."""
    return Path(os.path.abspath(path))


def _audio_root(rows: list[Utterance], out_dir: Path) -> Path:
    """The folder every audio file is under: the corpus folder being written (the demo's), or
    the deepest folder the source's files share (a LibriSpeech tree, a user list's files)."""
    inside = _absolute(out_dir)
    if all(r.audio.path.is_relative_to(inside) for r in rows):
        return inside
    return Path(os.path.commonpath([str(r.audio.path.parent) for r in rows]))


def _relative(row: Utterance, root: Path) -> Utterance:
    address = dataclasses.replace(row.audio, path=row.audio.path.relative_to(root))
    return dataclasses.replace(row, audio=address)


def _check_corpus(
    rows: list[Utterance], bad: list[str], cfg: PrepareConfig, source: Source
) -> None:
    total = len(rows) + len(bad)
    if not rows:
        where = ", ".join(str(path) for _, path in source.inputs()) or "the source"
        first = f"; first: {bad[0]}" if bad else ""
        raise CorpusError(f"{where}: source {cfg.source.kind!r} gave no usable utterances "
                          f"({len(bad)} bad{first})")  # fmt: skip
    if len(bad) > cfg.max_bad_fraction * total:
        raise CorpusError(
            f"{len(bad)} of {total} audio files are bad (more than max_bad_fraction="
            f"{cfg.max_bad_fraction}); first: {bad[0]}"
        )


def summarize(rows: list[Utterance], skipped: int = 0) -> dict:
    """Corpus statistics for the closing note and the README."""
    words = Counter(w for r in rows for w in r.transcript.lower().split())
    return {
        "utterances": len(rows),
        "hours": round(sum(r.seconds for r in rows) / 3600, 4),
        "speakers": len({r.speaker for r in rows}),
        "splits": dict(Counter(r.split for r in rows)),
        "vocabulary": len(words),
        "skipped": skipped,
    }
