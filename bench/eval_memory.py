"""Peak memory of evaluating one upstream does not grow with the corpus (issue 14's bar).

Evaluates one upstream (a trained student, default ``students/dkd_b4/model.pt``, or the
teacher of ``--params``) with the evaluation stage's own code on the demo corpus and on the
same corpus with every utterance replicated ``--factor`` times (new ids, the same audio), each
in fresh processes (``--repeats`` each: a peak varies by ~150 MiB from run to run, with the
order in which threads allocate), and prints the median peak RSS of each and their ratio
(goal <= 1.2x).
The probe's epochs and seeds are cut to one (memory is per batch, not per epoch).

    .venv/bin/python bench/eval_memory.py [--factor 4] [--repeats 3] [--upstream student|teacher]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def replicate(manifest: Path, factor: int, out: Path) -> Path:
    """``manifest`` with each row ``factor`` times (ids ``<id>~<k>``, absolute audio paths)."""
    from pipeline.corpus.manifest import audio_root, read_manifest, write_manifest

    root = audio_root(manifest).resolve()  # each address keeps its kind (a range, a row)
    rows = [
        dataclasses.replace(u, id=f"{u.id}~{k}", audio=u.audio.under(root))
        for u in read_manifest(manifest)
        for k in range(factor)
    ]
    write_manifest(out, rows)
    return out


def child(args) -> None:
    """Evaluate one upstream on ``args.manifest``; print the peak RSS (MiB) and the time."""
    from pipeline.core.config import load_params, override, section
    from pipeline.corpus.manifest import read_manifest
    from pipeline.evaluation.scoring import EvaluateConfig, probe_data, score_upstreams
    from pipeline.evaluation.upstream import Upstream

    raw = override(load_params(args.params), {"evaluate.probe.asr.epochs": 1,
                                              "evaluate.probe.pr.epochs": 1,
                                              "evaluate.probe.seeds": 1})  # fmt: skip
    cfg = section(raw, "evaluate", EvaluateConfig)
    if args.upstream == "teacher":
        from pipeline.teacher.config import TeacherConfig
        from pipeline.teacher.sources import build_teacher

        teacher_cfg = section(raw["cache_teacher"], "teacher", TeacherConfig)
        model = build_teacher(teacher_cfg, with_kmeans=False)
        upstream = Upstream("teacher", "teacher", model.hidden_states, model)
    else:
        from pipeline.students.checkpoint import load_student

        model, _ = load_student(Path(args.checkpoint))
        upstream = Upstream("student", "student", model.extract_features, model)
    manifest = Path(args.manifest)
    data = probe_data(cfg, read_manifest(manifest))
    start = time.perf_counter()
    score_upstreams({None: upstream}, cfg, data, manifest)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    frames = sum(u.samples for rows in data.splits.values() for u in rows) // 320
    print(json.dumps({"peak_mib": peak, "seconds": time.perf_counter() - start,
                      "frames": frames}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--checkpoint", default=str(ROOT / "students" / "dkd_b4" / "model.pt"))
    parser.add_argument("--upstream", choices=["student", "teacher"], default="student")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="processes per corpus size")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        bigger = replicate(Path(args.manifest), args.factor, Path(tmp) / "manifest.jsonl")
        for label, manifest in (("demo corpus", args.manifest), (f"{args.factor}x", bigger)):
            cmd = [sys.executable, __file__, "--child", "--manifest", str(manifest),
                   "--params", args.params, "--checkpoint", args.checkpoint,
                   "--upstream", args.upstream]  # fmt: skip
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            runs.sort(key=lambda r: r["peak_mib"])
            r = results[label] = runs[len(runs) // 2]
            peaks = ", ".join(f"{x['peak_mib']:.0f}" for x in runs)
            print(f"{label:<12} {r['frames']:>9,} probe frames  peak RSS {r['peak_mib']:7.0f} MiB"
                  f" (median of {peaks})  ({r['seconds']:.0f} s)")  # fmt: skip
    small, large = results.values()
    print(f"growth: {large['peak_mib'] / small['peak_mib']:.2f}x for {args.factor}x the frames "
          f"(goal <= 1.2x); upstream: {args.upstream}")  # fmt: skip


if __name__ == "__main__":
    main()
