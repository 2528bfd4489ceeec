"""Cluster logits for teachers without a head: k-means centroids on one encoder layer."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import CheckpointError

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


# What a scikit-learn k-means saved with joblib (e.g. HuBERT's released
# hubert_base_ls960_L9_km500.bin) may hold; any other global in the file is refused.
KMEANS_GLOBALS = frozenset({
    "sklearn.cluster._kmeans.MiniBatchKMeans", "sklearn.cluster._kmeans.KMeans",
    "joblib.numpy_pickle.NumpyArrayWrapper", "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "copyreg._reconstructor",
    "builtins.object", "_codecs.encode",
})  # fmt: skip


def load_centroids(path: Path, trust: bool) -> np.ndarray:
    """Centroids ``(C, D)`` from a ``.npy`` array or a ``.safetensors`` file (tensor
    ``centroids``), both safe; or from a scikit-learn k-means saved with joblib (a pickle: only
    with ``trust``, and even then through an unpickler that admits scikit-learn's k-means
    classes and numpy arrays and refuses anything else by name).

    Raises:
        CheckpointError: missing, damaged or refused file, named.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: k-means model not found")
    try:
        if path.suffix == ".npy":
            centroids = np.load(path, allow_pickle=False)
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            centroids = load_file(path)["centroids"]
        else:
            centroids = _joblib_centroids(path, trust)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: cannot read the k-means model ({err})") from err
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or not np.isfinite(centroids).all():
        raise CheckpointError(f"{path}: centroids must be a finite (clusters, dim) array")
    return centroids


def _joblib_centroids(path: Path, trust: bool) -> np.ndarray:
    if not trust:
        raise CheckpointError(
            f"{path}: a joblib/scikit-learn k-means file is a pickle, and unpickling can run "
            "arbitrary code. Convert it once to a .npy array of its cluster_centers_, or pass "
            "--trust-checkpoint if you trust its source (it is then read with an unpickler that "
            "admits only scikit-learn k-means and numpy arrays)."
        )
    from joblib import numpy_pickle

    class KMeansUnpickler(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str):
            if f"{module}.{name}" not in KMEANS_GLOBALS:
                raise CheckpointError(f"{path}: refusing to unpickle {module}.{name}")
            return super().find_class(module, name)

    with (
        open(path, "rb") as f,
        numpy_pickle._validate_fileobject_and_memmap(f, str(path), None) as (
            stream,
            _,
        ),
    ):  # joblib's own handling of compressed files
        model = KMeansUnpickler(str(path), stream, ensure_native_byte_order=True).load()
    if not hasattr(model, "cluster_centers_"):
        raise CheckpointError(f"{path}: no cluster_centers_ in {type(model).__name__}")
    return np.asarray(model.cluster_centers_)
