"""Ranking metrics with a single relevant item per row, as upstream's calc.py defines them.

rank r = 0-based position of the first prediction equal to the target (None = not in the list);
HR@K = mean [r < K]; NDCG@K = mean [r < K] / log2(r + 2) (IDCG = 1 for one relevant item).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

KS = (1, 3, 5, 10, 20, 50)


def first_hit_rank(predictions: Sequence[str], target: str) -> int | None:
    for r, p in enumerate(predictions):
        if p == target:
            return r
    return None


def hr_ndcg(ranks: Sequence[int | None], ks: Sequence[int] = KS) -> dict[str, float]:
    if not ranks:
        raise ValueError("no rows to score")
    n = len(ranks)
    out: dict[str, float] = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r < k]
        out[f"hr@{k}"] = len(hits) / n
        out[f"ndcg@{k}"] = sum(1.0 / math.log2(r + 2) for r in hits) / n
    return out


def legality(predictions: Sequence[Sequence[str]], catalogue: set[str]) -> tuple[float, int]:
    """Share of all predicted strings that are catalogue SIDs, and the illegal count.

    Unlike upstream's CC, every beam counts, not only those before the first hit.
    """
    total = sum(len(p) for p in predictions)
    illegal = sum(1 for row in predictions for s in row if s not in catalogue)
    return (1.0 - illegal / total) if total else 1.0, illegal


def score(predictions: Sequence[Sequence[str]], targets: Sequence[str], catalogue: set[str],
          ks: Sequence[int] = KS) -> dict[str, float | int]:
    ranks = [first_hit_rank(p, t) for p, t in zip(predictions, targets, strict=True)]
    rate, illegal = legality(predictions, catalogue)
    return {**hr_ndcg(ranks, ks), "legality_rate": rate, "illegal_count": illegal}
