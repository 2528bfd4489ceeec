"""Tiny corpora in the shapes speech people keep them, built with the real libraries: a Kaldi
data directory with ``segments``, a Lhotse cut set (and recordings + supervisions), parquet
shards in the `datasets` layout and a `datasets` ``save_to_disk`` folder; and the same
utterances cut into files, for comparison.

Two 16 kHz FLAC recordings (16-bit, so decoding is exact): ``rec-a`` mono, ``rec-b`` stereo.
Utterance boundaries are written as times; one start (1.50003125 s = 24000.5 samples) and its
end test rounding half up, and one segment runs to the recording's end (Kaldi's end time -1)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16_000
RECORDINGS = {"rec-a": (40_000, 1), "rec-b": (30_400, 2)}  # samples, channels


@dataclass(frozen=True)
class Utt:
    id: str
    recording: str
    start: str  # seconds, as written in the corpus files
    end: str  # seconds; "-1": to the recording's end
    first: int  # the samples they mean: [first, last)
    last: int
    speaker: str
    text: str


UTTS = [
    Utt("a-1", "rec-a", "0.1", "0.7", 1_600, 11_200, "s1", "hello one"),
    Utt("a-2", "rec-a", "0.8", "1.28", 12_800, 20_480, "s1", "hello two"),
    Utt("a-3", "rec-a", "1.50003125", "2.10003125", 24_001, 33_601, "s1", "hello three"),
    Utt("b-1", "rec-b", "0", "0.6", 0, 9_600, "s2", "good day"),
    Utt("b-2", "rec-b", "0.6", "1.2", 9_600, 19_200, "s2", "good night"),
    Utt("b-3", "rec-b", "1.3", "-1", 20_800, 30_400, "s2", "good bye"),
]


def samples(recording: str) -> np.ndarray:
    """A recording's 16-bit samples ``(samples, channels)``: seeded noise."""
    n, channels = RECORDINGS[recording]
    rng = np.random.default_rng(sum(map(ord, recording)))
    return rng.integers(-4000, 4000, size=(n, channels), dtype=np.int16)


def flac_bytes(data: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, data, RATE, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def write_recordings(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in RECORDINGS:
        paths[name] = folder / f"{name}.flac"
        paths[name].write_bytes(flac_bytes(samples(name)))
    return paths


def cut(utt: Utt) -> np.ndarray:
    return samples(utt.recording)[utt.first : utt.last]


def cut_files(folder: Path, rows) -> Path:
    """Each utterance's samples in a file of its own, and a list of them (``manifest`` kind)
    with ``rows``' ids, speakers, splits and transcripts, in their order; returns the list."""
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {u.id: u for u in UTTS}
    lines = []
    for row in rows:
        path = folder / f"{row.id}.flac"
        path.write_bytes(flac_bytes(cut(by_id[row.id])))
        lines.append({"audio": path.name, "id": row.id, "speaker": row.speaker,
                      "split": row.split, "transcript": row.transcript})  # fmt: skip
    listing = folder / "list.jsonl"
    listing.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return listing


def kaldi_dir(root: Path, segments: bool = True) -> Path:
    """``root/data/train/`` with ``wav.scp`` (paths relative to ``root``), ``text``,
    ``utt2spk`` and ``segments`` into the recordings in ``root/audio/``; or, without
    segments, a ``wav.scp`` of the utterances cut into files (``root/utts/``). Returns the
    data directory."""
    data = root / "data" / "train"
    data.mkdir(parents=True, exist_ok=True)
    if segments:
        write_recordings(root / "audio")
        scp = [f"{r} audio/{r}.flac\n" for r in RECORDINGS]
        (data / "segments").write_text(
            "".join(f"{u.id} {u.recording} {u.start} {u.end}\n" for u in UTTS)
        )
    else:
        (root / "utts").mkdir(exist_ok=True)
        for u in UTTS:
            (root / "utts" / f"{u.id}.flac").write_bytes(flac_bytes(cut(u)))
        scp = [f"{u.id} utts/{u.id}.flac\n" for u in UTTS]
    (data / "wav.scp").write_text("".join(scp))
    (data / "text").write_text("".join(f"{u.id} {u.text}\n" for u in UTTS))
    (data / "utt2spk").write_text("".join(f"{u.id} {u.speaker}\n" for u in UTTS))
    return data


def lhotse_manifests(root: Path) -> dict[str, Path]:
    """Recordings, supervisions and the cut set of one cut per supervision (lhotse's own
    ``trim_to_supervisions``), as ``.jsonl.gz`` written by lhotse."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    paths = write_recordings(root / "audio")
    recordings = RecordingSet.from_recordings(
        Recording.from_file(paths[name], recording_id=name) for name in RECORDINGS
    )
    supervisions = SupervisionSet.from_segments(
        SupervisionSegment(
            id=u.id, recording_id=u.recording, start=float(u.start), channel=0,
            duration=(u.last - u.first) / RATE if u.end == "-1" else float(u.end) - float(u.start),
            text=u.text, speaker=u.speaker,
        )
        for u in UTTS
    )  # fmt: skip
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    out = {
        "recordings": root / "recordings.jsonl.gz",
        "supervisions": root / "supervisions.jsonl.gz",
        "cuts": root / "cuts.jsonl.gz",
    }
    recordings.to_file(out["recordings"])
    supervisions.to_file(out["supervisions"])
    cuts.trim_to_supervisions(keep_overlapping=False).to_file(out["cuts"])
    return out


def _audio_table(utts: list[Utt], nulls: tuple[str, ...] = ()):
    """The utterances as an Arrow table with `datasets`' own schema for an Audio column (a
    struct of FLAC ``bytes`` and ``path``); utterances in ``nulls`` have no bytes."""
    import pyarrow as pa
    from datasets import Audio, Features, Value

    features = Features({"id": Value("string"), "speaker_id": Value("string"),
                         "text": Value("string"), "audio": Audio()})  # fmt: skip
    return pa.Table.from_pydict(
        {"id": [u.id for u in utts], "speaker_id": [u.speaker for u in utts],
         "text": [u.text for u in utts],
         "audio": [{"bytes": None if u.id in nulls else flac_bytes(cut(u)),
                    "path": f"{u.id}.flac"} for u in utts]},
        schema=features.arrow_schema,
    )  # fmt: skip


def hf_saved(root: Path) -> Path:
    """The utterances as `datasets` saves a DatasetDict (``save_to_disk``): ``train`` (the first
    four) and ``validation`` folders of Arrow files. Returns ``root``."""
    from datasets import Dataset, DatasetDict

    splits = {"train": UTTS[:4], "validation": UTTS[4:]}
    DatasetDict({name: Dataset(_audio_table(utts)) for name, utts in splits.items()}).save_to_disk(
        str(root)
    )
    return root


def hf_shards(root: Path, nulls: tuple[str, ...] = ()) -> Path:
    """``root/data/train-0000N-of-00002.parquet``: the utterances as a `datasets` Audio column
    (its own Arrow schema, a struct of FLAC ``bytes`` and ``path``), two rows per row group;
    utterances in ``nulls`` have no bytes. Returns ``root``."""
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True, exist_ok=True)
    halves = [UTTS[:4], UTTS[4:]]
    for i, utts in enumerate(halves):
        pq.write_table(_audio_table(utts, nulls),
                       root / "data" / f"train-{i:05d}-of-{len(halves):05d}.parquet",
                       row_group_size=2)  # fmt: skip
    return root
