"""What stage one fits once for every part of a cache: the k-means centroids of a teacher whose
logits or targets come from k-means (without ``kmeans.path``), and a learned codec's constants.

Every part must be made with the same ones, whichever job (process, dask worker, SLURM array
task) makes it, so they are fitted once, on evenly spaced train utterances, and kept in the
cache folder beside the parts: ``fitted.safetensors`` (the tensors) and ``fitted.json`` (the
recipe they were fitted for and the tensors' sha256). A run resumed with the same settings
reuses them; a run with other settings fits again (its parts then differ anyway); a shard job
(``--shard i/n``) never fits: without them it stops, saying which command fits them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.config import to_dict
from pipeline.core.errors import OutputError
from pipeline.core.hashing import sha256_bytes
from pipeline.corpus.manifest import Utterance, read_utterance
from pipeline.teacher.kmeans import KMeansHead, fit_centroids
from pipeline.teacher.model import Teacher
from storage import put_atomic
from storage.codecs import Codec
from storage.header import FITTED
from storage.header import FITTED_RECIPE as RECIPE
from storage.integrity import check_bytes
from storage.location import read_bytes

log = logging.getLogger(__name__)


@dataclass
class Fitted:
    """The fitted state of a cache: the codec (with its constants, if learned) and the
    checksums of the files that hold it (empty when nothing needed fitting)."""

    codec: Codec
    checksums: dict[str, str]


def fit_command(out: str | Path) -> str:
    return f"pipeline cache-teacher --fit-only --out {out} (same --params and --manifest)"


def fitted_state(
    teacher: Teacher, cfg, utts: list[Utterance], manifest: Path, out: str | Path, may_fit: bool
) -> Fitted:
    """The cache's fitted state for ``cfg`` (a ``CacheTeacherConfig``): read from ``out`` when
    it was fitted for the same recipe, else fitted now (``may_fit``) and written there. The
    k-means centroids are attached to ``teacher``.

    Raises:
        OutputError: a shard job (``may_fit`` False) finds no state fitted for its settings.
    """
    codec = cfg.codec.build()
    kmeans = cfg.teacher.uses_kmeans and not cfg.teacher.kmeans.path
    if not kmeans and not codec.learned:
        return Fitted(codec, {})
    recipe = _recipe(teacher, cfg, codec, kmeans)
    state = _read(out, recipe)
    if state is None:
        if not may_fit:
            raise OutputError(
                f"{out}: shard jobs share one fitted state (k-means centroids, the codec's "
                f"constants) and none is there for these settings; fit it once first: "
                f"{fit_command(out)}"
            )
        tensors, layout = _fit(teacher, cfg, codec, kmeans, utts, manifest)
        state = tensors, layout, _write(out, recipe, tensors, layout)
    tensors, layout, checksums = state
    if kmeans:
        teacher.use_kmeans(tensors["kmeans/centroids"])
    if codec.learned:
        prefix = f"codec/{codec.name}/"
        codec.load(
            layout, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
    return Fitted(codec, checksums)


def _recipe(teacher: Teacher, cfg, codec: Codec, kmeans: bool) -> dict:
    """What the fitted state depends on: the teacher's weights and head (not where they are),
    its k-means and the codec settings, the sample."""
    return {
        "teacher": teacher.fingerprint(),  # k-means not attached yet: encoder and head only
        "kmeans": to_dict(cfg.teacher.kmeans) if kmeans else None,
        "codec": {"name": codec.name, **vars(codec.cfg)} if codec.learned else None,
        "fit_utterances": cfg.fit_utterances,
        "fit_seed": cfg.fit_seed,
    }


def _read(out: str | Path, recipe: dict):
    """``(tensors, codec layout, checksums)`` fitted at ``out`` for ``recipe``, or None."""
    from safetensors.torch import load

    try:
        meta_bytes = read_bytes(out, RECIPE)
    except FileNotFoundError:
        return None
    meta = json.loads(meta_bytes)
    if meta.get("recipe") != recipe:
        log.info("%s: fitted for other settings; fitting again", out)
        return None
    try:
        data = read_bytes(out, FITTED)
    except FileNotFoundError:
        data = None
    tensors = load(check_bytes(f"{out}/{FITTED}", data, meta["sha256"]))
    return tensors, meta["layout"], {FITTED: meta["sha256"], RECIPE: sha256_bytes(meta_bytes)}


def _write(out: str | Path, recipe: dict, tensors: dict, layout: dict) -> dict[str, str]:
    """Write the state, tensors first and recipe last (the state counts once its recipe is
    there); returns the two files' checksums, of the bytes written."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    put_atomic(out, FITTED, data)
    meta = {"recipe": recipe, "layout": layout, "sha256": sha256_bytes(data)}
    meta_bytes = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    put_atomic(out, RECIPE, meta_bytes)
    return {FITTED: meta["sha256"], RECIPE: sha256_bytes(meta_bytes)}


def _fit(teacher: Teacher, cfg, codec: Codec, kmeans: bool, utts, manifest) -> tuple[dict, dict]:
    """One teacher pass over the sample: k-means on the layer's features, then the codec on the
    logits (of the head, or of the fitted k-means)."""
    km = cfg.teacher.kmeans
    train = [u for u in utts if u.split == "train"] or utts
    wanted = max(km.fit_utterances if kmeans else 0, cfg.fit_utterances if codec.learned else 0)
    step = max(1, len(train) // wanted)
    sample = train[::step][:wanted]
    log.info("fitting %s on %d train utterances", "k-means and the codec" if kmeans and
             codec.learned else "k-means" if kmeans else "the codec", len(sample))  # fmt: skip
    feats, head_logits = [], []
    for utt in sample:
        wav = read_utterance(utt, manifest).to(teacher.device)
        with torch.inference_mode():
            final, layer, _ = teacher.encode([wav], km.layer if kmeans else None)
            if kmeans:
                feats.append(layer[0].float().cpu())
            if teacher.cfg.logits == "head":
                head_logits.append(teacher.head(final)[0].float().cpu())
    tensors: dict[str, torch.Tensor] = {}
    if kmeans:
        chosen = torch.cat(feats[: km.fit_utterances])
        centroids = fit_centroids(chosen.numpy(), km.num_clusters, km.seed)
        tensors["kmeans/centroids"] = torch.from_numpy(np.ascontiguousarray(centroids))
    if codec.learned:
        if teacher.cfg.logits == "head":
            logits = torch.cat(head_logits[: cfg.fit_utterances])
        else:
            head = KMeansHead(tensors["kmeans/centroids"], km.logits, km.temperature)
            logits = head(torch.cat(feats[: cfg.fit_utterances]))
        codec.fit(logits, cfg.fit_seed)
        tensors.update({f"codec/{codec.name}/{k}": v for k, v in codec.constants.items()})
    return tensors, codec.layout
