"""Non-learned reference rankers, scored on the same test rows as the model."""

from __future__ import annotations

from collections import Counter

from harness.data.schema import Interaction
from harness.sid.tokens import sid_string


def most_popular(train: list[Interaction], index: dict[int, list[str]], n: int) -> list[str]:
    """The training targets' SIDs by frequency (ties: lower item id first), distinct, top ``n``."""
    counts = Counter(r.target for r in train if r.target in index)
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    out: list[str] = []
    for i in ranked:
        s = sid_string(index[i])
        if s not in out:
            out.append(s)
        if len(out) == n:
            break
    return out


def repeat_last(row: Interaction, index: dict[int, list[str]]) -> list[str]:
    """Predict the last history item again (one candidate)."""
    last = row.history[-1]
    return [sid_string(index[last])] if last in index else []
