"""Hostile corpora: every field of every source kind, broken as a user (or a tool) breaks it.
Each case runs `pipeline prepare` and ends in one line naming the file and the line or row,
exit 1, with nothing written, whether or not --skip-bad is given (a corpus that contradicts
itself: skipping would guess), or is skipped and counted with --skip-bad (bad audio), or
gives the correct corpus. Corpora are written with the real libraries (tests/corpora.py)."""

import gzip
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_params, write_params
from corpora import (
    UTTS,
    _audio_table,
    flac_bytes,
    hf_saved,
    hf_shards,
    kaldi_dir,
    lhotse_manifests,
    samples,
)
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.io import atomic_dir
from pipeline.corpus.manifest import read_manifest

runner = CliRunner()


def _prepare(tmp_path: Path, source: dict, *flags: str, out: Path | None = None):
    params = tiny_params()
    params["prepare"]["source"] = source
    params["prepare"]["max_bad_fraction"] = 0.5
    write_params(tmp_path / "params.yaml", params)
    out = out or tmp_path / "out"
    args = ["prepare", "--params", str(tmp_path / "params.yaml"), "--out", str(out), *flags]
    return runner.invoke(app, args)


def _one_line(result, pattern: str, code: int = 1) -> str:
    """The one line of output of a failed run, matching ``pattern``."""
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    return lines[0]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))


# --- Kaldi data directories --------------------------------------------------------------------


def _kaldi(root: Path, segments: bool = True) -> tuple[dict, Path]:
    data = kaldi_dir(root, segments)
    return {"kind": "kaldi", "dir": str(data), "root": str(root)}, data


def kaldi_edit(file: str, old: str, new: str, pattern: str, segments: bool = True):
    """A case: the Kaldi directory (with or without segments), ``old`` made ``new`` in
    ``file`` ("" = the file emptied)."""

    def case(root):
        source, data = _kaldi(root, segments)
        if old:
            _edit(data / file, old, new)
        else:
            (data / file).write_text(new)
        return source, pattern

    return case


def kaldi_collision(root):  # non-ASCII ids that differ only in what sanitising drops
    source, data = _kaldi(root)
    for name in ("segments", "text", "utt2spk"):
        _edit(data / name, "a-1 ", "spk-ä1 ")
        _edit(data / name, "a-2 ", "spk-ö1 ")
    return source, (r"segments:2: utterance ids 'spk-ö1' and 'spk-ä1' \(at \S+segments:1\) both "
                    r"become 'spk-_1'")  # fmt: skip


def kaldi_two_directories(root):
    source, data = _kaldi(root, segments=False)
    shutil.copytree(data, data.parent / "test")
    source["dir"] = str(data.parent)
    return source, r"train/wav\.scp:1: utterance id 'a-1' again \(first at \S+test/wav\.scp:1\)"


def _earlier_output(out: Path, files: dict[str, bytes]) -> None:
    """``out`` as an earlier `prepare` left it, holding ``files`` (e.g. the demo's audio)."""
    with atomic_dir(out, kind="corpus") as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)


def kaldi_audio_in_out(root):  # the next run replaces it: the manifest would dangle
    source, data = _kaldi(root, segments=False)
    _earlier_output(root.parent / "out", {"utts/a-1.flac": (root / "utts/a-1.flac").read_bytes()})
    _edit(data / "wav.scp", "a-1 utts/a-1.flac", f"a-1 {root.parent / 'out/utts/a-1.flac'}")
    return source, (r"a-1\.flac \(\S+wav\.scp:1\) is inside \S+/out, the folder this run writes "
                    r"\(--out\): move it out of there \(e\.g\. to corpora/\)")  # fmt: skip


