"""Constrained residual k-means with a dedup level (upstream's rqkmeans_constrained, re-implemented).

Each level runs size-constrained k-means (the k-means-constrained package: min-cost-flow assignment) on
the residual, with cluster sizes in [n//K - 1, n//K + 1] as upstream, so every level spreads items evenly
over its codebook. Items whose full code tuple still collides then get one extra level: their 0-based rank
within the collision group, by item id. SIDs are therefore unique, and variable in length (L for unique
items, L+1 for the members of a collision group; H10 in docs/hazards.md).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def constrained_residual_kmeans(x: np.ndarray, levels: int, k: int, iters: int, seed: int,
                                n_init: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return codes (N, levels) and the per-level centroids (k, d) (RQ-Kmeans+ starts its codebooks there)."""
    from k_means_constrained import KMeansConstrained

    n = len(x)
    residual = np.ascontiguousarray(x, dtype=np.float64).copy()
    codes = np.zeros((n, levels), dtype=np.int64)
    centroids = []
    for level in range(levels):
        km = KMeansConstrained(n_clusters=k, size_min=max(1, n // k - 1), size_max=n // k + 1, max_iter=iters,
                               n_init=n_init, random_state=seed + level, n_jobs=1)
        labels = km.fit_predict(residual)
        codes[:, level] = labels
        residual -= km.cluster_centers_[labels]
        centroids.append(km.cluster_centers_.copy())
    return codes, centroids


def collision_groups(codes) -> list[list[int]]:
    """Row indices sharing a full code tuple: groups of two or more, each in row order."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for item, row in enumerate(np.asarray(codes).tolist()):
        groups[tuple(row)].append(item)
    return [g for g in groups.values() if len(g) > 1]


def dedup_level(codes: np.ndarray) -> list[list[int]]:
    """Append a rank token to every member of a colliding code tuple (no item keeps a shared SID)."""
    out = [list(row) for row in np.asarray(codes).tolist()]
    for members in collision_groups(codes):
        for rank, item in enumerate(members):
            out[item].append(rank)
    return out


def build(emb: np.ndarray, p, checkpoint_dir=None, show_progress: bool = True) -> list[list[int]]:
    """The registry's builder: balanced residual k-means, then a dedup level for the items still sharing a SID."""
    return dedup_level(constrained_residual_kmeans(emb, p.levels, p.codebook_size, p.kmeans_iters, p.seed)[0])
