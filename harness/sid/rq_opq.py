"""RQ-OPQ: residual k-means for the coarse levels, then optimised product quantisation (OPQ) of what is left.

The idea comes from OneSearch (asked for upstream in AkaliKong/MiniOneRec#2): residual k-means captures the
catalogue's hierarchy, but its last levels quantise a small, anisotropic residual in which many items fall
into the same cell. OPQ first learns an orthogonal rotation of that residual that spreads its variance evenly
over ``OPQ_SUBSPACES`` halves (faiss's ``OPQMatrix``), then quantises each half on its own, so the last tokens
are two independent codes of item-specific detail rather than one more nested cluster.

With ``sid.levels`` = L the SID has L tokens: L - 2 residual k-means levels (``sid.codebook_size`` codes each,
``sid.kmeans_iters`` iterations, seeded by ``sid.seed``), then 2 OPQ codes with ``sid.codebook_size`` codes per
half. The rotation is trained with ``sid.kmeans_iters`` iterations on 2^floor(log2 K)-code product quantisers
(faiss needs a power of two there); the final codes come from k-means with exactly K codes in each rotated half.
No dedup level is added: the figures show what the method itself leaves colliding.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from harness.errors import ParamsError
from harness.sid.rqkmeans import residual_kmeans

OPQ_SUBSPACES = 2  # the OPQ codes at the end of each SID


def opq_codes(residual: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """(N, 2) codes: the residual rotated by a trained OPQ matrix, each half clustered into ``k`` codes."""
    n, d = residual.shape
    d_out = d + d % OPQ_SUBSPACES  # OPQ splits its output into equal halves: pad an odd dimension by one
    opq = faiss.OPQMatrix(d, OPQ_SUBSPACES, d_out)
    opq.niter = iters
    pq = faiss.ProductQuantizer(d_out, OPQ_SUBSPACES, max(1, min(8, int(math.log2(k)))))
    pq.cp.seed = seed
    opq.pq = pq
    opq.train(np.ascontiguousarray(residual, dtype=np.float32))
    rotated = opq.apply(np.ascontiguousarray(residual, dtype=np.float32))
    half = d_out // OPQ_SUBSPACES
    codes = np.zeros((n, OPQ_SUBSPACES), dtype=np.int64)
    for s in range(OPQ_SUBSPACES):
        part = np.ascontiguousarray(rotated[:, s * half:(s + 1) * half])
        km = faiss.Kmeans(half, k, niter=iters, seed=seed + 100 + s, verbose=False, min_points_per_centroid=1,
                          max_points_per_centroid=1 << 20)
        km.train(part)
        codes[:, s] = km.index.search(part, 1)[1][:, 0]
    return codes


def build(emb: np.ndarray, p, checkpoint_dir=None, show_progress: bool = True) -> list[list[int]]:
    """The registry's builder: L - 2 residual k-means levels, then 2 OPQ codes of the residual."""
    if p.levels < OPQ_SUBSPACES + 1:
        raise ParamsError("params.yaml", "sid.levels", f"{p.levels}: rq-opq needs at least {OPQ_SUBSPACES + 1} "
                          f"levels (residual k-means first, then {OPQ_SUBSPACES} OPQ codes)")
    x = np.ascontiguousarray(emb, dtype=np.float32)
    coarse, centroids = residual_kmeans(x, p.levels - OPQ_SUBSPACES, p.codebook_size, p.kmeans_iters, p.seed)
    residual = x.copy()
    for level, c in enumerate(centroids):
        residual -= c[coarse[:, level]]
    fine = opq_codes(residual, p.codebook_size, p.kmeans_iters, p.seed)
    return np.concatenate([coarse, fine], axis=1).tolist()
