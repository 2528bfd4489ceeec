"""Stage one as a whole: resume after kill -9, dask workers, checksums, both backends, fidelity."""

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PIPELINE, store, tiny_params, with_kmeans, write_params
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.config import section
from pipeline.core.faults import FAULT
from pipeline.corpus.manifest import read_manifest
from pipeline.teacher.caching import CacheTeacherConfig
from stages import cache_teacher
from storage import open_cache, read_header, verify_cache


def _cfg(**overrides) -> CacheTeacherConfig:
    return section(store(tiny_params(), **overrides), "cache_teacher", CacheTeacherConfig)


def _same_cache(a: Path, b: Path) -> None:
    """Same header, and every file of the two caches byte-identical."""
    assert read_header(a) == read_header(b) and read_header(a).parts

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file()}  # fmt: skip

    assert files(a) == files(b)


@pytest.mark.parametrize("backend", ["zarr", "webdataset"])
def test_sharded_run_equals_one_shard(tiny_corpus, tmp_path, backend):
    one = cache_teacher.run(
        _cfg(backend=backend, shard_utterances=100), tiny_corpus, tmp_path / "one"
    )
    many = cache_teacher.run(
        _cfg(backend=backend, shard_utterances=5), tiny_corpus, tmp_path / "many"
    )
    assert one.num_frames == many.num_frames and not (tmp_path / "many.partial").exists()
    a, b = open_cache(tmp_path / "one"), open_cache(tmp_path / "many")
    assert sorted(a.keys()) == sorted(b.keys())  # storage order is length-sorted per shard
    for key in a.keys():
        for name, values in a.read(key).items():
            np.testing.assert_array_equal(values, b.read(key)[name])
    assert verify_cache(tmp_path / "many") == []


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_cache(tiny_corpus, tmp_path):
    params = tiny_params()
    params["cache_teacher"]["shard_utterances"] = 1  # one utterance per part
    write_params(tmp_path / "params.yaml", params)
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    cache_teacher.run(cfg, tiny_corpus, tmp_path / "reference")

    def command(out, *extra):
        return [PIPELINE, "cache-teacher", "--params", str(tmp_path / "params.yaml"),
                "--manifest", str(tiny_corpus), "--out", str(out), *extra]  # fmt: skip

    def killed_after(cmd, out, parts):
        """Run ``cmd`` until it kills itself right after committing its ``parts``-th part."""
        env = {**os.environ, "HUBERT_KD_NO_PROGRESS": "1", FAULT: f"part:{parts}"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        return sorted(p.parent.name for p in out.glob("parts/*/part.json"))

    # the whole run, killed after 3 parts, then run again
    out = tmp_path / "cache"
    committed = killed_after(command(out), out, parts=3)
    assert not (out / "header.json").exists() and len(committed) == 3  # nothing complete
    assert list(out.glob("parts/.*.lock"))  # killed holding the third part's lock
    result = CliRunner().invoke(app, command(out)[1:])
    assert result.exit_code == 0, result.output
    _same_cache(tmp_path / "reference", out)
    assert not list(out.glob("parts/.*"))  # no temp folder left

    # two shard jobs (as SLURM array tasks would be); the second killed and run again
    out = tmp_path / "sharded"
    result = CliRunner().invoke(app, command(out, "--shard", "0/2")[1:])
    assert result.exit_code == 0 and "other shards still missing" in result.output
    first = len(list(out.glob("parts/*/part.json")))
    assert len(killed_after(command(out, "--shard", "1/2"), out, parts=1)) == first + 1
    assert not (out / "header.json").exists()
    result = CliRunner().invoke(app, command(out, "--shard", "1/2")[1:])
    assert result.exit_code == 0, result.output
    _same_cache(tmp_path / "reference", out)


@pytest.mark.slow
@pytest.mark.parametrize("logits", ["head", "kmeans"])
def test_dask_workers_give_the_in_process_cache(tiny_corpus, tmp_path, logits):
    """Two worker processes (as one per GPU would be): each loads the teacher itself from its
    recipe (k-means centroids fitted once, in the client) and writes its parts in place."""
    from distributed import LocalCluster

    def cfg(**changes) -> CacheTeacherConfig:
        params = store(tiny_params(), shard_utterances=3, **changes)
        if logits == "kmeans":
            with_kmeans(params, logits="kmeans", targets="kmeans")
        return section(params, "cache_teacher", CacheTeacherConfig)

    cache_teacher.run(cfg(), tiny_corpus, tmp_path / "local")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        cache_teacher.run(cfg(scheduler=cluster.scheduler_address), tiny_corpus, tmp_path / "dask")
    _same_cache(tmp_path / "local", tmp_path / "dask")


@pytest.mark.parametrize("backend", ["zarr", "webdataset"])
def test_verify_names_the_damaged_file(tiny_corpus, tmp_path, backend):
    cache_teacher.run(_cfg(backend=backend, shard_utterances=4), tiny_corpus, tmp_path / "c")
    header = read_header(tmp_path / "c")
    victim = sorted(header.checksums)[-1]
    data = bytearray((tmp_path / "c" / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "c" / victim).write_bytes(bytes(data))
    assert verify_cache(tmp_path / "c") == [f"{victim}: checksum mismatch (damaged or changed)"]
    result = CliRunner().invoke(app, ["cache-verify", str(tmp_path / "c")])
    assert result.exit_code == 1 and victim in result.output
    (tmp_path / "c" / victim).write_bytes(bytes(data[: len(data) // 3]))  # truncated
    assert verify_cache(tmp_path / "c") == [f"{victim}: checksum mismatch (damaged or changed)"]


def test_cache_info_reports_sizes(tiny_cache):
    result = CliRunner().invoke(app, ["cache-info", str(tiny_cache)])
    assert result.exit_code == 0
    for field in (
        "utterances",
        "frames",
        "bytes/frame (encoded)",
        "fp32 logits / on disk",
        "fingerprint",
    ):
        assert field in result.output


@pytest.mark.parametrize(("backend", "codec"), [("webdataset", "pq"), ("zarr", "projection")])
def test_students_train_from_either_backend_and_a_learned_codec(
    tiny_corpus, tmp_path, monkeypatch, backend, codec
):
    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    store(params, backend=backend, codec=codec)
    params["students"] = {"dkd_b4": params["students"]["dkd_b4"]}
    write_params(tmp_path / "params.yaml", params)
    runner = CliRunner()
    for args in (["cache-teacher"], ["train-student", "dkd_b4"], ["evaluate-student", "dkd_b4"]):
        result = runner.invoke(app, [*args, "--manifest", str(tiny_corpus)])
        assert result.exit_code == 0, (args, result.output)
    header = read_header(tmp_path / "cache")
    assert header.backend == backend and header.codec["name"] == codec
    assert header.codec["constants"] == header.checksums["fitted.safetensors"]
    assert verify_cache(tmp_path / "cache") == []


def test_a_learned_codec_decodes_the_teacher_where_the_student_trains(tiny_corpus, tmp_path):
    """The projection codec is exact for the tiny teacher's cosine head: its cached logits,
    decoded batch by batch as training decodes them, are the full codec's."""
    from pipeline.training.cache_batches import CacheBatches

    for codec in ("full", "projection"):
        cache_teacher.run(_cfg(codec=codec), tiny_corpus, tmp_path / codec)
    utts = read_manifest(tiny_corpus, split="train")
    decoded = {}
    for codec in ("full", "projection"):
        batches = CacheBatches(tmp_path / codec, utts, tiny_corpus, batch_seconds=4.0, seed=0,
                               shuffle=False, pool=0)  # fmt: skip
        decoded[codec] = {}
        for batch in batches:
            batch = batch.decode_teacher(batches.codec, batches.argmax_targets)
            for i, key in enumerate(batch.ids):
                n = int(batch.frame_mask[i].sum())
                logits = batch.teacher_logits[i, :n]
                decoded[codec][key] = logits - logits.mean(-1, keepdim=True)
    rank = read_header(tmp_path / "projection").codec["rank"]
    assert rank == tiny_params()["cache_teacher"]["teacher"]["random"]["proj_dim"]
    for key, full in decoded["full"].items():
        torch.testing.assert_close(decoded["projection"][key], full, rtol=0, atol=5e-3)


@pytest.mark.slow
def test_shard_jobs_share_one_fitted_kmeans_and_codec(tiny_corpus, tmp_path):
    """k-means targets and a learned codec are fitted once: a shard job without them refuses,
    naming the command that fits them; after it, two shard jobs make the one-run cache."""
    params = store(tiny_params(), codec="pq", shard_utterances=3)
    with_kmeans(params, logits="kmeans", targets="kmeans")
    write_params(tmp_path / "params.yaml", params)
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    cache_teacher.run(cfg, tiny_corpus, tmp_path / "one")

    def command(*extra):
        return ["cache-teacher", "--params", str(tmp_path / "params.yaml"), "--manifest",
                str(tiny_corpus), "--out", str(tmp_path / "sharded"), *extra]  # fmt: skip

    refused = CliRunner().invoke(app, command("--shard", "0/2"))
    assert refused.exit_code == 1 and "--fit-only" in refused.output
    assert not list((tmp_path / "sharded").glob("parts/*"))
    fitted = CliRunner().invoke(app, command("--fit-only"))
    assert fitted.exit_code == 0, fitted.output
    for shard in ("0/2", "1/2"):
        result = CliRunner().invoke(app, command("--shard", shard))
        assert result.exit_code == 0, result.output
    _same_cache(tmp_path / "one", tmp_path / "sharded")
    assert read_header(tmp_path / "one").target_source == "kmeans(layer=1)"


@pytest.mark.parametrize("backend", ["zarr", "webdataset"])
def test_cache_at_an_fsspec_url_serves_training(tiny_corpus, tiny_cache, tmp_path, backend):
    """`memory://` stands in for s3:// or gs://: built locally, uploaded header last, then
    verified, summarised and read for training through fsspec with the same content."""
    import fsspec

    params = tiny_params()
    store(params, backend=backend)
    params["students"] = {"kd": params["students"]["kd"]}
    write_params(tmp_path / "params.yaml", params)
    url = f"memory://hubert-kd-test/{backend}/cache"
    runner = CliRunner()
    args = ["--params", str(tmp_path / "params.yaml"), "--manifest", str(tiny_corpus)]
    result = runner.invoke(app, ["cache-teacher", "--out", url, *args])
    assert result.exit_code == 0, result.output
    fs = fsspec.filesystem("memory")
    assert fs.exists(f"/hubert-kd-test/{backend}/cache/header.json")
    assert runner.invoke(app, ["cache-verify", url]).exit_code == 0
    assert "utterances" in runner.invoke(app, ["cache-info", url]).output
    remote, local = open_cache(url), open_cache(tiny_cache)
    assert sorted(remote.keys()) == sorted(local.keys())
    key = local.keys()[0]
    for name, values in local.read(key).items():
        np.testing.assert_array_equal(remote.read(key)[name], values)
    result = runner.invoke(
        app, ["train-student", "kd", "--cache", url, "--out", str(tmp_path / "kd"), *args]
    )
    assert result.exit_code == 0, result.output
    fs.rm(f"/hubert-kd-test/{backend}", recursive=True)
