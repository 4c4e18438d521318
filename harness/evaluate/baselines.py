"""Non-learned reference rankers, scored on the same test rows as the model.

:data:`BASELINES` is the registry the metrics stage scores and the report lists. How to add one: write a
function ``(train rows, item -> SID index, test rows, number of beams) -> one ranked SID list per test row``
and add a :class:`Baseline` line; its scores appear in ``metrics.json["baselines"][name]`` and as a row of
the report's tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

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


def _most_popular_rows(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction],
                       n: int) -> list[list[str]]:
    popular = most_popular(train, index, n)
    return [popular] * len(rows)


def _repeat_last_rows(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction],
                      n: int) -> list[list[str]]:
    return [repeat_last(r, index) for r in rows]


@dataclass(frozen=True)
class Baseline:
    name: str  # its key in metrics.json["baselines"]
    label: str  # its row in the report (and its series in the plots)
    rank: Callable[[list[Interaction], dict[int, list[str]], list[Interaction], int], list[list[str]]]
    doc: str


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("most_popular", "Most popular", _most_popular_rows, "the training targets' SIDs by frequency"),
    Baseline("repeat_last", "Repeat last", _repeat_last_rows, "the last history item again"),
)}
