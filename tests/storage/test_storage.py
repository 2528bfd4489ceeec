"""The teacher cache: every backend x codec round trip over several parts, plain readers,
atomic part commits, finalize in O(parts), refusals."""

import json
import shutil
import subprocess
import tarfile

import dask.array as da
import numpy as np
import pytest
import torch
import webdataset as wds
import zarr

from pipeline.core.hashing import sha256_bytes
from pipeline.nn.frames import FrameSpec
from storage import (
    BACKENDS,
    CacheFormatError,
    CacheHeader,
    finalize,
    open_cache,
    open_part,
    prepare_location,
    put_atomic,
    verify_cache,
)
from storage.codecs import CODECS, FullConfig, PQConfig, ProjectionConfig
from storage.header import FITTED, HEADER, SCHEMA_VERSION
from storage.wds_store import WdsConfig, decode_sample
from storage.zarr_store import ZarrConfig

C = 7
BACKEND_CONFIGS = {
    "zarr": ZarrConfig(chunk_frames=8, zstd_level=3),
    "webdataset": WdsConfig(shard_utterances=2),
}
CODEC_CONFIGS = {
    "full16": ("full", FullConfig("float16")),
    "full32": ("full", FullConfig("float32")),
    "pq": ("pq", PQConfig(bytes=3)),
    "projection": ("projection", ProjectionConfig()),
}


def _logits(n, rng):
    """Logits of rank 3 (plus a per-frame shift), as a cosine head's are of low rank."""
    basis = np.random.default_rng(7).normal(size=(3, C))
    shift = rng.normal(scale=50.0, size=(n, 1))
    return (rng.normal(scale=2.0, size=(n, 3)) @ basis + shift).astype(np.float32)


def _codec(name):
    kind, cfg = CODEC_CONFIGS[name]
    codec = CODECS[kind](cfg)
    codec.fit(torch.from_numpy(_logits(400, np.random.default_rng(1))), seed=0)
    return codec


def _header(codec, backend="zarr", constants=None):
    extra = {"constants": constants} if constants else {}
    return CacheHeader(
        schema_version=SCHEMA_VERSION, backend=backend, teacher="test", fingerprint="f" * 64,
        corpus="c" * 64, num_classes=C, frame_rate=50.0, frame_kernels=[10], frame_strides=[320],
        codec={**codec.header(), **extra}, target_source="argmax",
    )  # fmt: skip


def _utts():
    rng = np.random.default_rng(0)
    out = {}
    for i, n in enumerate([5, 13, 1, 9, 30]):
        logits = _logits(n, rng)
        targets = logits.argmax(-1).astype(np.int16)
        out[f"utt-{i}"] = (logits, targets)
    return out


PARTS = {"part-a": ["utt-0", "utt-1", "utt-2"], "part-b": ["utt-3", "utt-4"]}


def _fields(codec, key):
    logits, targets = _utts()[key]
    return {"targets": targets, **codec.encode(logits)}


def _write(path, backend, codec_name, parts=PARTS):
    """A cache of ``parts`` (name -> keys), committed one by one, then finalized; a learned
    codec's constants beside them, as stage one fits them."""
    from safetensors.torch import save

    codec = _codec(codec_name)
    prepare_location(path)
    written = {}
    if codec.learned:
        data = save({f"codec/{codec.name}/{k}": v for k, v in codec.constants.items()})
        put_atomic(path, FITTED, data)
        written[FITTED] = sha256_bytes(data)
    header = _header(codec, backend, written.get(FITTED))
    for name, keys in parts.items():
        with open_part(path, name, header, BACKEND_CONFIGS[backend]) as part:
            for key in keys:
                part.write(key, _fields(codec, key))
    return finalize(path, header, list(parts), None, written)


@pytest.mark.parametrize("codec_name", list(CODEC_CONFIGS))
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_round_trip(tmp_path, backend, codec_name):
    header = _write(tmp_path / "cache", backend, codec_name)
    assert header.backend == backend and header.num_utterances == 5 and header.num_frames == 58
    assert [(p.name, p.num_utterances) for p in header.parts] == [("part-a", 3), ("part-b", 2)]
    reader = open_cache(tmp_path / "cache")
    assert reader.keys() == list(_utts()) and reader.header == header
    codec = _codec(codec_name)  # fitted the same way: the cache's constants are these
    for key, (logits, targets) in _utts().items():
        stored = reader.read(key)
        np.testing.assert_array_equal(stored["targets"], targets)
        assert stored["targets"].dtype == np.int16  # C < 32768
        got = reader.codec.decode(stored).numpy()
        np.testing.assert_array_equal(got, codec.decode(codec.encode(logits)).numpy())
        centred = logits - logits.mean(1, keepdims=True)
        if codec_name != "pq":  # exact up to float16 (pq: see tests/storage/test_codecs.py)
            got = got - got.mean(1, keepdims=True)
            np.testing.assert_allclose(got, centred, rtol=1e-3, atol=2e-2)
    sliced = reader.read("utt-4", frames=slice(3, 6))
    np.testing.assert_array_equal(sliced["targets"], _utts()["utt-4"][1][3:6])
    with pytest.raises(KeyError, match="utt-9"):
        reader.read("utt-9")


