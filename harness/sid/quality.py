"""Quality figures of an item -> SID index, comparable across builders (and with a shipped index).

What each figure tells a user:
- ``unique_share``: the share of items the recommender can name without ambiguity;
- ``collision_groups`` / ``colliding_items`` / ``largest_group``: how many items are merged, and how badly;
- ``codes_used_per_level`` and ``perplexity_per_level``: how much of each codebook is really used (a
  perplexity far below the codebook size means a few codes carry most items);
- ``nmi_level0_category``: how well the first-level code follows the catalogue's categories, when items
  carry them (normalised mutual information; 1 = the same partition, 0 = unrelated).
"""

from __future__ import annotations

import math
from collections import Counter

from harness.data.schema import Item
from harness.sid.tokens import sid_string


def perplexity(counts: Counter) -> float:
    """exp(entropy) of a code-usage histogram: the number of equally used codes with the same spread."""
    total = sum(counts.values())
    h = -sum(c / total * math.log(c / total) for c in counts.values() if c)
    return math.exp(h)


def sid_quality(index: dict[int, list[str]], items: list[Item]) -> dict:
    from sklearn.metrics import normalized_mutual_info_score

    sids = Counter(sid_string(t) for t in index.values())
    colliding = [c for c in sids.values() if c > 1]
    depth = max((len(t) for t in index.values()), default=0)
    per_level = [Counter(t[level] for t in index.values() if len(t) > level) for level in range(depth)]
    out = {
        "items": len(items),
        "items_without_sid": sum(1 for it in items if it.id not in index),
        "unique_sids": len(sids),
        "unique_share": round(sum(1 for c in sids.values() if c == 1) / max(len(items), 1), 4),
        "collision_groups": len(colliding),
        "colliding_items": sum(colliding),
        "largest_group": max(sids.values(), default=0),
        "sid_length_distribution": {str(k): v for k, v in sorted(Counter(map(len, index.values())).items())},
        "codes_used_per_level": [len(c) for c in per_level],
        "perplexity_per_level": [round(perplexity(c), 2) for c in per_level],
        "nmi_level0_category": None,
    }
    labelled = [(it.category, index[it.id][0]) for it in items if it.category and it.id in index]
    if len({c for c, _ in labelled}) > 1:
        cats, codes = zip(*labelled)
        out["nmi_level0_category"] = round(float(normalized_mutual_info_score(cats, codes)), 4)
    return out
