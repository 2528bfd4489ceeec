"""Teacher files that are damaged, foreign or hostile are named in one line and never run code:
fairseq checkpoints (even trusted), k-means pickles (only with the flag, sandboxed)."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import one_line_error, params_args, runner

from cli.main import app


def _teacher_args(tmp_path, tiny_corpus, source, trust=False) -> list[str]:
    args = [*params_args(tmp_path), "--manifest", str(tiny_corpus), "--out", str(tmp_path / "c")]
    return [*args, "--teacher", source, *(["--trust-checkpoint"] if trust else [])]


def test_damaged_or_foreign_teacher_files_are_named(tiny_corpus, tmp_path):
    truncated, foreign, legacy = tmp_path / "t.pt", tmp_path / "f.pt", tmp_path / "l.pt"
    torch.save({"model": {"w": torch.zeros(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    foreign.write_bytes(b"this is no checkpoint at all")
    torch.save([1, 2, 3], legacy, _use_new_zipfile_serialization=False)
    for path, needle in ((truncated, "damaged, truncated or not a torch file"),
                         (foreign, "damaged, truncated or not a torch file"),
                         (legacy, "not a fairseq checkpoint")):  # fmt: skip
        for trust in (False, True):
            args = _teacher_args(tmp_path, tiny_corpus, f"fairseq:{path}", trust)
            one_line_error(runner.invoke(app, ["cache-teacher", *args]), str(path), needle)


def test_a_fairseq_named_function_in_a_trusted_checkpoint_never_runs(tiny_corpus, tmp_path):
    marker = tmp_path / "pwned"
    module = types.ModuleType("fairseq.evil")

    def run(path):  # what an attacker's pickle would call
        Path(path).write_text("ran")

    run.__module__, run.__qualname__ = "fairseq.evil", "run"
    module.run = run

    class Payload:
        def __reduce__(self):
            return run, (str(marker),)

    sys.modules["fairseq"] = types.ModuleType("fairseq")
    sys.modules["fairseq.evil"] = module
    try:
        torch.save({"model": {}, "cfg": Payload()}, tmp_path / "evil.pt")
    finally:
        sys.modules.pop("fairseq.evil")
        sys.modules.pop("fairseq")
    args = _teacher_args(tmp_path, tiny_corpus, f"fairseq:{tmp_path / 'evil.pt'}", trust=True)
    result = runner.invoke(app, ["cache-teacher", *args])
    one_line_error(result, "evil.pt")
    assert not marker.exists()


def test_kmeans_pickles_need_the_flag_and_are_sandboxed_under_it(tmp_path):
    from pipeline.core.errors import CheckpointError
    from pipeline.teacher.kmeans import load_centroids

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    import joblib

    joblib.dump({"cluster_centers_": Payload()}, tmp_path / "km.bin")
    with pytest.raises(CheckpointError, match="km.bin: a joblib/scikit-learn k-means file"):
        load_centroids(tmp_path / "km.bin", trust=False)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_centroids(tmp_path / "km.bin", trust=True)
    assert not marker.exists()
    centroids = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "km.npy", centroids)
    from safetensors.numpy import save_file

    save_file({"centroids": centroids}, tmp_path / "km.safetensors")
    for name in ("km.npy", "km.safetensors"):
        np.testing.assert_array_equal(load_centroids(tmp_path / name, trust=False), centroids)
