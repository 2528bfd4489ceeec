"""Corpus sources and the prepare stage: demo, LibriSpeech folders, user lists, bad audio."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_params

from pipeline.audio.files import AudioError, read_audio
from pipeline.core.config import section
from pipeline.core.errors import CorpusError
from pipeline.corpus.demo import VOCABULARY, DemoConfig, sentence, speakers
from pipeline.corpus.manifest import audio_path, read_manifest
from stages import prepare


def _cfg(source: dict | None = None, **overrides) -> prepare.PrepareConfig:
    """The tiny prepare section with another ``source`` (``{"kind": ..., ...}``) and changes."""
    params = tiny_params()
    if source is not None:
        params["prepare"]["source"] = source
    params["prepare"].update(overrides)
    return section(params, "prepare", prepare.PrepareConfig)


def _tone(path, seconds=0.5, rate=16000, channels=1, value=None, subtype=None):
    t = np.arange(int(seconds * rate)) / rate
    data = 0.3 * np.sin(2 * np.pi * 220 * t)
    if value is not None:
        data[len(data) // 2] = value
    data = np.stack([data] * channels, axis=1) if channels > 1 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_demo_corpus_speakers_splits_and_text(tiny_corpus):
    rows = read_manifest(tiny_corpus)
    assert len(rows) == 13  # 3 a speaker, 4 for the test speaker
    by_split = {s: {r.speaker for r in rows if r.split == s} for s in ("train", "dev", "test")}
    assert len(by_split["train"]) == 2 and len(by_split["dev"]) == 1 and len(by_split["test"]) == 1
    assert not (by_split["test"] & by_split["train"]) and not (by_split["dev"] & by_split["train"])
    for row in rows:
        assert row.sample_rate == 16000 and row.samples > 8000
        assert set(row.transcript.split()) <= VOCABULARY
        assert row.phonemes  # eSpeak's own phonemes of the sentence
        wav = read_audio(audio_path(row, tiny_corpus))
        assert len(wav) == row.samples and 0.01 < float(wav.abs().max()) <= 1.0
    summary = json.loads((tiny_corpus.parent / prepare.SUMMARY).read_text())
    assert summary["utterances"] == 13 and summary["speakers"] == 4
    assert summary["splits"]["test"] == 4


def test_demo_is_deterministic_for_a_seed(tiny_corpus, tmp_path):
    prepare.run(_cfg(), tmp_path / "again")
    assert (tmp_path / "again" / "manifest.jsonl").read_text() == tiny_corpus.read_text()
    first = read_manifest(tiny_corpus)[0]
    a = sf.read(str(audio_path(first, tiny_corpus)))[0]
    b = sf.read(str(tmp_path / "again" / first.audio.path))[0]
    np.testing.assert_array_equal(a, b)


def test_a_larger_test_split_leaves_every_other_utterance_as_it_was(tiny_corpus, tmp_path):
    """The test speakers' extra sentences are drawn after everyone else's: without them, the
    corpus is the same but for those rows (and the audio of every other row is the same)."""
    cfg = _cfg()
    smaller = dataclasses.replace(cfg.source.cfg, test_utterances_per_speaker=0)
    prepare.run(dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, cfg=smaller)),
                tmp_path / "small")  # fmt: skip
    small = read_manifest(tmp_path / "small" / "manifest.jsonl")
    assert small == [r for r in read_manifest(tiny_corpus) if r.id != "spk000-0003"]


def test_demo_voices_vary_and_grammar_is_closed():
    import random

    spk = speakers(
        DemoConfig(
            seed=3,
            speakers=30,
            utterances_per_speaker=1,
            dev_speakers=3,
            test_speakers=3,
            workers=1,
        )
    )
    assert len({s.voice for s in spk}) == 30
    assert len({s.voice.split("+")[0] for s in spk}) >= 5
    assert all(130 <= s.rate_wpm <= 200 and 25 <= s.pitch <= 75 for s in spk)
    rng = random.Random(0)
    words = {w for _ in range(2000) for w in sentence(rng).split()}
    assert words == VOCABULARY and 50 <= len(VOCABULARY) <= 100


def test_librispeech_folder(tmp_path):
    root = tmp_path / "LibriSpeech"
    for subset, spk in (("train-clean-100", "19"), ("test-clean", "61")):
        chapter = root / subset / spk / "198"
        lines = []
        for n in range(2):
            utt = f"{spk}-198-{n:04d}"
            # 8 kHz stereo FLAC: must come out 16 kHz mono
            _tone(chapter / f"{utt}.flac", rate=8000, channels=2)
            lines.append(f"{utt} HELLO WORLD NUMBER {n}")
        (chapter / f"{spk}-198.trans.txt").write_text("\n".join(lines) + "\n")
    summary = prepare.run(_cfg({"kind": "librispeech", "root": str(root)}), tmp_path / "data")
    rows = {r.id: r for r in read_manifest(tmp_path / "data" / "manifest.jsonl")}
    assert summary["splits"] == {"train": 2, "test": 2}
    row = rows["19-198-0000"]
    assert (
        row.transcript == "HELLO WORLD NUMBER 0"
        and row.split == "train"
        and rows["61-198-0001"].split == "test"
    )
    assert row.speaker == "19" and row.sample_rate == 8000 and row.samples == 4000
    wav = read_audio(audio_path(row, tmp_path / "data" / "manifest.jsonl"))
    assert wav.ndim == 1 and len(wav) == 8000


def test_user_lists_jsonl_tsv_and_fairseq(tmp_path):
    audio = [_tone(tmp_path / "wavs" / f"a.{i}.wav") for i in range(4)]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"audio": f"wavs/{p.name}", "speaker": f"s{i}"}) for i, p in enumerate(audio)
        )
    )
    tsv = tmp_path / "list.tsv"
    tsv.write_text(
        "audio\ttranscript\tsplit\n"
        + "".join(f"{p}\tword {i}\ttest\n" for i, p in enumerate(audio))
    )
    fairseq = tmp_path / "fairseq.tsv"
    fairseq.write_text(f"{tmp_path / 'wavs'}\n" + "".join(f"{p.name}\t8000\n" for p in audio))
    for i, path in enumerate((jsonl, tsv, fairseq)):
        out = tmp_path / f"data{i}"
        summary = prepare.run(_cfg({"kind": "manifest", "path": str(path)}), out)
        rows = read_manifest(out / "manifest.jsonl")
        assert summary["utterances"] == 4
        assert all("." not in r.id for r in rows)  # WebDataset-safe keys
        assert all(audio_path(r, out / "manifest.jsonl").is_file() for r in rows)
    assert {r.split for r in rows} <= {"train", "dev", "test"}
    assert {r.transcript for r in read_manifest(tmp_path / "data1" / "manifest.jsonl")} == {
        f"word {i}" for i in range(4)
    }


def test_a_corpus_of_links_keeps_the_paths_it_shows(tmp_path):
    """Files that are symlinks into a blob store (a DVC or git-annex checkout, a hub cache) are
    listed under their own names, not their blobs', and the same audio under another root
    gives the same manifest."""
    blobs = [_tone(tmp_path / "blobs" / f"{i}.wav") for i in range(3)]
    blobs = [blob.rename(blob.with_name(f"{i:032x}")) for i, blob in enumerate(blobs)]
    for root in ("corpus", "moved"):
        for i, blob in enumerate(blobs):
            (tmp_path / root / "wavs").mkdir(parents=True, exist_ok=True)
            (tmp_path / root / "wavs" / f"u{i}.wav").symlink_to(blob)
        listing = tmp_path / f"{root}.jsonl"
        rows = [{"audio": str(tmp_path / root / "wavs" / f"u{i}.wav"), "speaker": "s"}
                for i in range(3)]  # fmt: skip
        listing.write_text("".join(json.dumps(row) + "\n" for row in rows))
        prepare.run(_cfg({"kind": "manifest", "path": str(listing)}), tmp_path / f"data-{root}")
    rows = read_manifest(tmp_path / "data-corpus" / "manifest.jsonl")
    assert sorted(r.audio.path.as_posix() for r in rows) == ["u0.wav", "u1.wav", "u2.wav"]
    moved = tmp_path / "data-moved" / "manifest.jsonl"
    assert moved.read_bytes() == (tmp_path / "data-corpus" / "manifest.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "audio file not found"),
        (lambda p: (p.write_bytes(b"not audio at all"), p)[1], "cannot decode audio"),
        (lambda p: _tone(p, seconds=0.0), "audio is empty"),
        (lambda p: _tone(p, value=np.nan, subtype="FLOAT"), "audio contains NaN or Inf"),
    ],
)
def test_bad_audio_is_named_or_skipped(tmp_path, make, message):
    good = [_tone(tmp_path / f"good{i}.wav") for i in range(3)]
    bad = make(tmp_path / "bad.wav")
    listing = tmp_path / "list.jsonl"
    listing.write_text("\n".join(json.dumps({"audio": str(p)}) for p in [*good, bad]))
    with pytest.raises(AudioError, match=rf"bad\.wav: {message}"):
        prepare.run(_cfg({"kind": "manifest", "path": str(listing)}), tmp_path / "data")
    assert not (tmp_path / "data").exists()  # nothing half-written is left looking complete
    with pytest.raises(CorpusError, match="1 of 4 audio files are bad"):
        prepare.run(
            _cfg({"kind": "manifest", "path": str(listing)}, skip_bad=True), tmp_path / "data"
        )
    summary = prepare.run(
        _cfg({"kind": "manifest", "path": str(listing)}, skip_bad=True, max_bad_fraction=0.5),
        tmp_path / "data",
    )
    assert summary["utterances"] == 3 and summary["skipped"] == 1


def test_missing_corpus_folder_is_named(tmp_path):
    with pytest.raises(CorpusError, match="nowhere: LibriSpeech folder not found"):
        prepare.run(
            _cfg({"kind": "librispeech", "root": str(tmp_path / "nowhere")}), tmp_path / "d"
        )