@pytest.mark.parametrize("codec_name", list(CODEC_CONFIGS))
def test_backends_hold_the_same_logical_content(tmp_path, codec_name):
    readers = {
        b: open_cache(_write(tmp_path / b, b, codec_name) and tmp_path / b) for b in BACKENDS
    }
    zarr_reader, wds_reader = readers["zarr"], readers["webdataset"]
    assert zarr_reader.keys() == wds_reader.keys()
    for key in zarr_reader.keys():
        a, b = zarr_reader.read(key), wds_reader.read(key)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_codec_sizes():
    assert CODECS["full"](FullConfig("float16")).bytes_per_frame(500) == 1000
    assert CODECS["full"](FullConfig("float32")).bytes_per_frame(500) == 2000
    assert CODECS["pq"](PQConfig(bytes=62)).bytes_per_frame(500) == 62
    assert _codec("projection").bytes_per_frame(C) == 2 * 3  # float16 coordinates, rank 3


def test_plain_zarr_and_dask_read_the_zarr_cache(tmp_path):
    header = _write(tmp_path / "cache", "zarr", "full32")
    group = zarr.open_group(tmp_path / "cache" / "parts" / "part-b", mode="r")
    offsets = group["frame_offsets"][:]
    i = list(group["utt_ids"][:]).index("utt-3")
    logits = _utts()["utt-3"][0]  # stored shifted by each frame's maximum
    shifted = logits - logits.max(1, keepdims=True)
    np.testing.assert_array_equal(group["logits"][offsets[i] : offsets[i + 1]], shifted)
    targets = da.concatenate(
        [da.from_zarr(str(tmp_path / "cache" / "parts" / p.name), component="targets")
         for p in header.parts]
    )  # fmt: skip
    expected = np.concatenate([t for _, t in _utts().values()])
    np.testing.assert_array_equal(targets.compute(), expected)


def test_plain_webdataset_and_tar_read_the_wds_cache(tmp_path):
    _write(tmp_path / "cache", "webdataset", "full32")
    shards = sorted(str(p) for p in (tmp_path / "cache").glob("parts/*/cache-*.tar"))
    assert [p.split("/parts/")[1] for p in shards] == [
        "part-a/cache-000000.tar",
        "part-a/cache-000001.tar",
        "part-b/cache-000000.tar",
    ]
    samples = list(wds.WebDataset(shards, shardshuffle=False).map(decode_sample))
    assert [s["__key__"] for s in samples] == list(_utts())
    for sample, (logits, targets) in zip(samples, _utts().values(), strict=True):
        np.testing.assert_array_equal(sample["logits.npy"], logits - logits.max(1, keepdims=True))
        np.testing.assert_array_equal(sample["targets.npy"], targets)
        assert sample["json"]["num_frames"] == len(targets)
    listing = subprocess.run(["tar", "tf", shards[0]], capture_output=True, text=True, check=True)
    assert sorted(listing.stdout.split()) == [
        "utt-0.json", "utt-0.logits.npy", "utt-0.targets.npy",
        "utt-1.json", "utt-1.logits.npy", "utt-1.targets.npy",
    ]  # fmt: skip
    with tarfile.open(shards[0]) as tar:
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_webdataset_shards_are_byte_identical_on_rerun(tmp_path):
    _write(tmp_path / "a", "webdataset", "pq")
    _write(tmp_path / "b", "webdataset", "pq")
    shards = sorted((tmp_path / "a").rglob("*.tar"))
    assert len(shards) == 3
    for shard in shards:
        assert (
            shard.read_bytes() == (tmp_path / "b" / shard.relative_to(tmp_path / "a")).read_bytes()
        )


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_failed_part_leaves_nothing_and_keeps_the_cache(tmp_path, backend):
    _write(tmp_path / "cache", backend, "full16")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    codec = _codec("full16")
    with pytest.raises(RuntimeError, match="boom"):
        with open_part(tmp_path / "cache", "part-c", _header(codec, backend),
                       BACKEND_CONFIGS[backend]) as part:  # fmt: skip
            part.write("utt-9", _fields(codec, "utt-0"))
            raise RuntimeError("boom")
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before and verify_cache(tmp_path / "cache") == []


