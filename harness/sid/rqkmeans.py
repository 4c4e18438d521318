"""Residual k-means with faiss: level l clusters what levels < l left unexplained."""

from __future__ import annotations

import faiss
import numpy as np


def residual_kmeans(x: np.ndarray, levels: int, k: int, iters: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return codes (N, levels) and the per-level centroids (k, d)."""
    residual = np.ascontiguousarray(x, dtype=np.float32).copy()
    codes = np.zeros((len(x), levels), dtype=np.int64)
    centroids = []
    for level in range(levels):
        km = faiss.Kmeans(residual.shape[1], k, niter=iters, seed=seed + level, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1 << 20)
        km.train(residual)
        _, assign = km.index.search(residual, 1)
        codes[:, level] = assign[:, 0]
        residual -= km.centroids[assign[:, 0]]
        centroids.append(km.centroids.copy())
    return codes, centroids


def build(emb: np.ndarray, p, checkpoint_dir=None, show_progress: bool = True) -> list[list[int]]:
    """The registry's builder (harness/sid/registry.py): ``sid.levels`` levels of ``sid.codebook_size`` codes."""
    return residual_kmeans(emb, p.levels, p.codebook_size, p.kmeans_iters, p.seed)[0].tolist()
