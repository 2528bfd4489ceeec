"""The one reader of line-based files (the manifest, lists, Kaldi tables, Lhotse manifests,
transcripts, lexicons): lines read lazily, blank ones skipped, every problem named by its file
and line; and the manifest's rows refused in one line naming theirs."""

import gzip

import pytest

from pipeline.core.errors import CorpusError, ManifestError
from pipeline.corpus.lines import json_lines, numbered_lines
from pipeline.corpus.manifest import read_manifest


def test_lines_are_numbered_as_written_and_blank_ones_skipped(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"a-1 HELLO\r\n\n   \nb-2 GOOD DAY\n")
    assert list(numbered_lines(path)) == [(f"{path}:1", "a-1 HELLO"), (f"{path}:4", "b-2 GOOD DAY")]
    packed = tmp_path / "cuts.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write('{"id": 1}\n\n{"id": 2}\n')
    assert list(json_lines(packed)) == [(f"{packed}:1", {"id": 1}), (f"{packed}:3", {"id": 2})]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("list.jsonl", b'{"a": 1}\n{"audio": "caf\xe9.wav"}\n', r"list\.jsonl:2: not UTF-8 text"),
        ("list.jsonl", b'{"a": 1}\n{"audio": \n', r"list\.jsonl:2: not JSON \(Expecting"),
        ("cuts.jsonl.gz", b"not gzip at all", r"cuts\.jsonl\.gz: cannot read the list \("),
    ],
)
def test_a_bad_line_or_file_is_named(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=message) as caught:
        list(json_lines(path, what="list"))
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_named_as_what_it_is(tmp_path):
    with pytest.raises(ManifestError, match=r"lexicon\.txt: lexicon not found"):
        list(numbered_lines(tmp_path / "lexicon.txt", ManifestError, "lexicon"))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("[1, 2]", r"manifest\.jsonl:2: bad manifest row \(a JSON object expected\)"),
        ('{"id": "u", "audio": "a.flac", "samples": "16000", "sample_rate": 16000, "transcript": '
         '"", "speaker": "", "split": "train"}', r"manifest\.jsonl:2\.samples: expected int"),
        ('{"id": "u", "audio": 7}', r"manifest\.jsonl:2\.audio: expected a path"),
        ('{"id": "u", "audio": "a.flac", "start": 3, "row": 0, "column": "audio"}',
         r"manifest\.jsonl:2: keys of two kinds of address"),
    ],
)  # fmt: skip
def test_a_bad_manifest_row_is_named(tmp_path, row, message):
    good = ('{"id": "v", "audio": "b.flac", "samples": 16000, "sample_rate": 16000, '
            '"transcript": "", "speaker": "", "split": "train"}')  # fmt: skip
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(f"{good}\n{row}\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)
    manifest.write_text(f"{good}\n")
    assert [u.id for u in read_manifest(manifest)] == ["v"]