KALDI = {
    "wav.scp: a recording twice": kaldi_edit(
        "wav.scp", "rec-b audio/rec-b.flac", "rec-a audio/rec-b.flac",
        r"wav\.scp:2: recording 'rec-a' again \(first at \S+wav\.scp:1\)"),
    "wav.scp: no path": kaldi_edit(
        "wav.scp", "rec-b audio/rec-b.flac", "rec-b", r"wav\.scp:2: expected 2 fields"),
    "wav.scp: empty": kaldi_edit("wav.scp", "", "", r"wav\.scp: lists no utterances", False),
    "wav.scp: audio in --out": kaldi_audio_in_out,
    "segments: an utterance twice": kaldi_edit(
        "segments", "a-2 rec-a", "a-1 rec-a",
        r"segments:2: utterance 'a-1' again \(first at \S+segments:1\)"),
    "segments: start nan": kaldi_edit(
        "segments", "a-2 rec-a 0.8", "a-2 rec-a nan",
        r"segments:2: 'nan' is not a time in seconds \(start"),
    "segments: end inf": kaldi_edit(
        "segments", "0.8 1.28", "0.8 inf", r"segments:2: 'inf' is not a time in seconds \(end"),
    "segments: end before start": kaldi_edit(
        "segments", "0.8 1.28", "0.8 0.5",
        r"segments:2: the time range starts at 0\.8 and ends at 0\.5: it holds no audio"),
    "segments: empty": kaldi_edit("segments", "", "\n", r"segments: lists no utterances"),
    "segments: ids that become one": kaldi_collision,
    "two directories, one utterance": kaldi_two_directories,
    "text: a typo'd id": kaldi_edit(  # a-1 would get no transcript
        "text", "a-1 hello one", "a-l hello one",
        r"text:1: 'a-l' is not an utterance of \S+segments \(a typo\?"),
    "text: an utterance missing": kaldi_edit(
        "text", "b-2 good night\n", "", r"text: no line for utterance 'b-2' of \S+segments:5"),
    "text: an utterance twice": kaldi_edit(
        "text", "b-2 good night", "b-1 good night",
        r"text:5: utterance 'b-1' again \(first at \S+text:4\)"),
    "utt2spk: no speaker": kaldi_edit(
        "utt2spk", "a-3 s1", "a-3", r"utt2spk:3: expected 2 fields, got 'a-3'"),
    "utt2spk: an utterance that does not exist": kaldi_edit(
        "utt2spk", "b-3 s2\n", "b-3 s2\nzz-9 s9\n", r"utt2spk:7: 'zz-9' is not an utterance"),
}  # fmt: skip


# --- Lhotse manifests --------------------------------------------------------------------------


def _lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))


def _lhotse(root: Path, name: str, line: int, change) -> dict:
    """The manifests, ``change(row)`` applied to line ``line`` (1-based) of ``name``."""
    paths = lhotse_manifests(root)
    rows = _lines(paths[name])
    change(rows[line - 1])
    _write(paths[name], rows)
    if name == "cuts":
        return {"kind": "lhotse", "cuts": str(paths["cuts"])}
    return {"kind": "lhotse", **{key: str(paths[key]) for key in ("recordings", "supervisions")}}


def lhotse_edit(name: str, line: int, change, pattern: str):
    """A case: ``change(row)`` applied to line ``line`` of manifest ``name``."""
    return lambda root: (_lhotse(root, name, line, change), pattern)


def lhotse_not_json(root):
    paths = lhotse_manifests(root)
    with gzip.open(paths["cuts"], "at") as f:
        f.write("{not json\n")
    return {"kind": "lhotse", "cuts": str(paths["cuts"])}, r"cuts\.jsonl\.gz:7: not JSON \("


def lhotse_empty(root):
    paths = lhotse_manifests(root)
    _write(paths["cuts"], [])
    return {"kind": "lhotse", "cuts": str(paths["cuts"])}, r"cuts\.jsonl\.gz: lists no Lhotse items"


def _first_supervision(**changes):
    return lambda cut: cut["supervisions"][0].update(changes)


