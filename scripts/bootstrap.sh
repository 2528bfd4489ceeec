#!/usr/bin/env bash
# Create or refresh the project virtualenv (.venv) and install hubert-kd into it.
# Idempotent: a stamp of the install inputs makes a second run a no-op (about a second).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HUBERT_KD_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.hubert-kd-stamp"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"
lock="$root/constraints.txt"  # every package pinned (`make lock` writes it)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/pipeline" ]]; then
  exit 0
fi

echo "bootstrap: installing hubert-kd into $venv (first run takes a few minutes)" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
# The locked pip and build backend first, then the project without build isolation, so that
# nothing installed, the build backend included, floats.
"$venv/bin/python" -m pip install --quiet -c "$lock" pip setuptools
"$venv/bin/python" -m pip install --quiet --no-build-isolation -c "$lock" -e "$root[dev]"

# torchaudio's PyPI wheels link against CUDA torch. On a CPU build of torch their compiled
# extensions fail to load, so remove them: the pure-Python parts this project uses
# (functional.resample, compliance.kaldi, models.wav2vec2) work without them.
"$venv/bin/python" - <<'PY'
import importlib.util, pathlib, torch
if torch.version.cuda is None:
    spec = importlib.util.find_spec("torchaudio")
    lib = pathlib.Path(spec.origin).parent / "lib"
    removed = [p.name for p in lib.glob("*.so")]
    for p in lib.glob("*.so"):
        p.unlink()
    if removed:
        print("bootstrap: CPU torch; removed torchaudio CUDA extensions:", ", ".join(removed))
import torchaudio.functional, torchaudio.compliance.kaldi  # noqa: E401  (fails loudly if broken)
PY
echo "$want" > "$stamp"
echo "bootstrap: done" >&2
