"""Shared fixtures: a tiny version of the real params.yaml, and a tiny prepared corpus."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = str(Path(sys.executable).parent / "pipeline")  # the CLI of this environment
os.environ.setdefault("HUBERT_KD_NO_PROGRESS", "1")

TINY_MODEL = {
    "conv_dim": 8, "proj_dim": 16, "lstm_layers": 1, "lstm_hidden": 16, "dropout": 0.0,
    "frontend_init": "random",
}  # fmt: skip


TINY_KMEANS = {
    "layer": 1, "num_clusters": 8, "path": "", "fit_utterances": 4, "logits": "distance",
    "temperature": 1.0, "seed": 0,
}  # fmt: skip
TINY_HUBERT = {
    "seed": 0, "num_classes": 20, "logit_temp": 0.1, "hidden_size": 32, "num_layers": 2,
    "num_heads": 2, "intermediate_size": 64, "conv_dim": 16, "proj_dim": 16,
}  # fmt: skip


def tiny_params() -> dict:
    """The repository's params.yaml shrunk to seconds of work (same keys, smaller numbers)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(params)
    p["prepare"]["source"].update(
        speakers=4,
        utterances_per_speaker=3,
        dev_speakers=1,
        test_speakers=1,
        test_utterances_per_speaker=4,
    )
    teacher = p["cache_teacher"]["teacher"]
    teacher["source"] = "random"  # not the shipped teacher: seconds, not minutes
    teacher["random"] = dict(TINY_HUBERT)
    p["cache_teacher"]["backend"]["chunk_frames"] = 64
    p["cache_teacher"]["fit_utterances"] = 6
    p["train"].update(steps=3, warmup_steps=1, batch_seconds=8.0, log_every=2)
    p["train"]["processes"] = 1  # one process, as the kill-and-resume tests expect; tests of
    # seeds shared out to processes set their own
    p["evaluate"].update(efficiency_seconds=1.0)
    p["evaluate"]["probe"]["asr"].update(hidden=8, layers=1, epochs=2)
    p["evaluate"]["probe"]["pr"].update(epochs=2)
    p["pretrain_teacher"].update(
        kmeans_utterances=6, steps=4, batch_seconds=6.0, warmup_steps=1, checkpoint_every=2,
        log_every=2, model=dict(TINY_HUBERT),
    )  # fmt: skip
    p["cache_teacher"]["features"] = ["conv", "layer_1", "layer_2"]  # the tiny teacher has 2
    for student in [*p["students"].values(), p["sweep"]["base"]]:
        if "seeds" in student:  # several, as the demo's, but fewer
            student["seeds"] = student["seeds"][:2]
        if student["arch"] == "lstm":
            student["model"] = {**TINY_MODEL, "frontend": student["model"]["frontend"]}
        else:
            student["model"].update(hidden=32, heads=2, ffn=64, targets=["layer_1", "layer_2"])
    p["train"].update(checkpoint_every=50)
    p["export"].update(formats=["hf", "onnx"])
    return p


STORES = {
    "zarr": {"kind": "zarr", "chunk_frames": 64, "zstd_level": 3},
    "webdataset": {"kind": "webdataset", "shard_utterances": 1000},
    "full": {"kind": "full", "dtype": "float16"},
    "pq": {"kind": "pq", "bytes": 8},
    "projection": {"kind": "projection"},
}


def store(params: dict, backend: str | None = None, codec: str | None = None, **other) -> dict:
    """``params`` caching with ``backend`` and ``codec`` (by kind, tiny settings) and ``other``
    changes to ``cache_teacher``."""
    section = params["cache_teacher"]
    if backend:
        section["backend"] = dict(STORES[backend])
    if codec:
        section["codec"] = dict(STORES[codec])
    section.update(other)
    return params


def with_kmeans(params: dict, **changes) -> dict:
    """``params`` with a tiny k-means section for the teacher (and ``changes`` to the teacher)."""
    params["cache_teacher"]["teacher"].update(kmeans=dict(TINY_KMEANS), **changes)
    return params


def assert_same_weights(
    a: Path, b: Path, rtol: float, atol: float, seed: int | None = None
) -> None:
    """The students saved at ``a`` and ``b`` (``model.pt``) have the same weights (of training
    seed ``seed``; of every seed, the same ones, by default), within tolerance, tensor by
    tensor (the first differing one named)."""
    import torch

    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    seeds = ca["seeds"] if seed is None else [seed]
    assert seed is not None or ca["seeds"] == cb["seeds"]
    for s in seeds:
        wa = ca["state_dicts"][ca["seeds"].index(s)]
        wb = cb["state_dicts"][cb["seeds"].index(s)]
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=rtol, atol=atol, msg=f"{s}:{key}")


def dead_pid() -> int:
    """A process id no process can have on this host (above the kernel's largest): a test's
    "dead writer", which, unlike the pid of a process that has ended, the host never reuses."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except OSError:
        return 2**22 + 1  # Linux's upper bound for pid_max


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A prepared tiny demo corpus (4 speakers x 3 utterances); returns its manifest path."""
    from pipeline.core.config import section
    from stages import prepare

    out = tmp_path_factory.mktemp("corpus") / "data"
    cfg = section(tiny_params(), "prepare", prepare.PrepareConfig)
    prepare.run(cfg, out)
    return out / prepare.MANIFEST


@pytest.fixture(scope="session")
def tiny_cache(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus cached by the tiny random teacher; returns the cache folder."""
    from pipeline.core.config import section
    from pipeline.teacher.caching import CacheTeacherConfig
    from stages import cache_teacher

    out = tmp_path_factory.mktemp("cache") / "cache"
    cfg = section(tiny_params(), "cache_teacher", CacheTeacherConfig)
    cache_teacher.run(cfg, tiny_corpus, out)
    return out


SUBSETS = ("train-clean-100", "train-clean-100", "dev-clean", "test-clean")  # by speaker


@pytest.fixture(scope="session")
def librispeech(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus laid out as LibriSpeech (``<subset>/<speaker>/<chapter>/*.flac`` and
    ``<speaker>-<chapter>.trans.txt``): train-clean-100, dev-clean, test-clean and test-other
    (the last speaker's last utterance); returns the LibriSpeech folder. Copy it to change it."""
    import shutil

    from pipeline.corpus.manifest import audio_path, read_manifest

    root = tmp_path_factory.mktemp("librispeech") / "LibriSpeech"
    rows = read_manifest(tiny_corpus)
    speakers = sorted({r.speaker for r in rows})
    for r in rows:
        index = speakers.index(r.speaker)
        n = int(r.id.rsplit("-", 1)[1])
        subset = SUBSETS[index % len(SUBSETS)]
        if index % len(SUBSETS) == 3 and n == 2:
            subset = "test-other"
        speaker, chapter = str(100 + index), "42"
        folder = root / subset / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        utt = f"{speaker}-{chapter}-{n:04d}"
        shutil.copy(audio_path(r, tiny_corpus), folder / f"{utt}.flac")
        with open(folder / f"{speaker}-{chapter}.trans.txt", "a") as f:
            f.write(f"{utt} {r.transcript.upper()}\n")
    return root
