"""Vector quantisation for the learned logit codec: bit allocation over principal components,
k-means codebooks and nearest-codeword search (torch, any device)."""

from __future__ import annotations

import math

import numpy as np
import torch


def byte_groups(variances: np.ndarray, nbytes: int) -> list[int]:
    """Sizes of consecutive groups of principal components, one byte each, ``nbytes`` of them:
    reverse water-filling gives component i ``max(0, log2(variance_i / theta) / 2)`` bits, and
    theta is the smallest for which grouping consecutive components into about 8 bits a group
    (at most one component a group when it alone earns 8) makes no more than ``nbytes`` groups.
    """
    variances = np.maximum(np.asarray(variances, dtype=np.float64), 0)

    def group(theta: float) -> list[int]:
        bits = 0.5 * np.log2(np.maximum(variances, 1e-300) / theta)
        sizes, size, total = [], 0, 0.0
        for b in bits:
            if b <= 0.05:
                break
            if b >= 8:
                sizes += [size, 1] if size else [1]
                size, total = 0, 0.0
                continue
            size, total = size + 1, total + b
            if total >= 7.5:
                sizes.append(size)
                size, total = 0, 0.0
        return sizes + ([size] if size else [])

    top = float(variances.max())
    if top <= 0:
        raise ValueError("pq codec: the sample's logits do not vary (a constant teacher?)")
    lo, hi, best = top * 1e-30, top, [1]
    for _ in range(200):
        theta = math.sqrt(lo * hi)
        sizes = group(theta)
        if len(sizes) > nbytes:
            lo = theta
        else:
            hi, best = theta, sizes
    return best


def kmeans(x: torch.Tensor, k: int, seed: int, iterations: int = 30) -> torch.Tensor:
    """``k`` centroids of the rows of ``x (N, d)`` (Lloyd's algorithm from a seeded sample; an
    empty cluster restarts at a random row). Fewer rows than ``k``: the rows, repeated."""
    x = x.float()
    g = torch.Generator(device="cpu").manual_seed(seed)
    if len(x) <= k:
        return x[torch.arange(k) % max(len(x), 1)].clone()
    centroids = x[torch.randperm(len(x), generator=g)[:k].to(x.device)].clone()
    for _ in range(iterations):
        assign = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        restart = x[torch.randint(len(x), (k,), generator=g).to(x.device)]
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], restart)
    return centroids


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centroid ``(k, d)`` to each row of ``x (..., d)``, in chunks."""
    flat = x.reshape(-1, x.shape[-1])
    out = flat.new_zeros(len(flat), dtype=torch.long)
    for i in range(0, len(flat), chunk):
        out[i : i + chunk] = torch.cdist(flat[i : i + chunk], centroids).argmin(-1)
    return out.reshape(x.shape[:-1])
