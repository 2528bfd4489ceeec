"""The exported upstream in the real s3prl, as a user runs it from a fresh checkout: the copy
and registration lines of docs/export.md run as written on s3prl 0.4.18's own source, then
s3prl's own hub lookup of ``-u hubert_kd_local`` (what ``run_downstream.py`` and its
``downstream/runner.py`` do) and its own ``Featurizer``, never a re-implementation of either.

How the test gets s3prl (kept out of the project's dependencies): s3prl 0.4.18's source
distribution from PyPI (``pip download``; the same tree as the repository at that release),
and, because its ``hub.py`` calls ``torchaudio.set_audio_backend`` (gone since torchaudio
2.9), torchaudio 2.8.0 in an overlay folder (``pip install --no-deps --target``) whose
compiled ``lib/*.so`` are removed, as ``scripts/bootstrap.sh`` does for CPU torch. Both are
fetched once into ``~/.cache/hubert-kd/`` (or ``$HUBERT_KD_S3PRL_CACHE``); the test's
interpreter puts the overlay and the checkout before this environment's packages (torch,
transformers, numpy), in a process that refuses to import this project. It needs PyPI the
first time."""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_export import FRESH, _lstm

from pipeline.export.config import ExportConfig
from pipeline.nn.frames import HUBERT_FRAMES
from stages import export

pytestmark = pytest.mark.slow

S3PRL = "0.4.18"  # the newest release on PyPI
TORCHAUDIO = "2.8.0"  # the newest torchaudio that still has set_audio_backend
EXPORT = "/path/to/exports/dkd_b4"  # where docs/export.md's lines find the export

# What s3prl does with `-u hubert_kd_local -k <hf dir>` up to the downstream model: the
# choices of run_downstream.py's -u, then downstream/runner.py's _get_upstream and
# _get_featurizer, on the CPU.
RUN = (
    FRESH
    + """
from s3prl import hub
from s3prl.upstream.interfaces import Featurizer

assert "hubert_kd_local" in [name for name in dir(hub) if name[0] != "_"]
assert "hubert_kd_local" in hub.options()
Upstream = getattr(hub, "hubert_kd_local")
upstream = Upstream(ckpt=sys.argv[1], model_config=None, refresh=False).eval()
featurizer = Featurizer(upstream=upstream, feature_selection="hidden_states",
                        layer_selection=None, upstream_device="cpu", normalize=False)
with torch.no_grad():
    features = upstream(wavs)
    weighted = featurizer(wavs, features)
np.savez(sys.argv[3], layers=featurizer.layer_num, dim=featurizer.output_dim,
         rate=featurizer.downsample_rate,
         **{f"hidden{i}": h.numpy() for i, h in enumerate(features["hidden_states"])},
         **{f"out{i}": f.numpy() for i, f in enumerate(weighted)})
"""
)


def s3prl_release() -> tuple[Path, Path]:
    """``(source, overlay)``: s3prl's released source tree and the torchaudio overlay,
    fetched from PyPI into the cache folder the first time (built aside, then renamed)."""
    default = Path.home() / ".cache" / "hubert-kd"
    cache = Path(os.environ.get("HUBERT_KD_S3PRL_CACHE", default))
    home = cache / f"s3prl-{S3PRL}-torchaudio-{TORCHAUDIO}"
    if not home.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache, prefix=".s3prl-"))
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        for command in (
            [*pip, "download", "--no-deps", "-d", str(work / "dist"), f"s3prl=={S3PRL}"],
            [*pip, "install", "--no-deps", "--target", str(work / "overlay"),
             f"torchaudio=={TORCHAUDIO}"],
        ):  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-2000:]}"
        for lib in (work / "overlay" / "torchaudio" / "lib").glob("*.so"):
            lib.unlink()  # CUDA builds: they cannot load beside CPU torch
        (sdist,) = (work / "dist").glob(f"s3prl-{S3PRL}.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(work / "source", filter="data")
        (work / "source" / f"s3prl-{S3PRL}").rename(work / "s3prl")
        try:
            work.rename(home)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(work, ignore_errors=True)
    return home / "s3prl", home / "overlay"


def documented_lines() -> list[str]:
    """The lines that copy the upstream into s3prl and register it, as docs/export.md and the
    README quote them (the same two)."""
    quoted = []
    for page in (ROOT / "docs" / "export.md", ROOT / "README.md"):
        blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)
        (block,) = [b for b in blocks if "s3prl/hub.py" in b]
        quoted.append([line for line in block.splitlines() if line.startswith(("cp ", "echo "))])
    assert quoted[0] == quoted[1] and len(quoted[0]) == 2 and EXPORT in quoted[0][0], quoted
    return quoted[0]


def test_s3prl_finds_the_registered_upstream_and_its_featurizer_weighs_its_layers(tmp_path):
    student, ckpt = _lstm(tmp_path)
    export.run(ExportConfig(formats=["hf"]), ckpt, tmp_path / "export", None)
    source, overlay = s3prl_release()
    checkout = tmp_path / "s3prl"  # a fresh checkout: s3prl/hub.py, s3prl/upstream/, ...
    shutil.copytree(source, checkout)
    script = "\n".join(documented_lines()).replace(EXPORT, str(tmp_path / "export"))
    done = subprocess.run(["bash", "-euc", script], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    wavs = [0.1 * torch.randn(n, generator=torch.Generator().manual_seed(n))
            for n in (16_000, 9_999, 4_321)]  # fmt: skip
    np.savez(tmp_path / "in.npz", count=len(wavs), **{f"wav{i}": w.numpy()
                                                      for i, w in enumerate(wavs)})  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{overlay}{os.pathsep}{checkout}"}
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "export" / "hf"), str(tmp_path / "in.npz"),
         str(tmp_path / "out.npz")],
        cwd=checkout / "s3prl", env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")

    assert (int(got["layers"]), int(got["dim"]), int(got["rate"])) == (2, 32, 320)
    for i, wav in enumerate(wavs):
        with torch.no_grad():
            layers, frames = student.extract_features(wav[None], torch.tensor([len(wav)]))
        n = int(frames)
        for j, layer in enumerate(layers[1:]):  # the LSTM layers, as wide as the last
            np.testing.assert_allclose(got[f"hidden{j}"][i, :n], layer[0].numpy(), atol=1e-5)
        # untrained weights are equal: the Featurizer's sum is the layers' mean, over the
        # frames s3prl counts (len / 320, rounded), zero past the student's own
        out = got[f"out{i}"]
        assert out.shape == (min(round(len(wav) / 320), got["hidden0"].shape[1]), 32)
        mean = torch.stack([layer[0] for layer in layers[1:]]).mean(0).numpy()
        np.testing.assert_allclose(out[:n], mean, atol=1e-5)
        assert not out[n:].any()
    assert n == HUBERT_FRAMES.num_frames(len(wavs[-1]))
