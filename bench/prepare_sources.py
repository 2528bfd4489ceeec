"""`prepare` on one corpus in three shapes: audio files, a Kaldi directory with ``segments``
over long recordings, and parquet shards in the `datasets` layout (goal: each within 1.5x of
the files' time).

Builds ``--utterances`` utterances of about 4 s (16 kHz, 16-bit FLAC, seeded noise, 3.5 to
4.5 s) three ways from the same samples: one FLAC file each plus a JSONL list (the
``manifest`` source); ``--recordings`` long FLAC recordings holding them back to back (0.25 s
apart) with ``wav.scp`` and ``segments`` (the ``kaldi`` source); and parquet shards of 500 rows
in row groups of 100, an Audio struct of the FLAC bytes and a path (the ``hf`` source). Then
times ``prepare`` (the stage function, one process) on each, ``--repeats`` times, and prints
the median, utterances per second and the ratio to the files' time. Building is not timed.

    .venv/bin/python bench/prepare_sources.py [--utterances 3000] [--recordings 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import soundfile as sf

os.environ.setdefault("HUBERT_KD_NO_PROGRESS", "1")

RATE = 16_000
GAP = RATE // 4  # samples between utterances in a recording
SHARD_ROWS, GROUP_ROWS = 500, 100


def flac(data: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, data, RATE, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def build(root: Path, utterances: int, recordings: int) -> dict[str, dict]:
    """The corpus in its three shapes under ``root``; returns each shape's ``prepare.source``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for folder in ("files", "kaldi/audio", "kaldi/data/train", "hf/data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    listing, wav_scp, segments, cells = [], [], [], []
    per_recording = -(-utterances // recordings)
    for r in range(recordings):
        pieces, at = [], 0
        for u in range(r * per_recording, min((r + 1) * per_recording, utterances)):
            samples = int(rng.integers(int(3.5 * RATE), int(4.5 * RATE)))
            wav = (rng.normal(0.0, 0.1, samples) * 32767).clip(-32768, 32767).astype(np.int16)
            name = f"u{u:05d}"
            data = flac(wav)
            (root / "files" / f"{name}.flac").write_bytes(data)
            listing.append(json.dumps({"audio": f"{name}.flac", "id": name, "speaker": f"s{r}"}))
            cells.append({"id": name, "speaker_id": f"s{r}", "audio": {"bytes": data,
                          "path": f"{name}.flac"}})  # fmt: skip
            times = [Decimal(n) / RATE for n in (at, at + samples)]  # exact decimals
            segments.append(f"{name} rec{r:03d} {times[0]} {times[1]}")
            pieces += [wav, np.zeros(GAP, np.int16)]
            at += samples + GAP
        sf.write(str(root / "kaldi" / "audio" / f"rec{r:03d}.flac"), np.concatenate(pieces), RATE,
                 subtype="PCM_16")  # fmt: skip
        wav_scp.append(f"rec{r:03d} audio/rec{r:03d}.flac")
    (root / "files" / "list.jsonl").write_text("\n".join(listing) + "\n")
    data_dir = root / "kaldi" / "data" / "train"
    (data_dir / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (data_dir / "segments").write_text("\n".join(segments) + "\n")
    (data_dir / "utt2spk").write_text("".join(f"{s.split()[0]} s{s.split()[1][3:]}\n"
                                              for s in segments))  # fmt: skip
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.string()), ("speaker_id", pa.string()), ("audio", audio)])
    shards = -(-len(cells) // SHARD_ROWS)
    for i in range(shards):
        rows = cells[i * SHARD_ROWS : (i + 1) * SHARD_ROWS]
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, root / "hf" / "data" / f"train-{i:05d}-of-{shards:05d}.parquet",
                       row_group_size=GROUP_ROWS)  # fmt: skip
    return {
        "files": {"kind": "manifest", "path": str(root / "files" / "list.jsonl")},
        "kaldi segments": {"kind": "kaldi", "dir": str(data_dir), "root": str(root / "kaldi")},
        "parquet": {"kind": "hf", "path": str(root / "hf")},
    }


def timed(source: dict, out: Path, repeats: int) -> tuple[float, int]:
    """Median seconds of ``prepare`` over ``repeats`` runs, after one untimed run (the page
    cache, lazy imports), and the utterances it listed."""
    from pipeline.core.config import from_dict
    from stages import prepare

    section = {"source": source, "skip_bad": False, "max_bad_fraction": 0.0,
               "dev_fraction": 0.1, "test_fraction": 0.1}  # fmt: skip
    cfg = from_dict(prepare.PrepareConfig, section, "prepare")
    prepare.run(cfg, out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        summary = prepare.run(cfg, out)
        times.append(time.perf_counter() - start)
    return statistics.median(times), summary["utterances"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=3000)
    parser.add_argument("--recordings", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sources = build(Path(tmp), args.utterances, args.recordings)
        built = time.perf_counter() - start
        print(f"built {args.utterances} utterances three ways in {built:.0f} s")
        base = None
        for shape, source in sources.items():
            seconds, count = timed(source, Path(tmp) / "out" / shape.split()[0], args.repeats)
            base = base or seconds
            print(f"{shape:15s} {seconds:7.2f} s  {count / seconds:7.0f} utterances/s  "
                  f"{seconds / base:5.2f}x the files' time")  # fmt: skip


if __name__ == "__main__":
    main()
