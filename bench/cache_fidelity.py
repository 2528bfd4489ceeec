"""Rate-distortion of the logit codecs on a real teacher: bytes per frame against the error of
the KD and DKD losses (values and gradients) and top-1 agreement, at tau 1, 2 and 4.

The teacher runs over the corpus: learned codecs are fitted on train utterances and measured
on the test split, against a student that is the teacher plus N(0, 1) noise (DKD: alpha 1,
beta 4, the paper's). For each codec and setting it prints bytes/frame (with the 2-byte int16
target), the worst relative error over tau 1, 2, 4 and over KD and DKD of the loss value and of
its gradient with respect to the student's logits (||g' - g|| / ||g|| over every frame), and
the share of frames whose decoded argmax is the teacher's (raw, and restored from argmax
targets, as training decodes). With ``--student`` (a trained student's ``model.pt`` of the
same C), also what training consumes: the error of the loss gradient with respect to that
student's trainable weights, over batches of ``train.batch_seconds`` of test audio, the decoded
logits restored as training restores them. Then the Gaussian rate-distortion bound of the
logits' spectrum: the bytes a transform codec (one that uses their covariance only) needs for a
given rms error per class.

Besides the cache's codecs (``full``, ``projection``, ``pq``) it measures retired ones, kept
here only to justify their retirement: ``topk`` (k logits + the rest's log-sum-exp),
``topk-tau`` (+ the rest's log-mass at each tau, decoded per tau) and ``topk+pq`` (an exact
top-k over a pq tail shape).

    .venv/bin/python bench/cache_fidelity.py [--teacher hf:assets/demo-teacher]
        [--manifest data/manifest.jsonl] [--fit 160] [--test 80] [--pq 16,32,48,62,96,128]
        [--student students/dkd_b4/model.pt]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.utils.rnn import pad_sequence

from pipeline.core.config import section
from pipeline.corpus.manifest import read_manifest, read_utterance
from pipeline.losses import dkd_loss, kd_loss
from pipeline.nn.frames import lengths_to_mask
from pipeline.students.checkpoint import load_student
from pipeline.teacher.caching import CacheTeacherConfig, load_teacher
from storage.codecs import CODECS, FullConfig, PQConfig, ProjectionConfig, repair_argmax

ROOT = Path(__file__).resolve().parents[1]
TAUS = (1.0, 2.0, 4.0)
TARGET_BYTES = 2  # int16 targets, beside every codec


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def teacher_logits(source: str, manifest: Path, fit: int, test: int):
    """Train sample logits ``(N, C)``, test logits ``(M, C)`` and the test waveforms, from the
    teacher ``source``."""
    params = copy.deepcopy(PARAMS)
    params["cache_teacher"]["teacher"]["source"] = source
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    utts = read_manifest(manifest)
    teacher = load_teacher(cfg.teacher, utts, manifest)

    def wavs(split: str, n: int) -> list[torch.Tensor]:
        return [read_utterance(u, manifest) for u in utts if u.split == split][:n]

    def run(audio: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([teacher.forward_batch([w])[0][0] for w in audio])

    test_wavs = wavs("test", test)
    return run(wavs("train", fit)), run(test_wavs), test_wavs


def errors(exact: torch.Tensor, decoded: dict[float, torch.Tensor]) -> tuple[float, float]:
    """Worst relative (value, gradient) error over KD and DKD at each tau (``decoded[tau]``)."""
    noise = torch.randn(exact.shape, generator=torch.Generator().manual_seed(0))
    targets = exact.argmax(-1)[None]
    mask = torch.ones(1, len(exact), dtype=torch.bool)
    worst_value = worst_grad = 0.0
    for tau in TAUS:
        for name in ("kd", "dkd"):
            values, grads = [], []
            for teacher in (exact, decoded[tau]):
                student = (exact + noise)[None].requires_grad_(True)
                if name == "kd":
                    loss = kd_loss(student, teacher[None], mask, tau=tau)["kd"]
                else:
                    loss = dkd_loss(student, teacher[None], targets, mask, alpha=1.0, beta=4.0,
                                    tau=tau)["dkd"]  # fmt: skip
                (grad,) = torch.autograd.grad(loss, student)
                values.append(loss.detach().item())
                grads.append(grad)
            worst_value = max(worst_value, abs(values[1] / values[0] - 1))
            worst_grad = max(worst_grad, float((grads[1] - grads[0]).norm() / grads[0].norm()))
    return worst_value, worst_grad


def loss_grads(model, logits, teachers: dict, targets, mask) -> list[torch.Tensor]:
    """Per tau and KD | DKD (against ``teachers[tau]``), the flat gradient of the loss with
    respect to ``model``'s trainable weights; the student's ``logits`` keep their graph."""
    weights = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for tau in TAUS:
        for loss in (
            kd_loss(logits, teachers[tau], mask, tau=tau)["kd"],
            dkd_loss(logits, teachers[tau], targets, mask, alpha=1.0, beta=4.0, tau=tau)["dkd"],
        ):
            parts = torch.autograd.grad(loss, weights, retain_graph=True)
            grads.append(torch.cat([g.flatten() for g in parts]))
    return grads


def student_errors(path: Path, wavs: list, exact: torch.Tensor, decoded: list) -> torch.Tensor:
    """Per codec (``decoded[i][tau]``), the relative error at each tau of the KD and DKD loss
    gradients with respect to a trained student's weights, ``(codecs, taus, 2)``, over batches
    of ``train.batch_seconds`` of audio: ``sqrt(sum_b ||G'_b - G_b||^2 / sum_b ||G_b||^2)``.
    Decoded logits are restored from the argmax targets first, as training does."""
    model, _ = load_student(path)
    if model.num_classes != exact.shape[-1]:
        raise SystemExit(f"{path}: the student predicts {model.num_classes} classes, the "
                         f"teacher {exact.shape[-1]}")  # fmt: skip
    if getattr(model.cfg, "frontend", "") == "cached":  # it trains on cached conv features
        model.frontend.requires_grad_(False)
    limit, batches, start, total = PARAMS["train"]["batch_seconds"] * 16000, [], 0, 0
    for i, wav in enumerate(wavs):
        if i > start and total + len(wav) > limit:
            batches.append(wavs[start:i])
            start, total = i, 0
        total += len(wav)
    batches.append(wavs[start:])
    targets = exact.argmax(-1)
    restored = [{tau: repair_argmax(d[tau], targets) for tau in TAUS} for d in decoded]
    error = torch.zeros(len(decoded), 2 * len(TAUS), dtype=torch.float64)
    norm = torch.zeros(2 * len(TAUS), dtype=torch.float64)
    offset = 0
    for audio in batches:
        lengths = torch.tensor([len(w) for w in audio])
        logits, frames = model(pad_sequence(audio, batch_first=True), lengths)
        mask = lengths_to_mask(frames, logits.shape[1])
        rows = slice(offset, offset + int(frames.sum()))
        offset = rows.stop
        if offset > len(exact):
            raise SystemExit(f"{path}: the student's frames are not the teacher's")
        split = frames.tolist()
        y = pad_sequence(targets[rows].split(split), batch_first=True)
        teacher = pad_sequence(exact[rows].split(split), batch_first=True)
        reference = loss_grads(model, logits, dict.fromkeys(TAUS, teacher), y, mask)
        norm += torch.tensor([float(g.square().sum()) for g in reference], dtype=torch.float64)
        for c, per_tau in enumerate(restored):
            teachers = {
                t: pad_sequence(d[rows].split(split), batch_first=True) for t, d in per_tau.items()
            }
            grads = loss_grads(model, logits, teachers, y, mask)
            error[c] += torch.tensor(
                [float((g - r).square().sum()) for g, r in zip(grads, reference, strict=True)],
                dtype=torch.float64,
            )
    if offset != len(exact):
        raise SystemExit(f"{path}: its frames ({offset}) are not the teacher's ({len(exact)})")
    return (error / norm).sqrt().view(len(decoded), len(TAUS), 2)


# --- retired codecs, measured here only ---------------------------------------------------


def topk(x: torch.Tensor, k: int, per_tau: bool) -> dict[float, torch.Tensor]:
    """k largest logits (float16) and ids; the rest filled at one value that keeps their
    softmax mass at tau 1 (``per_tau``: at each tau, its own fill)."""
    values, ids = x.topk(k, dim=-1)
    values = (values - values[..., :1]).half().float() + values[..., :1]
    rest = x.scatter(-1, ids, float("-inf"))
    out = {}
    for tau in TAUS:
        t = tau if per_tau else 1.0
        mass = torch.logsumexp(rest / t, dim=-1, keepdim=True) - math.log(x.shape[-1] - k)
        out[tau] = (t * mass).expand_as(x).scatter(-1, ids, values)
    return out


def topk_over_pq(x: torch.Tensor, sample: torch.Tensor, k: int, nbytes: int):
    """An exact top-k (float16 values, int16 ids) over a pq-coded tail shape."""
    codec = CODECS["pq"](PQConfig(bytes=nbytes))
    codec.fit(sample, seed=0)
    coarse = codec.decode(codec.encode(x))
    centred = x - x.mean(-1, keepdim=True)
    values, ids = centred.topk(k, dim=-1)
    decoded = coarse.scatter(-1, ids, values.half().float())
    return dict.fromkeys(TAUS, decoded), codec.bytes_per_frame(x.shape[-1]) + 4 * k


def rate_distortion(sample: torch.Tensor, rms: float) -> float:
    """Bytes per frame a Gaussian source of the sample's spectrum needs for an error of ``rms``
    per class (reverse water-filling): what a transform codec, which uses only the logits'
    covariance, needs; a codec that exploits structure beyond it could need fewer."""
    x = sample.double() - sample.double().mean(-1, keepdim=True)
    x = x - x.mean(0)
    variances = torch.linalg.eigvalsh(x.T @ x / len(x)).clamp(min=1e-30).numpy()
    return float(np.maximum(0, 0.5 * np.log2(variances / rms**2)).sum() / 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="hf:assets/demo-teacher")
    parser.add_argument("--manifest", default=str(ROOT / "data" / "manifest.jsonl"))
    parser.add_argument("--fit", type=int, default=160, help="train utterances to fit on")
    parser.add_argument("--test", type=int, default=80, help="test utterances to measure on")
    parser.add_argument("--pq", default="16,32,48,62,96,128", help="pq byte budgets")
    parser.add_argument("--topk", default="8,16,64", help="k of the retired top-k codecs")
    parser.add_argument("--student", type=Path, help="a trained student's model.pt (same C)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    sample, x, wavs = teacher_logits(args.teacher, Path(args.manifest), args.fit, args.test)
    classes = x.shape[-1]
    rows = []  # (name, bytes/frame, decoded logits per tau)
    full = CODECS["full"](FullConfig("float16"))
    rows.append(("full float16", full.bytes_per_frame(classes), full.decode(full.encode(x))))
    projection = CODECS["projection"](ProjectionConfig())
    projection.fit(sample, seed=0)
    rank = projection.layout["rank"]
    decoded = projection.decode(projection.encode(x))
    rows.append((f"projection (rank {rank})", projection.bytes_per_frame(classes), decoded))
    for nbytes in (int(b) for b in args.pq.split(",")):
        pq = CODECS["pq"](PQConfig(bytes=nbytes))
        pq.fit(sample, seed=0)
        rows.append((f"pq {nbytes}", pq.bytes_per_frame(classes), pq.decode(pq.encode(x))))
    for k in (int(k) for k in args.topk.split(",")):
        rows.append((f"topk {k} (retired)", 4 * k + 4, topk(x, k, per_tau=False)))
        rows.append((f"topk {k} + rest per tau (retired)", 4 * k + 4 * len(TAUS),
                     topk(x, k, per_tau=True)))  # fmt: skip
    decoded, nbytes = topk_over_pq(x, sample, 4, 46)
    rows.append(("topk 4 over pq 46 (retired)", nbytes, decoded))
    rows = [(n, b, d if isinstance(d, dict) else dict.fromkeys(TAUS, d)) for n, b, d in rows]
    by_tau = student_errors(args.student, wavs, x, [d for *_, d in rows]) if args.student else None
    weights = by_tau.flatten(1).amax(-1).tolist() if args.student else []

    peaks = ", ".join(f"{float(torch.softmax(x / t, -1).max(-1).values.mean()):.3f}" for t in TAUS)
    print(f"{args.teacher}: C = {classes}; fitted on {len(sample)} frames, measured on {len(x)}; "
          f"mean top probability at tau 1, 2, 4: {peaks}")  # fmt: skip
    if args.student:
        print(f"student weight gradients: {args.student}")
    extra = " student weight gradient error |" if weights else ""
    print(f"| codec | bytes/frame | loss value error | gradient error | top-1 | top-1, restored |"
          f"{extra}")  # fmt: skip
    print("|---|---|---|---|---|---|" + ("---|" if weights else ""))
    for i, (name, nbytes, decoded) in enumerate(rows):
        value, grad = errors(x, decoded)
        raw = float((decoded[1.0].argmax(-1) == x.argmax(-1)).float().mean())
        restored = repair_argmax(decoded[1.0], x.argmax(-1)).argmax(-1) == x.argmax(-1)
        cell = f" {weights[i]:.2%} |" if weights else ""
        print(f"| {name} | {nbytes + TARGET_BYTES} | {value:.3%} | {grad:.2%} | {raw:.2%} | "
              f"{float(restored.float().mean()):.2%} |{cell}", flush=True)  # fmt: skip
    for i, (name, *_) in enumerate(rows):
        if weights and name.startswith("pq"):
            cells = ", ".join(f"tau {t:g}: {kd:.2%} / {dkd:.2%}" for t, (kd, dkd) in
                              zip(TAUS, by_tau[i].tolist(), strict=True))  # fmt: skip
            print(f"{name}, student weight gradient error by tau (KD / DKD): {cells}")
    bounds = ", ".join(f"{rms}: {rate_distortion(sample, rms):.0f} B" for rms in (0.01, 0.03, 0.1))
    print(f"rate-distortion bound (Gaussian, this spectrum), bytes/frame for an rms logit error "
          f"of {bounds}; a gradient error of g needs an rms error of about g")  # fmt: skip


if __name__ == "__main__":
    main()
