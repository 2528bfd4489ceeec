"""Cluster logits for teachers without a head: k-means centroids on one encoder layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import CheckpointError

LOGIT_KINDS = ("distance", "cosine")


class KMeansHead(nn.Module):
    """Logits and labels from k-means centroids ``(C, D)``.

    ``distance`` logits are ``-||x - c||^2 / temperature``; ``cosine`` logits are
    ``cos(x, c) / temperature``. Labels are always the nearest centroid (Euclidean), as k-means
    assigns them.
    """

    def __init__(self, centroids: torch.Tensor, kind: str, temperature: float) -> None:
        super().__init__()
        if kind not in LOGIT_KINDS:
            raise ValueError(f"k-means logits must be one of {LOGIT_KINDS}, not {kind!r}")
        self.register_buffer("centroids", centroids.float().contiguous())
        self.kind = kind
        self.temperature = temperature

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    def _sq_distance(self, x: torch.Tensor) -> torch.Tensor:
        c = self.centroids
        return (x * x).sum(-1, keepdim=True) - 2 * x @ c.T + (c * c).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` features -> ``(..., C)`` logits."""
        x = x.float()
        if self.kind == "cosine":
            return F.normalize(x, dim=-1) @ F.normalize(self.centroids, dim=-1).T / self.temperature
        return -self._sq_distance(x) / self.temperature

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> ``(...)`` index of the nearest centroid."""
        return self._sq_distance(x.float()).argmin(-1)


def fit_centroids(features: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """Fit k-means (scikit-learn's MiniBatchKMeans, as HuBERT's recipe) on ``(N, D)`` features."""
    from sklearn.cluster import MiniBatchKMeans

    if len(features) < num_clusters:
        raise ValueError(
            f"k-means with {num_clusters} clusters needs at least that many frames; "
            f"got {len(features)} (raise kmeans.fit_utterances)"
        )
    km = MiniBatchKMeans(
        n_clusters=num_clusters, random_state=seed, batch_size=10_000, n_init=3, max_iter=100
    )
    return km.fit(features).cluster_centers_.astype(np.float32)


def load_centroids(path: Path, trust: bool) -> np.ndarray:
    """Centroids from a ``.npy`` array (safe) or a scikit-learn/joblib k-means file such as the
    released ``hubert_base_ls960_L9_km500.bin`` (a pickle: needs ``trust``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: k-means model not found")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(np.float32)
    if not trust:
        raise CheckpointError(
            f"{path}: a joblib/scikit-learn k-means file is a pickle, and unpickling can run "
            "arbitrary code. Pass --trust-checkpoint if you trust its source, or convert it "
            "once to a .npy array of its cluster_centers_."
        )
    import joblib

    model = joblib.load(path)
    if not hasattr(model, "cluster_centers_"):
        raise CheckpointError(f"{path}: no cluster_centers_ in {type(model).__name__}")
    return np.asarray(model.cluster_centers_, dtype=np.float32)