def test_finalize_needs_every_part_and_reads_no_data(tmp_path):
    codec = _codec("full16")
    header = _header(codec)
    prepare_location(tmp_path / "c")
    with open_part(tmp_path / "c", "part-a", header, BACKEND_CONFIGS["zarr"]) as part:
        part.write("utt-0", _fields(codec, "utt-0"))
    with pytest.raises(CacheFormatError, match="1 of 2 parts are not committed yet"):
        finalize(tmp_path / "c", header, ["part-a", "part-b"], None)
    for chunk in (tmp_path / "c" / "parts" / "part-a" / "logits").rglob("*"):
        if chunk.is_file() and "/c/" in chunk.as_posix():
            chunk.write_bytes(b"damaged")  # finalize never reads data, so it cannot notice
    done = finalize(tmp_path / "c", header, ["part-a"], None)
    assert done.num_utterances == 1 and [p.name for p in done.parts] == ["part-a"]
    assert [p for p in verify_cache(tmp_path / "c") if "checksum mismatch" in p]


def test_incomplete_or_foreign_caches_are_refused(tmp_path):
    _write(tmp_path / "cache", "zarr", "full16")
    shutil.copytree(tmp_path / "cache", tmp_path / "nohead")
    (tmp_path / "nohead" / HEADER).unlink()
    with pytest.raises(CacheFormatError, match="nohead: no header.json"):
        open_cache(tmp_path / "nohead")
    raw = json.loads((tmp_path / "cache" / HEADER).read_text())
    (tmp_path / "cache" / HEADER).write_text(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(CacheFormatError, match="schema version 99"):
        open_cache(tmp_path / "cache")
    _write(tmp_path / "other", "zarr", "full16")
    shutil.rmtree(tmp_path / "other" / "parts" / "part-b")
    with pytest.raises(CacheFormatError, match="part-b: missing part"):
        open_cache(tmp_path / "other")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_writer_rejects_bad_shapes_and_duplicates(tmp_path, backend):
    codec = _codec("full16")
    with BACKENDS[backend](BACKEND_CONFIGS[backend]).writer(tmp_path, _header(codec)) as writer:
        with pytest.raises(ValueError, match="x: expected fields"):
            writer.write("x", {"targets": np.zeros(3), "logits": np.zeros((3, C - 1))})
        writer.write("y", {"targets": np.zeros(3), "logits": np.zeros((3, C))})
        with pytest.raises(ValueError, match="y: written twice"):
            writer.write("y", {"targets": np.zeros(3), "logits": np.zeros((3, C))})
        writer.close()


def test_cache_matches_the_corpus(tiny_corpus, tiny_cache):
    from pipeline.corpus.manifest import read_manifest

    reader = open_cache(tiny_cache)
    frames = FrameSpec(tuple(reader.header.frame_kernels), tuple(reader.header.frame_strides))
    rows = read_manifest(tiny_corpus)
    assert sorted(reader.keys()) == sorted(r.id for r in rows)
    for row in rows:
        stored = reader.read(row.id)
        logits, targets = reader.codec.decode(stored).numpy(), stored["targets"]
        assert len(targets) == frames.num_frames(row.samples)
        # targets are the argmax of the fp32 logits: a maximum of the stored fp16 logits too
        np.testing.assert_array_equal(logits[np.arange(len(targets)), targets], logits.max(axis=1))
    assert "untrained" in reader.header.teacher


def test_a_frame_spanning_more_than_float16_keeps_its_top_and_refuses_nan():
    logits = np.array([[1e6, 0.0, 1e6 - 3.0]], dtype=np.float32)  # a span float16 cannot hold
    stored = CODECS["full"](FullConfig("float16")).encode(logits)["logits"]
    assert stored.tolist() == [[0.0, -65504.0, -3.0]]  # no probability lost at any tau
    assert CODECS["full"](FullConfig("float32")).encode(logits)["logits"][0, 1] == -1e6
    with pytest.raises(ValueError, match="NaN or Inf"):
        CODECS["full"](FullConfig("float32")).encode(np.array([[np.nan, 0.0]], np.float32))


def test_atomic_dir_removes_what_a_killed_run_left(tmp_path):
    from pipeline.core.io import atomic_dir

    (tmp_path / ".out.tmp-99999").mkdir()
    (tmp_path / ".out.old-99999").mkdir()
    with atomic_dir(tmp_path / "out", kind="test") as tmp:
        (tmp / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".hubert-kd.json", "x"]
