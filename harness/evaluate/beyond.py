"""Beyond accuracy: what a ranker recommends, not only whether it hits. A generative recommender trained on
Zipf-like data most often fails by recommending the head of the catalogue to everyone; HR/NDCG cannot show it.

Everything is at SID level, like the hit rates (a SID shared by several items is one recommendation), and
popularity is the number of train rows whose target carries the SID. The head is the smallest set of most
popular SIDs that holds ``HEAD_SHARE`` of the train targets (ties: catalogue order); the rest is the long tail.
Definitions of every key: harness/metrics.py and docs/results-schema.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from harness.metrics import key

HEAD_SHARE = 0.2  # the head holds this share of the train targets (a Pareto split)
POPULARITY_BINS = 10  # the popularity plot's groups of SIDs, least to most popular, equal numbers of SIDs


class Popularity:
    """Train-target counts per catalogue SID, the head / long-tail split and the popularity groups."""

    def __init__(self, train_target_sids: Sequence[str], catalogue: Sequence[str]):
        self.catalogue = list(catalogue)
        counts = Counter(s for s in train_target_sids)
        self.count = {s: counts.get(s, 0) for s in self.catalogue}
        self.total = sum(self.count.values())
        by_pop = sorted(self.catalogue, key=lambda s: -self.count[s])  # stable: catalogue order among ties
        head, held = set(), 0
        for s in by_pop:
            if held >= HEAD_SHARE * self.total:
                break
            head.add(s)
            held += self.count[s]
        self.head = head
        ascending = by_pop[::-1]
        n = len(ascending)
        self.group = {s: min(POPULARITY_BINS - 1, j * POPULARITY_BINS // n) for j, s in enumerate(ascending)}

    def self_information(self, s: str) -> float:
        """-log2 p(s), p from Laplace-smoothed train-target counts (never infinite)."""
        return -math.log2((self.count[s] + 1) / (self.total + len(self.catalogue)))

    def summary(self) -> dict:
        return {"train_targets": self.total, "catalogue_sids": len(self.catalogue), "head_share": HEAD_SHARE,
                "head_sids": len(self.head), "bins": POPULARITY_BINS}


def gini(counts: Sequence[int]) -> float:
    """Gini index of non-negative counts (0: all equal; (n-1)/n: everything on one)."""
    xs, n = sorted(counts), len(counts)
    total = sum(xs)
    if n == 0 or total == 0:
        return 0.0
    return sum((2 * i - n + 1) * x for i, x in enumerate(xs)) / (n * total)


def entropy_bits(counts: Sequence[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c) if total else 0.0


def beyond_accuracy(pop: Popularity, rankings: Sequence[Sequence[str]], targets: Sequence[str],
                    ks: Sequence[int]) -> dict:
    """The beyond-accuracy block of one ranker: each row's ranked SIDs (beams outside the catalogue are left
    out, as a user is never shown them), the rows' target SIDs, at every cut-off ``ks``."""
    out: dict = {}
    per_k: dict[int, Counter] = {}
    for k in ks:
        c = Counter(s for r in rankings for s in dict.fromkeys(r[:k]) if s in pop.count)
        per_k[k] = c
        slots = sum(c.values())
        counts = [c.get(s, 0) for s in pop.catalogue]
        out[key("coverage", k)] = sum(1 for x in counts if x) / len(pop.catalogue)
        out[key("gini", k)] = gini(counts)
        out[key("entropy", k)] = entropy_bits(counts)
        out[key("avg_popularity", k)] = sum(pop.count[s] * x for s, x in c.items()) / slots if slots else 0.0
        out[key("long_tail_share", k)] = sum(x for s, x in c.items() if s not in pop.head) / slots if slots else 0.0
        out[key("novelty", k)] = sum(pop.self_information(s) * x for s, x in c.items()) / slots if slots else 0.0
    known = [s for s in targets if s in pop.count]
    out[key("target_popularity")] = sum(pop.count[s] for s in known) / len(known) if known else 0.0
    out[key("target_long_tail_share")] = sum(s not in pop.head for s in known) / len(known) if known else 0.0
    return out


def popularity_curve(pop: Popularity, rankings: Sequence[Sequence[str]], k: int) -> list[float]:
    """Share of the Top-K recommendations falling in each popularity group (least popular group first): the
    series of the report's recommendation-frequency-against-popularity plot."""
    shares = [0] * POPULARITY_BINS
    for r in rankings:
        for s in dict.fromkeys(r[:k]):
            if s in pop.group:
                shares[pop.group[s]] += 1
    total = sum(shares)
    return [x / total if total else 0.0 for x in shares]
