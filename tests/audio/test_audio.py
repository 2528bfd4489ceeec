"""pipeline/audio on its own: times become samples, the address kinds (a whole file, a range
of a recording, a table's row) checked, identified, read and written into manifest rows and
read back by their keys, a new kind as one registration, and parquet and Arrow files read
alike behind one interface, each row group once."""

import hashlib
import io
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch
from corpora import RATE, UTTS, cut, flac_bytes, hf_saved, hf_shards, write_recordings

from pipeline.audio import embedded
from pipeline.audio.address import ADDRESSES, Address, Located, address_of
from pipeline.audio.embedded import TableRow, table_columns
from pipeline.audio.files import (
    AudioFile,
    FileRange,
    Span,
    open_audio,
    read_frames,
    read_range,
    to_samples,
)
from pipeline.core.errors import AudioError, ConfigError
from pipeline.core.hashing import sha256_bytes
from pipeline.corpus.manifest import Utterance, read_manifest, read_utterance, write_manifest


def test_times_become_samples_rounding_half_up():
    assert to_samples(Decimal("0.00003125"), 16_000) == 1  # 0.5 samples; a float gives 0
    assert to_samples("1.50003125", 16_000) == 24_001
    assert to_samples("0.000031", 16_000) == 0 and to_samples("2.1", 16_000) == 33_600
    assert to_samples("0.5", 22_050) == 11_025 and to_samples("1e-4", 22_050) == 2  # 2.205


def test_each_kind_checks_identifies_and_reads_its_samples(tmp_path):
    """A file: all its samples, the file's sha256. A range: its times made samples (rounded
    half up), its decoded samples' sha256. A table's row: its embedded file's bytes."""
    recordings = write_recordings(tmp_path / "audio")
    utt = UTTS[2]  # starts at 24000.5 samples: rounded up to 24001
    whole = AudioFile(recordings["rec-a"]).locate()
    assert whole.samples == 40_000 and whole.sample_rate == RATE
    assert whole.sha256 == hashlib.sha256(recordings["rec-a"].read_bytes()).hexdigest()
    span = Span(Decimal(utt.start), Decimal(utt.end))
    found = FileRange(recordings[utt.recording], span=span).locate()
    assert found.address == FileRange(recordings[utt.recording], utt.first)
    assert found.samples == utt.last - utt.first
    decoded = (cut(utt) / 32768).astype("<f4")
    assert found.sha256 == hashlib.sha256(decoded.tobytes()).hexdigest()
    want = torch.from_numpy((cut(utt) / 32768).astype(np.float32).mean(axis=1))
    assert torch.equal(found.address.read(found.samples), want)
    row = TableRow(hf_shards(tmp_path / "hf") / "data" / "train-00000-of-00002.parquet", 2, "audio")
    assert row.locate().sha256 == sha256_bytes(flac_bytes(cut(UTTS[2])))
    assert torch.equal(row.read(row.locate().samples), want)


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (Span(Decimal("0.5"), Decimal("9.5")), r"rec-b\.flac: the range ends at sample 152000 "
                                               r"\(9\.5 s\), past the recording's end"),
        (Span(Decimal("0.5"), duration=Decimal("0.00001")), r"rec-b\.flac: the range is empty"),
    ],
)  # fmt: skip
def test_a_range_outside_its_recording_is_named(tmp_path, span, message):
    recordings = write_recordings(tmp_path)
    with pytest.raises(AudioError, match=message):
        FileRange(recordings["rec-b"], span=span).locate()


def test_a_manifest_row_names_its_kind_by_its_keys():
    """Each kind writes its own keys only where they are not at their defaults, and the row's
    keys give its kind back; a row of no kind's keys is a whole file."""
    assert ADDRESSES.names() == ["file", "range", "row"]
    for address in (AudioFile(Path("a.flac")), FileRange(Path("r.flac"), 480),
                    TableRow(Path("t.parquet"), 3, "audio")):  # fmt: skip
        row = {"audio": address.path.as_posix(), **address.manifest_keys()}
        assert address_of(row, "m:1") == address
    assert AudioFile("a.flac").manifest_keys() == FileRange("a.flac", 0).manifest_keys() == {}
    assert address_of({"audio": "a.flac", "start": 0, "row": None, "column": ""}, "m:1") == (
        AudioFile(Path("a.flac")))  # fmt: skip
    with pytest.raises(ConfigError, match=r"m:2: keys of two kinds of address \(range: start"):
        address_of({"audio": "a.flac", "start": 5, "row": 1}, "m:2")
    with pytest.raises(ConfigError, match=r"m:3\.audio: expected a path, got None"):
        address_of({"start": 5}, "m:3")
    with pytest.raises(ConfigError, match=r"m:4\.row: expected int"):
        address_of({"audio": "t.parquet", "row": "1"}, "m:4")


