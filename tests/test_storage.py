"""The zarr cache: round trip, atomic commit, refusal of incomplete caches, plain readers."""

import json
import shutil

import dask.array as da
import numpy as np
import pytest
import zarr

from pipeline.frames import FrameSpec
from storage import BACKENDS, CacheFormatError, CacheHeader, open_cache
from storage.base import HEADER, SCHEMA_VERSION
from storage.zarr_store import ZarrConfig


def _header(c=7):
    return CacheHeader(
        schema_version=SCHEMA_VERSION, backend="zarr", teacher="test", fingerprint="f" * 64,
        corpus="c" * 64, num_classes=c, frame_rate=50.0, frame_kernels=[10], frame_strides=[320],
        codec={"name": "full", "dtype": "float16"}, target_source="argmax",
        num_utterances=0, num_frames=0,
    )  # fmt: skip


def _utts(c=7):
    rng = np.random.default_rng(0)
    return {
        f"utt-{i}": rng.normal(size=(n, c)).astype(np.float32)
        for i, n in enumerate([5, 13, 1, 9, 30])
    }


def _write(path, utts, chunk=8):
    backend = BACKENDS["zarr"](ZarrConfig(chunk_frames=chunk, zstd_level=3))
    with backend.writer(path, _header()) as writer:
        for key, logits in utts.items():
            writer.write(key, {"logits": logits, "targets": logits.argmax(-1)})
        return writer.close()


def test_round_trip(tmp_path):
    utts = _utts()
    header = _write(tmp_path / "cache", utts)
    assert header.num_utterances == 5 and header.num_frames == 58
    reader = open_cache(tmp_path / "cache")
    assert reader.keys() == list(utts) and reader.header == header
    for key, logits in utts.items():
        got = reader.read(key)
        np.testing.assert_allclose(got["logits"], logits, rtol=1e-3, atol=1e-3)  # fp16 storage
        np.testing.assert_array_equal(got["targets"], logits.argmax(-1))
        assert reader.num_frames(key) == len(logits)
    np.testing.assert_array_equal(
        reader.read("utt-4", frames=slice(3, 6))["targets"], utts["utt-4"][3:6].argmax(-1)
    )
    with pytest.raises(KeyError, match="utt-9"):
        reader.read("utt-9")


def test_plain_zarr_and_dask_read_the_cache(tmp_path):
    utts = _utts()
    _write(tmp_path / "cache", utts)
    group = zarr.open_group(tmp_path / "cache", mode="r")
    offsets = group["frame_offsets"][:]
    ids = list(group["utt_ids"][:])
    i = ids.index("utt-3")
    np.testing.assert_allclose(
        group["logits"][offsets[i] : offsets[i + 1]], utts["utt-3"], atol=1e-2
    )
    assert group.attrs["hubert_kd"]["num_frames"] == 58
    targets = da.from_zarr(str(tmp_path / "cache"), component="targets")
    assert int(targets.shape[0]) == 58
    np.testing.assert_array_equal(
        targets.compute(), np.concatenate([u.argmax(-1) for u in utts.values()])
    )


def test_failed_write_leaves_nothing_and_keeps_old_cache(tmp_path):
    _write(tmp_path / "cache", _utts())
    before = (tmp_path / "cache" / HEADER).read_text()
    backend = BACKENDS["zarr"](ZarrConfig(chunk_frames=8, zstd_level=3))
    with pytest.raises(RuntimeError, match="boom"):
        with backend.writer(tmp_path / "cache", _header()) as writer:
            writer.write("a", {"logits": np.zeros((3, 7)), "targets": np.zeros(3)})
            raise RuntimeError("boom")
    assert (tmp_path / "cache" / HEADER).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_incomplete_or_foreign_caches_are_refused(tmp_path):
    _write(tmp_path / "cache", _utts())
    shutil.copytree(tmp_path / "cache", tmp_path / "nohead")
    (tmp_path / "nohead" / HEADER).unlink()
    with pytest.raises(CacheFormatError, match="nohead: no header.json"):
        open_cache(tmp_path / "nohead")
    raw = json.loads((tmp_path / "cache" / HEADER).read_text())
    (tmp_path / "cache" / HEADER).write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(CacheFormatError, match="schema version 99"):
        open_cache(tmp_path / "cache")


def test_writer_rejects_bad_shapes_and_duplicates(tmp_path):
    backend = BACKENDS["zarr"](ZarrConfig(chunk_frames=8, zstd_level=3))
    with backend.writer(tmp_path / "c", _header()) as writer:
        with pytest.raises(ValueError, match="x: expected logits"):
            writer.write("x", {"logits": np.zeros((3, 6)), "targets": np.zeros(3)})
        writer.write("y", {"logits": np.zeros((3, 7)), "targets": np.zeros(3)})
        with pytest.raises(ValueError, match="y: written twice"):
            writer.write("y", {"logits": np.zeros((3, 7)), "targets": np.zeros(3)})
        writer.close()


def test_cache_matches_the_corpus(tiny_corpus, tiny_cache):
    from pipeline.manifest import read_manifest

    reader = open_cache(tiny_cache)
    frames = FrameSpec(tuple(reader.header.frame_kernels), tuple(reader.header.frame_strides))
    rows = read_manifest(tiny_corpus)
    assert sorted(reader.keys()) == sorted(r.id for r in rows)
    for row in rows:
        got = reader.read(row.id)
        assert len(got["targets"]) == frames.num_frames(row.samples)
        # targets are the argmax of the fp32 logits: a maximum of the stored fp16 logits too
        picked = np.take_along_axis(got["logits"], got["targets"][:, None].astype(int), axis=1)[
            :, 0
        ]
        np.testing.assert_array_equal(picked, got["logits"].max(axis=1))
    assert "untrained" in reader.header.teacher
