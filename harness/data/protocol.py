"""Upstream's sample protocol (docs/hazards.md §1.1 steps 5-6), shared by every source that has raw sequences.

Sliding windows: for each position i >= 1 of a user's time-ordered sequence, the target is item i and the
history the (at most ``max_history``) items before it. Split: all samples of all users are sorted by target
time (stable, so ties keep user order) and cut globally 8:1:1 with upstream's ``int(0.8 N)`` / ``int(0.9 N)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.data.schema import Interaction


def sliding_windows(user: str, items: Sequence[int], times: Sequence[int], max_history: int) -> list[Interaction]:
    return [
        Interaction(user=user, history=tuple(items[max(0, i - max_history) : i]), target=items[i],
                    split="", timestamp=int(times[i]))
        for i in range(1, len(items))
    ]


def temporal_split(samples: list[Interaction], fractions: Sequence[float]) -> list[Interaction]:
    """Assign train/valid/test by global target-time order; returns samples in that order."""
    ordered = sorted(samples, key=lambda r: r.timestamp)  # stable: ties keep generation (user) order
    n = len(ordered)
    cut1 = int(fractions[0] * n)
    cut2 = int((fractions[0] + fractions[1]) * n)
    out = []
    for i, r in enumerate(ordered):
        split = "train" if i < cut1 else "valid" if i < cut2 else "test"
        out.append(Interaction(r.user, r.history, r.target, split, r.timestamp))
    return out
