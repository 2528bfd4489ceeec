"""Corpora as speech people keep them: Kaldi data directories (with segments), Lhotse cut sets
and supervisions, `datasets` parquet shards and save_to_disk folders. Each is built with the
real library, prepared, read sample-exactly (as the same audio cut into files reads) and cached
by a tiny teacher into the cache the cut files give; each bad input stops `prepare` with one
line naming its file and line (or row), or is skipped and counted with --skip-bad."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_params
from corpora import RATE, UTTS, cut, cut_files, hf_saved, hf_shards, kaldi_dir, lhotse_manifests

from pipeline.audio.embedded import TableRow
from pipeline.audio.files import AudioFile, FileRange, read_audio
from pipeline.core.config import section
from pipeline.core.errors import AudioError, CorpusError
from pipeline.corpus.manifest import (
    audio_batches,
    read_manifest,
    read_utterance,
    write_manifest,
)
from pipeline.teacher.caching import CacheTeacherConfig
from stages import cache_teacher, prepare


def _prepare(source: dict, out: Path, **changes) -> Path:
    params = tiny_params()
    params["prepare"]["source"] = source
    params["prepare"].update(changes)
    prepare.run(section(params, "prepare", prepare.PrepareConfig), out)
    return out / prepare.MANIFEST


def _kaldi(root: Path, segments: bool = True) -> dict:
    data = kaldi_dir(root, segments)
    return {"kind": "kaldi", "dir": str(data), "root": str(root)}


def _lhotse(root: Path, *names: str) -> dict:
    paths = lhotse_manifests(root)
    return {"kind": "lhotse", **{name: str(paths[name]) for name in names}}


SOURCES = {
    "kaldi-segments": lambda root: _kaldi(root),
    "lhotse-cuts": lambda root: _lhotse(root, "cuts"),
    "lhotse-supervisions": lambda root: _lhotse(root, "recordings", "supervisions"),
    "hf-parquet": lambda root: {"kind": "hf", "path": str(hf_shards(root))},
    "hf-save-to-disk": lambda root: {"kind": "hf", "path": str(hf_saved(root))},
}


def test_every_stage_reads_audio_through_the_manifest_row():
    """No stage reads a file by its path alone: read_utterance, which reads a row's address as
    its kind does, is the one way in, so no stage knows which shape the corpus had."""
    calls = [
        str(path.relative_to(ROOT))
        for package in ("pipeline", "stages", "storage", "cli")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"\b(read_audio|read_range|embedded_audio)\(", path.read_text())
        and path.parent != ROOT / "pipeline" / "audio"  # the address kinds
    ]
    assert calls == []
    manifest = (ROOT / "pipeline" / "corpus" / "manifest.py").read_text()
    assert re.search(r"\.read\(utt\.samples\)", manifest)


def test_a_corpus_of_files_keeps_its_manifest_byte_for_byte(tiny_corpus, tmp_path):
    """The address fields a file does not need are left out, so the manifests (and the teacher
    caches, whose identity hashes them) of corpora of files stay as they were."""
    text = tiny_corpus.read_text()
    assert not {"start", "row", "column"} & set(json.loads(text.splitlines()[0]))
    write_manifest(tmp_path / "again.jsonl", read_manifest(tiny_corpus))
    assert (tmp_path / "again.jsonl").read_text() == text


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_reads_the_samples_its_utterances_cut_into_files_hold(tmp_path, kind):
    """Each row reads (read_utterance, and the batches evaluation and export's checks read)
    exactly what the file cut from its recording at the same samples reads; its identity is
    that of the bytes it uses."""
    manifest = _prepare(SOURCES[kind](tmp_path / "corpus"), tmp_path / "data")
    rows = read_manifest(manifest)
    assert [r.id for r in rows] == [u.id for u in UTTS]  # in the source's order
    assert {r.transcript for r in rows} == {u.text for u in UTTS}
    assert {r.speaker for r in rows} == {"s1", "s2"}
    if kind == "hf-save-to-disk":  # its split folders: train, validation
        assert [r.split for r in rows] == ["train"] * 4 + ["dev"] * 2
    files = _prepare({"kind": "manifest", "path": str(cut_files(tmp_path / "cuts", rows))},
                     tmp_path / "files")  # fmt: skip
    for (ids, wav, lengths), (ids_f, wav_f, lengths_f) in zip(
        audio_batches(rows, manifest, 2.0), audio_batches(read_manifest(files), files, 2.0),
        strict=True,
    ):  # fmt: skip
        assert [u.id for u in ids] == [u.id for u in ids_f]
        assert torch.equal(wav, wav_f) and torch.equal(lengths, lengths_f)
    for row, utt in zip(rows, UTTS, strict=True):
        want = read_audio(tmp_path / "cuts" / f"{row.id}.flac")  # stereo averaged
        assert torch.equal(read_utterance(row, manifest), want), row.id
        assert row.samples == utt.last - utt.first and row.sample_rate == RATE
        if kind.startswith("hf"):  # the embedded bytes, named by file and row
            assert isinstance(row.audio, TableRow) and row.audio.column == "audio"
            assert row.sha256 == hashlib.sha256((tmp_path / "cuts" / f"{row.id}.flac")
                                                .read_bytes()).hexdigest()  # fmt: skip
        else:  # a range of the recording: its decoded samples (from 0: as the whole file)
            assert row.audio.path.as_posix() == f"{utt.recording}.flac"
            assert row.audio == (FileRange(row.audio.path, utt.first) if utt.first else
                                 AudioFile(row.audio.path))  # fmt: skip
            decoded = (cut(utt) / 32768).astype("<f4")
            assert row.sha256 == hashlib.sha256(decoded.tobytes()).hexdigest()


def test_a_segment_of_an_8_khz_recording_reads_as_its_cut_file(tmp_path):
    """Seeking and resampling the range alone gives what resampling the cut file gives."""
    import soundfile as sf

    rec = np.random.default_rng(0).integers(-4000, 4000, size=(16_000, 2), dtype=np.int16)
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    sf.write(str(data / "rec.flac"), rec, 8_000, subtype="PCM_16")
    sf.write(str(tmp_path / "cut.flac"), rec[2_000:12_001], 8_000, subtype="PCM_16")
    (data / "wav.scp").write_text("r rec.flac\n")
    (data / "segments").write_text("u r 0.25 1.5000625\n")  # 12000.5 samples: up to 12001
    manifest = _prepare({"kind": "kaldi", "dir": str(data)}, tmp_path / "out")
    (row,) = read_manifest(manifest)
    assert (row.audio.start, row.samples, row.sample_rate) == (2_000, 10_001, 8_000)
    wav = read_utterance(row, manifest)
    assert len(wav) == 20_002 and torch.equal(wav, read_audio(tmp_path / "cut.flac"))


def test_lhotse_reads_the_samples_this_project_reads(tmp_path):
    """lhotse's own reading of each cut (every channel, then averaged) gives our samples."""
    from lhotse import load_manifest

    manifest = _prepare(_lhotse(tmp_path / "corpus", "cuts"), tmp_path / "data")
    rows = {r.id: r for r in read_manifest(manifest)}
    for c in load_manifest(tmp_path / "corpus" / "cuts.jsonl.gz"):
        theirs = c.recording.load_audio(offset=c.start, duration=c.duration).mean(axis=0)
        np.testing.assert_array_equal(read_utterance(rows[c.id], manifest).numpy(), theirs)


def _same_per_utterance(a: Path, b: Path) -> None:
    """The two caches hold the same utterances with the same fields, exactly (the same
    utterances and lengths give the same batches)."""
    from storage import open_cache

    ra, rb = open_cache(a), open_cache(b)
    assert sorted(ra.keys()) == sorted(rb.keys()) == sorted(u.id for u in UTTS)
    for key in ra.keys():
        fa, fb = ra.read(key), rb.read(key)
        assert fa.keys() == fb.keys() and "targets" in fa
        for name in fa:
            np.testing.assert_array_equal(fa[name], fb[name], err_msg=f"{key} {name}")


def _parts(cache: Path) -> dict[str, bytes]:
    return {p.relative_to(cache).as_posix(): p.read_bytes()
            for p in (cache / "parts").rglob("*") if p.is_file()}  # fmt: skip


def _cache(manifest: Path, out: Path) -> Path:
    cfg = section(tiny_params(), "cache_teacher", CacheTeacherConfig)
    cache_teacher.run(cfg, manifest, out)
    return out


@pytest.mark.slow  # 5 sources, each prepared twice and cached twice
@pytest.mark.parametrize(
    "kind", ["kaldi-segments", "lhotse-cuts", "hf-parquet", "hf-save-to-disk", "kaldi-files"]
)
def test_the_teacher_caches_each_source_as_it_caches_the_same_audio_in_files(tmp_path, kind):
    """Stage one over the container gives the logits, targets and features the cut files
    give; where the rows' identities match (the embedded bytes are the files' bytes; Kaldi
    without segments lists files), the parts are the very same, byte for byte."""
    if kind == "kaldi-files":
        source = _kaldi(tmp_path / "corpus", segments=False)
    else:
        source = SOURCES[kind](tmp_path / "corpus")
    manifest = _prepare(source, tmp_path / "data")
    listing = cut_files(tmp_path / "cuts", read_manifest(manifest))
    files = _prepare({"kind": "manifest", "path": str(listing)}, tmp_path / "files")
    ours, theirs = _cache(manifest, tmp_path / "cache"), _cache(files, tmp_path / "reference")
    _same_per_utterance(ours, theirs)
    if kind in ("hf-parquet", "hf-save-to-disk", "kaldi-files"):
        assert _parts(ours) == _parts(theirs) != {}


@pytest.mark.slow  # a corpus prepared and cached, a student trained
def test_a_student_trains_on_a_segmented_corpus(tmp_path):
    """Stage two reads audio for a log-mel front end: from the recordings, by seeking."""
    from pipeline.students import parse_students
    from pipeline.training.config import TrainConfig
    from stages import train_student

    manifest = _prepare(_kaldi(tmp_path / "corpus"), tmp_path / "data")
    cache = _cache(manifest, tmp_path / "cache")
    params = tiny_params()
    params["train"].update(steps=2, checkpoint_every=0)
    fbank = params["students"]["dkd_b4"]
    fbank["model"].update(frontend="fbank", frontend_init="random")
    student = {"fbank": parse_students(params)["dkd_b4"]}
    out = tmp_path / "fbank"
    train_student.run(student, section(params, "train", TrainConfig), manifest, cache,
                      {"fbank": out}, tmp_path / "state.pt", out)  # fmt: skip
    assert (out / "model.pt").is_file()


# --- bad input: one line naming the file and the line or row; skipped with --skip-bad --------


def _missing_wav(root):
    source = _kaldi(root, segments=False)
    (root / "utts" / "a-2.flac").unlink()
    return source, r"wav\.scp:2: \S+/utts/a-2\.flac: audio file not found"


def _piped_wav(root):
    source = _kaldi(root, segments=False)
    scp = Path(source["dir"]) / "wav.scp"
    lines = scp.read_text().splitlines()
    lines[2] = "a-3 flac -dc utts/a-3.flac |"
    scp.write_text("\n".join(lines) + "\n")
    return source, r"wav\.scp:3: 'flac -dc utts/a-3\.flac \|' is a piped command"


def _segment_past_the_end(root):
    source = _kaldi(root)
    segments = Path(source["dir"]) / "segments"
    segments.write_text(segments.read_text().replace("b-2 rec-b 0.6 1.2", "b-2 rec-b 0.6 9.5"))
    return source, (r"segments:5: \S+/rec-b\.flac: the range ends at sample 152000 \(9\.5 s\), "
                    r"past the recording's end \(30400 samples, 1\.9 s\)")  # fmt: skip


def _unknown_recording(root):
    source = _kaldi(root)
    segments = Path(source["dir"]) / "segments"
    segments.write_text(segments.read_text().replace("a-1 rec-a", "a-1 rec-z"))
    return source, r"segments:1: recording 'rec-z' is not in wav\.scp"


def _row_without_audio(root):
    return ({"kind": "hf", "path": str(hf_shards(root, nulls=("a-2",)))},
            r"train-00000-of-00002\.parquet: row 1: no audio bytes in column 'audio'")  # fmt: skip


def _cut_without_its_file(root):
    source = _lhotse(root, "cuts")
    (root / "audio" / "rec-b.flac").rename(root / "audio" / "moved.flac")
    return source, r"cuts\.jsonl\.gz:4: \S+/rec-b\.flac: audio file not found"


@pytest.mark.parametrize(
    "bad",
    [_missing_wav, _piped_wav, _segment_past_the_end, _unknown_recording, _row_without_audio,
     _cut_without_its_file],
    ids=lambda f: f.__name__.strip("_"),
)  # fmt: skip
def test_bad_input_is_named_in_one_line_or_skipped(tmp_path, bad):
    source, message = bad(tmp_path / "corpus")
    with pytest.raises(AudioError, match=message) as caught:
        _prepare(source, tmp_path / "data")
    assert "\n" not in str(caught.value) and str(caught.value).endswith("--skip-bad)")
    assert not (tmp_path / "data").exists()  # nothing half-written
    skipped = 3 if bad is _cut_without_its_file else 1  # rec-b holds three cuts
    manifest = _prepare(source, tmp_path / "data", skip_bad=True, max_bad_fraction=0.5)
    summary = json.loads((manifest.parent / prepare.SUMMARY).read_text())
    assert summary["skipped"] == skipped and summary["utterances"] == len(UTTS) - skipped


def test_a_malformed_kaldi_line_is_a_corpus_error_naming_it(tmp_path):
    source = _kaldi(tmp_path / "corpus")
    segments = Path(source["dir"]) / "segments"
    segments.write_text(segments.read_text().replace("a-2 rec-a 0.8 1.28", "a-2 rec-a 0.8"))
    with pytest.raises(CorpusError, match=r"segments:2: expected 4 fields, got 'a-2 rec-a 0\.8'"):
        _prepare(source, tmp_path / "data")
    segments.write_text(segments.read_text().replace("a-2 rec-a 0.8", "a-2 rec-a 0.8 soon"))
    with pytest.raises(CorpusError, match=r"segments:2: 'soon' is not a time in seconds"):
        _prepare(source, tmp_path / "data")


def _damaged_parquet_head(root: Path) -> Path:
    path = hf_shards(root)
    shard = path / "data" / "train-00000-of-00002.parquet"
    data = bytearray(shard.read_bytes())
    data[4:200] = bytes(b ^ 0xFF for b in data[4:200])  # pyarrow's complaint: three lines
    shard.write_bytes(bytes(data))
    return path


def _truncated_arrow(root: Path) -> Path:
    path = hf_saved(root)
    arrow = sorted(path.glob("train/*.arrow"))[0]
    arrow.write_bytes(arrow.read_bytes()[:100])
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            _damaged_parquet_head,
            r"train-00000-of-00002\.parquet: cannot read the parquet shard "
            r"\(.+\)$",
        ),
        (_truncated_arrow, r"data-00000-of-00001\.arrow: cannot read the Arrow file \(.+\)$"),
    ],
)
def test_a_damaged_table_file_is_named_in_one_line(tmp_path, damage, message):
    with pytest.raises(CorpusError, match=message) as caught:
        _prepare({"kind": "hf", "path": str(damage(tmp_path / "corpus"))}, tmp_path / "data")
    assert "\n" not in str(caught.value)