LHOTSE = {
    "cut: start a string": lhotse_edit(
        "cuts", 2, lambda c: c.update(start="0.8"),
        r"cuts\.jsonl\.gz:2: start must be a number of seconds, got '0\.8'"),
    "cut: start NaN": lhotse_edit(
        "cuts", 3, lambda c: c.update(start=float("nan")),
        r"cuts\.jsonl\.gz:3: start must be a number of seconds, got nan"),
    "cut: start negative": lhotse_edit(
        "cuts", 1, lambda c: c.update(start=-0.5),
        r"cuts\.jsonl\.gz:1: -0\.5 is not a time in seconds \(start"),
    "cut: duration infinite": lhotse_edit(
        "cuts", 1, lambda c: c.update(duration=float("inf")),
        r"cuts\.jsonl\.gz:1: duration must be a number of seconds, got inf"),
    "cut: duration 0": lhotse_edit(
        "cuts", 4, lambda c: c.update(duration=0),
        r"cuts\.jsonl\.gz:4: the time range starts at 0\.0 and lasts 0 s"),
    "cut: id null": lhotse_edit(
        "cuts", 2, lambda c: c.update(id=None), r"cuts\.jsonl\.gz:2: the utterance id is null"),
    "cut: an id twice": lhotse_edit(
        "cuts", 5, lambda c: c.update(id="a-1"),
        r"cuts\.jsonl\.gz:5: utterance id 'a-1' again \(first at \S+cuts\.jsonl\.gz:1\)"),
    "cut: text not a string": lhotse_edit(
        "cuts", 2, _first_supervision(text=42.0),
        r"cuts\.jsonl\.gz:2: the text of supervision 'a-2' must be a string, got 42\.0"),
    "cut: supervision of another recording": lhotse_edit(
        "cuts", 2, _first_supervision(recording_id="x"),
        r"cuts\.jsonl\.gz:2: supervision 'a-2' is of recording 'x', not the cut's 'rec-a'"),
    "cut: supervision start a string": lhotse_edit(
        "cuts", 2, _first_supervision(start="0"),
        r"cuts\.jsonl\.gz:2: start must be a number of seconds, got '0'"),
    "cuts: not JSON": lhotse_not_json,
    "cuts: empty": lhotse_empty,
    "recordings: a recording twice": lhotse_edit(  # its supervisions would read the first's
        "recordings", 2, lambda r: r.update(id="rec-a"),
        r"recordings\.jsonl\.gz:2: recording 'rec-a' again \(first at \S+\.jsonl\.gz:1\)"),
    "supervision: duration a string": lhotse_edit(
        "supervisions", 3, lambda s: s.update(duration="0.6"),
        r"supervisions\.jsonl\.gz:3: duration must be a number of seconds, got '0\.6'"),
    "supervision: speaker a list": lhotse_edit(
        "supervisions", 4, lambda s: s.update(speaker=["s2"]),
        r"supervisions\.jsonl\.gz:4: the speaker of supervision 'b-1' must be a string"),
    "supervision: an id twice": lhotse_edit(
        "supervisions", 6, lambda s: s.update(id="b-1"),
        r"supervisions\.jsonl\.gz:6: utterance id 'b-1' again \(first at \S+:4\)"),
}  # fmt: skip


# --- `datasets` parquet shards and save_to_disk folders ----------------------------------------


def _shard(root: Path, **columns) -> dict:
    """One parquet shard ``root/data/train-00000-of-00001.parquet`` of the first three
    utterances (datasets' Audio schema), with ``columns`` replaced (name -> values)."""
    table = _audio_table(UTTS[:3])
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet")
    return {"kind": "hf", "path": str(root)}


def shard_with(pattern: str, **columns):
    """A case: the shard with ``columns`` replaced."""
    return lambda root: (_shard(root, **columns), pattern)


def hf_no_audio_column(root):
    source = {**_shard(root), "audio_column": "sound"}
    return source, r"parquet: no audio column 'sound' \(columns: id, speaker_id, text, audio; "


def hf_id_twice_across_splits(root):
    from datasets import Dataset, DatasetDict

    splits = {"train": UTTS[:2], "validation": UTTS[:1]}
    DatasetDict({n: Dataset(_audio_table(u)) for n, u in splits.items()}).save_to_disk(str(root))
    return ({"kind": "hf", "path": str(root)},
            r"validation/\S+\.arrow: row 0: utterance id 'a-1' again \(first at "
            r"\S+train/\S+\.arrow: row 0\)")  # fmt: skip


HF = {
    "id null": shard_with(r"parquet: row 1: the utterance id is null", id=["a-1", None, "a-3"]),
    "id a float": shard_with(r"parquet: row 0: the utterance id must be a string, got 1\.0",
                             id=[1.0, 2.0, 3.0]),
    "an id twice": shard_with(r"parquet: row 2: utterance id 'a-1' again \(first at \S+ row 0\)",
                              id=["a-1", "a-2", "a-1"]),
    "text a list": shard_with(r"parquet: row 0: the transcript must be a string, got \['hello'\]",
                              text=[["hello"], ["one"], ["two"]]),
    "speaker a float": shard_with(r"row 0: the speaker must be a string",
                                  speaker_id=[1.5, 2.5, 3.5]),
    "no audio column": hf_no_audio_column,
    "an id twice across splits": hf_id_twice_across_splits,
}  # fmt: skip


# --- user lists: JSONL, TSV, fairseq -----------------------------------------------------------


