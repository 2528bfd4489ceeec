"""The README's LibriSpeech recipe, run as written: on a LibriSpeech-shaped tree (train-clean-100,
dev-clean, test-clean, test-other; FLAC + .trans.txt), with a tiny fairseq-format HuBERT
checkpoint and configs/paper.yaml shrunk to seconds of work on the CPU."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, write_params
from test_teacher_sources import _write_fairseq

pytestmark = pytest.mark.slow

MARKER = "tests/corpus/test_librispeech.py"


def recipe() -> list[str]:
    """The lines of the README's bash block that names this test."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if MARKER in b.splitlines()[0]]
    return block.splitlines()


def shrunk_paper_config(librispeech: Path, checkpoint: Path) -> dict:
    """configs/paper.yaml with the two paths a user sets, on the CPU, at toy sizes."""
    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    params["prepare"]["source"]["root"] = str(librispeech)
    stage = params["cache_teacher"]
    stage["teacher"].update(source=f"fairseq:{checkpoint}", device="cpu", precision="fp32")
    stage.update(batch_seconds=20.0, threads=2, loader_workers=0, fit_utterances=4,
                 shard_utterances=2)  # fmt: skip
    params["train"].update(steps=3, warmup_steps=1, batch_seconds=8.0, threads=2, device="cpu",
                           precision="fp32", log_every=1, checkpoint_every=0, streams=1,
                           loader_workers=0)  # fmt: skip
    for student in [*params["students"].values(), params["sweep"]["base"]]:
        student["model"].update(proj_dim=16, lstm_layers=1, lstm_hidden=16)
    evaluate = params["evaluate"]
    evaluate.update(batch_seconds=20.0, threads=2, device="cpu", efficiency_seconds=1.0)
    evaluate["probe"].update(batch_frames=400, seeds=1)
    evaluate["probe"]["asr"].update(hidden=8, layers=1, epochs=1)
    evaluate["probe"]["pr"].update(epochs=1)
    params["export"].update(batch_seconds=20.0, threads=2)
    return params


def test_the_readme_librispeech_recipe_runs_as_written(librispeech, tmp_path):
    lines = recipe()
    assert lines[1].startswith("cp configs/paper.yaml params.yaml")
    work = tmp_path / "project"
    (work / "configs").mkdir(parents=True)
    shutil.copytree(librispeech, tmp_path / "LibriSpeech")
    _write_fairseq(tmp_path / "hubert.pt", "default")  # HuBERT Base's group-norm conv stack
    config = shrunk_paper_config(tmp_path / "LibriSpeech", tmp_path / "hubert.pt")
    write_params(work / "configs" / "paper.yaml", config)  # what `cp` copies, paths set
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HUBERT_KD_NO_PROGRESS": "1"}  # fmt: skip
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    header = yaml.safe_load((work / "cache" / "header.json").read_text())
    utterances = len(list(librispeech.rglob("*.flac")))
    assert header["codec"]["name"] == "pq" and header["num_utterances"] == utterances
    metrics = yaml.safe_load((work / "eval" / "models" / "dkd_b4.json").read_text())
    assert set(metrics["splits"]) == {"dev-clean", "test-clean", "test-other"}
    for split in metrics["splits"].values():  # PER from eSpeak NG's phonemes of the transcripts
        assert {"wer", "cer", "per"} <= set(split) and len(split["per"]["runs"]) == 3
    exported = yaml.safe_load((work / "exports" / "dkd_b4" / "export.json").read_text())
    assert {"hf", "onnx", "onnx-int8"} <= set(exported["forms"])
