"""What the tests of a user's data share: the CLI runner, the tiny params written to a file, a
tone, a folder's snapshot, a one-line error, a copy of a cache, a training run of ``kd``."""

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import tiny_params, write_params
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def params_args(tmp_path, edit=None) -> list[str]:
    params = tiny_params()
    params["students"] = {k: params["students"][k] for k in ("kd", "dkd_b4")}
    if edit:
        edit(params)
    write_params(tmp_path / "params.yaml", params)
    return ["--params", str(tmp_path / "params.yaml")]


def tone(path: Path, samples: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.3 * np.sin(np.arange(samples) / 5.0), 16_000)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def one_line_error(result, *needles: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def copy_cache(tiny_cache: Path, tmp_path: Path, name: str = "cache") -> Path:
    out = tmp_path / name
    shutil.copytree(tiny_cache, out)
    return out


def train_kd(tmp_path, tiny_corpus, cache, *extra):
    args = [*params_args(tmp_path), "--manifest", str(tiny_corpus), "--cache", str(cache)]
    return runner.invoke(app, ["train-student", "kd", "--out", str(tmp_path / "kd"), *args, *extra])