def _listing(root: Path, rows: list[dict], name: str = "list.jsonl", text: str = "") -> dict:
    """Three short files in ``root`` and a list of them: ``rows`` as JSONL, or ``text``."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (root / f"u{i}.flac").write_bytes(flac_bytes(samples("rec-a")[:8000]))
    path = root / name
    path.write_text(text or "".join(json.dumps(row) + "\n" for row in rows))
    return {"kind": "manifest", "path": str(path)}


def row_with(pattern: str, first: dict | None = None, **changes):
    """A case: a JSONL list of three rows, the second changed by ``changes``, the first by
    ``first``."""

    def case(root):
        rows = [{"audio": f"u{i}.flac", "id": f"u{i}", "speaker": "s"} for i in range(3)]
        rows[0].update(first or {})
        rows[1].update(changes)
        return _listing(root, rows), pattern

    return case


def list_text(name: str, text: str, pattern: str):
    """A case: a list ``name`` holding ``text`` (``{root}``: its folder)."""
    return lambda root: (_listing(root, [], name, text.format(root=root)), pattern)


def list_audio_in_out(root):  # a list of the audio an earlier demo run wrote
    source = _listing(root, [{"audio": str(root.parent / "out" / "audio" / "u1.flac")}])
    _earlier_output(root.parent / "out", {"audio/u1.flac": (root / "u1.flac").read_bytes()})
    return source, r"u1\.flac \(\S+list\.jsonl:1\) is inside \S+/out, the folder"


LISTS = {
    "id a boolean": row_with(r"list\.jsonl:2: the utterance id must be a string", id=True),
    "an id twice": row_with(r"list\.jsonl:2: utterance id 'u0' again \(first at \S+:1\)",
                            id="u0"),
    "ids that become one": row_with(
        r"list\.jsonl:2: utterance ids 'u\.0' and 'u 0' \(at \S+:1\) both become 'u_0'",
        first={"id": "u 0"}, id="u.0"),
    "transcript a list": row_with(r"list\.jsonl:2: the transcript must be a string, got \['a'",
                                  transcript=["a", "b"]),
    "speaker a float": row_with(r"list\.jsonl:2: the speaker must be a string", speaker=3.5),
    "split unknown": row_with(r"list\.jsonl:2: split 'training' is not one", split="training"),
    "audio in --out": list_audio_in_out,
    "empty": list_text("list.jsonl", "\n", r"list\.jsonl: lists no audio"),
    "tsv: an id twice": list_text("list.tsv", "audio\tid\nu0.flac\tx\nu1.flac\tx\n",
                                  r"list\.tsv:3: utterance id 'x' again \(first at \S+:2\)"),
    "fairseq: no sample count": list_text("train.tsv", "{root}\nu0.flac\t8000\nu1.flac\tmany\n",
                                          r"train\.tsv:3: expected a fairseq line"),
}  # fmt: skip


# --- LibriSpeech folders -----------------------------------------------------------------------


def chapter(lines: list[str], pattern: str):
    """A case: a LibriSpeech subset of one chapter, 19/198, whose trans.txt holds ``lines``."""

    def case(root):
        folder = root / "train-clean-100" / "19" / "198"
        folder.mkdir(parents=True)
        for n in range(3):
            (folder / f"19-198-{n:04d}.flac").write_bytes(flac_bytes(samples("rec-a")[:8000]))
        (folder / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
        return {"kind": "librispeech", "root": str(root)}, pattern

    return case


LIBRISPEECH = {
    "an id twice": chapter(["19-198-0000 A", "19-198-0001 B", "19-198-0000 C"],
                           r"trans\.txt:3: utterance id '19-198-0000' again \(first at \S+:1\)"),
    "an id of another chapter": chapter(
        ["19-198-0000 A", "20-198-0001 B"],
        r"trans\.txt:2: '20-198-0001' is not an utterance of this chapter"),
    "an id that is a path": chapter(
        ["19-198-0000 A", "19-198-../../x B"],
        r"trans\.txt:2: '19-198-\.\./\.\./x' is not an utterance of this chapter"),
    "no transcript": chapter(["19-198-0000 A", "19-198-0001"], r"trans\.txt:2: expected"),
}  # fmt: skip

STOPS = {f"{kind} {name}": case for kind, cases in (
    ("kaldi", KALDI), ("lhotse", LHOTSE), ("hf", HF), ("list", LISTS),
    ("librispeech", LIBRISPEECH)) for name, case in cases.items()}  # fmt: skip


@pytest.mark.parametrize("case", list(STOPS.values()), ids=list(STOPS))
def test_a_corpus_that_contradicts_itself_stops_in_one_line_even_with_skip_bad(tmp_path, case):
    source, pattern = case(tmp_path / "corpus")
    line = _one_line(_prepare(tmp_path, source), pattern)
    assert "--skip-bad" not in line  # not bad audio: skipping would have to guess
    _one_line(_prepare(tmp_path, source, "--skip-bad"), pattern)
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def hf_audio_not_a_struct(root):
    source = {"kind": "hf", "path": str(hf_shards(root))}
    shard = root / "data" / "train-00001-of-00002.parquet"
    table = pq.read_table(shard)
    index = table.schema.get_field_index("audio")
    pq.write_table(table.set_column(index, "audio", pa.array(["a.flac", "b.flac"])), shard)
    return source, (r"train-00001-of-00002\.parquet: row 0: \S+: column 'audio' is not an audio "
                    r"struct of bytes and path", 2)  # fmt: skip


SKIPPED = {
    "lhotse supervision of a recording not in recordings": lambda root: (_lhotse(
        root, "supervisions", 2, lambda s: s.update(recording_id="rec-z")),
        (r"supervisions\.jsonl\.gz:2: recording 'rec-z' is not in \S+recordings\.jsonl\.gz", 1)),
    "lhotse cut whose recording's source is no path": lambda root: (_lhotse(
        root, "cuts", 6, lambda c: c["recording"]["sources"][0].update(source=None)),
        (r"cuts\.jsonl\.gz:6: recording 'rec-b': its source must be a file's path, got None", 1)),
    "hf audio column not a struct": hf_audio_not_a_struct,
}  # fmt: skip


@pytest.mark.parametrize("case", list(SKIPPED.values()), ids=list(SKIPPED))
def test_bad_entries_are_named_or_skipped_and_counted(tmp_path, case):
    """Bad audio, or an entry whose audio cannot be found: it stops without --skip-bad (saying
    so) and is skipped and counted with it."""
    source, (pattern, skipped) = case(tmp_path / "corpus")
    _one_line(_prepare(tmp_path, source), pattern + r".* \(or rerun with --skip-bad\)$")
    result = _prepare(tmp_path, source, "--skip-bad")
    assert result.exit_code == 0 and f"'skipped': {skipped}" in result.output, result.output


def test_no_usable_utterance_names_the_list(tmp_path):
    rows = [{"audio": f"missing{i}.flac"} for i in range(2)]
    source = _listing(tmp_path / "corpus", rows)
    result = _prepare(tmp_path, source, "--skip-bad")  # warns of each, then stops
    assert result.exit_code == 1 and re.search(
        r"corpus/list\.jsonl: source 'manifest' gave no usable utterances \(2 bad; first: "
        r"\S+list\.jsonl:1: \S+missing0\.flac: audio file not found\)",
        result.output,
    ), result.output
    empty = tmp_path / "tables"
    (empty / "data").mkdir(parents=True)
    pq.write_table(_audio_table([]), empty / "data" / "train-00000-of-00001.parquet")
    _one_line(_prepare(tmp_path, {"kind": "hf", "path": str(empty)}),
              r"tables: source 'hf' gave no usable utterances \(0 bad\)")  # fmt: skip


def test_rows_of_tables_without_ids_are_named_by_their_file(tmp_path):
    """save_to_disk's split folders hold files of the same name: rows are named after their
    path below the folder, so no two collide."""
    root = hf_saved(tmp_path / "corpus")
    for arrow in root.glob("*/*.arrow"):
        table = pa.ipc.open_stream(arrow.read_bytes()).read_all().drop_columns(["id"])
        with pa.ipc.new_stream(str(arrow), table.schema) as writer:
            writer.write_table(table)
    result = _prepare(tmp_path, {"kind": "hf", "path": str(root)})
    assert result.exit_code == 0, result.output
    ids = [r.id for r in read_manifest(tmp_path / "out" / "manifest.jsonl")]
    assert ids == [f"train_data-00000-of-00001_{i}" for i in range(4)] + [
        f"validation_data-00000-of-00001_{i}" for i in range(2)]  # fmt: skip


def test_integer_ids_and_speakers_are_strings(tmp_path):
    """An int64 id or speaker column (LibriSpeech's speaker_id is one) is read as its digits."""
    source = _shard(tmp_path / "corpus", id=[101, 102, 103], speaker_id=[7, 7, 8])
    assert _prepare(tmp_path, source).exit_code == 0
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [(r.id, r.speaker) for r in rows] == [("101", "7"), ("102", "7"), ("103", "8")]