def test_a_path_alone_is_a_whole_file():
    utt = Utterance("u", "a.flac", 16_000, 16_000, "", "", "train")
    assert utt.audio == AudioFile(Path("a.flac"))


@dataclass(frozen=True)
class ZipMember(Address):
    """A test's own kind: a member of a zip archive (what an fsspec URL would be: a module and
    a registration)."""

    name = "zip"
    keys = ("member",)
    path: Path
    member: str = ""

    def _bytes(self) -> bytes:
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)

    def locate(self) -> Located:
        data = self._bytes()
        with open_audio(io.BytesIO(data), self.where) as f:
            samples, rate = read_frames(f, self.where).shape[0], f.samplerate
        return Located(self, samples, rate, sha256_bytes(data))

    def read(self, samples: int) -> torch.Tensor:
        return read_range(io.BytesIO(self._bytes()), self.where, 0, samples)


def test_a_new_kind_is_one_registration(tmp_path, monkeypatch):
    """Registered, a kind is written into manifest rows and read back and read by
    read_utterance, with no change to the manifest or its readers."""
    monkeypatch.setattr(ADDRESSES, "_items", dict(ADDRESSES._items))
    ADDRESSES.register(ZipMember)
    with zipfile.ZipFile(tmp_path / "audio.zip", "w") as archive:
        archive.writestr("b-1.flac", flac_bytes(cut(UTTS[3])))
    found = ZipMember(Path("audio.zip"), "b-1.flac").under(tmp_path).locate()
    utt = Utterance("b-1", ZipMember(Path("audio.zip"), "b-1.flac"), found.samples, RATE, "",
                    "", "train", sha256=found.sha256)  # fmt: skip
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [utt])
    assert manifest.read_text().rstrip().endswith('"member": "b-1.flac"}')
    (again,) = read_manifest(manifest)
    assert again == utt
    assert torch.equal(read_utterance(again, manifest), read_range(io.BytesIO(flac_bytes(
        cut(UTTS[3]))), "b-1"))  # fmt: skip


def test_parquet_and_arrow_files_read_alike(tmp_path):
    """The same rows as parquet shards and as save_to_disk's Arrow files: the same columns and
    embedded bytes, through one interface."""
    parquet = sorted(hf_shards(tmp_path / "parquet").glob("data/*.parquet"))
    arrow = sorted(hf_saved(tmp_path / "arrow").glob("*/*.arrow"))
    assert [p.suffix for p in parquet + arrow] == [".parquet"] * 2 + [".arrow"] * 2

    def rows(files):
        out = {}
        for path in files:
            values, n, names = table_columns(path, ["id", "text", "nothing"])
            assert set(values) == {"id", "text"} and {"id", "text", "audio"} <= set(names)
            for row in range(n):
                out[values["id"][row]] = (values["text"][row], TableRow(path, row, "audio"))
        return out

    ours, theirs = rows(parquet), rows(arrow)
    assert ours.keys() == theirs.keys() == {u.id for u in UTTS}
    for key, (text, row) in ours.items():
        assert text == theirs[key][0]
        assert row.locate().sha256 == theirs[key][1].locate().sha256
    with pytest.raises(AudioError, match=r"train-00000-of-00002\.parquet: row 9: no such row"):
        TableRow(parquet[0], 9, "audio").locate()
    with pytest.raises(AudioError, match=r"no column 'sound' \(columns: id, speaker_id, text, "):
        TableRow(arrow[0], 0, "sound").locate()


def test_parquet_rows_read_out_of_order_read_each_row_group_once(tmp_path, monkeypatch):
    """Stage one reads a shard's rows in length order, not row order: the decoded row groups
    are kept, so each is read from its file once."""
    shards = sorted(hf_shards(tmp_path).glob("data/*.parquet"))
    rows = [TableRow(path, row, "audio") for path in shards
            for row in range(table_columns(path, [])[1])]  # fmt: skip
    reads = []
    read_group = embedded.ParquetTable.group

    def counted(self, index, column):
        reads.append((self.path.name, index))
        return read_group(self, index, column)

    embedded._GROUPS.clear()
    monkeypatch.setattr(embedded.ParquetTable, "group", counted)
    for row in rows[::2] + rows[1::2]:  # every row group visited twice, apart
        row.read(row.locate().samples)
    assert len(reads) == len(set(reads)) == 3  # 6 rows in 2 shards, 2 per row group
