"""Reference rankers, scored on the same test rows as the model: most popular and repeat-last (not learned), an
item-to-item transition (first-order Markov) model, and SASRec, which the paper compares against (both learned
from the train split); docs/baselines.md describes each.

:data:`BASELINES` is the registry the metrics stage scores and the report lists. How to add one: write a
function ``(train rows, item -> SID index, test rows, number of beams, evaluate.baselines params) -> one
ranked SID list per test row`` (:func:`distinct_sids` turns an item ranking into one) and add a
:class:`Baseline` line; its scores appear in ``metrics.json["baselines"][name]`` and as a row of the report's
tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness.data.schema import Interaction
from harness.params import BaselineParams
from harness.sid.tokens import sid_string


def distinct_sids(items: Iterable[int], index: dict[int, list[str]], n: int) -> list[str]:
    """The SIDs of ranked ``items``, each once (its first, best-ranked item), items without a SID skipped,
    the first ``n``: the ranked SID list every ranker returns."""
    out: dict[str, None] = {}
    if n <= 0:
        return []
    for i in items:
        if i in index:
            out.setdefault(sid_string(index[i]), None)
            if len(out) == n:
                break
    return list(out)


def popularity_order(train: list[Interaction]) -> tuple[Counter, list[int]]:
    """The training targets' frequencies, and the targets by frequency (ties: lower item id first)."""
    counts = Counter(r.target for r in train)
    return counts, sorted(counts, key=lambda i: (-counts[i], i))


def most_popular(train: list[Interaction], index: dict[int, list[str]], n: int) -> list[str]:
    """The training targets' SIDs by frequency (ties: lower item id first), distinct, top ``n``."""
    return distinct_sids(popularity_order(train)[1], index, n)


def repeat_last(row: Interaction, index: dict[int, list[str]]) -> list[str]:
    """Predict the last history item again (one candidate)."""
    last = row.history[-1]
    return [sid_string(index[last])] if last in index else []


def _most_popular_rows(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction],
                       n: int, params: BaselineParams) -> list[list[str]]:
    popular = most_popular(train, index, n)
    return [popular] * len(rows)


def _repeat_last_rows(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction],
                      n: int, params: BaselineParams) -> list[list[str]]:
    return [repeat_last(r, index) for r in rows]


def transition(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction],
               n: int) -> list[list[str]]:
    """First-order Markov (item-to-item transition) ranking: every consecutive pair a -> b of the train rows'
    sequences (history + [target]) is counted; a test row's candidates are the items b by the count of
    (its last history item -> b), ties by popularity (train target frequency) then lower item id, back-filled
    with the most popular items; then the first ``n`` distinct SIDs."""
    pairs: dict[int, Counter] = {}
    for r in train:
        seq = (*r.history, r.target)
        for a, b in zip(seq, seq[1:]):
            pairs.setdefault(a, Counter())[b] += 1
    popularity, popular = popularity_order(train)
    cache: dict[int | None, list[str]] = {}
    out = []
    for r in rows:
        last = r.history[-1] if r.history else None
        if last not in cache:
            nxt = pairs.get(last, Counter())
            cands = sorted(nxt, key=lambda b: (-nxt[b], -popularity[b], b))
            cache[last] = distinct_sids([*cands, *popular], index, n)
        out.append(cache[last])
    return out


def _transition_rows(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction],
                     n: int, params: BaselineParams) -> list[list[str]]:
    return transition(train, index, rows, n)


def sasrec(train: list[Interaction], index: dict[int, list[str]], rows: list[Interaction], n: int,
           params: BaselineParams) -> list[list[str]]:
    """SASRec (harness/evaluate/sasrec.py) trained on ``train`` with ``params.sasrec``; for each test row every
    catalogue item scored from its history (history items are not excluded, as upstream's evaluation does not),
    then the first ``n`` distinct SIDs of the ranking."""
    from harness.evaluate.sasrec import rank  # torch: imported only when the baseline runs

    def keep(ranking) -> list[str]:
        width = 4 * n  # a prefix of the ranking is enough unless many items share SIDs or have none
        while True:
            sids = distinct_sids(ranking[:width].tolist(), index, n)
            if len(sids) == n or width >= len(ranking):
                return sids
            width *= 4

    n_items = 1 + max([*index, *(i for r in (*train, *rows) for i in (*r.history, r.target))], default=0)
    return rank(train, rows, n_items, params.sasrec, keep)


@dataclass(frozen=True)
class Baseline:
    name: str  # its key in metrics.json["baselines"]
    label: str  # its row in the report (and its series in the plots)
    rank: Callable[[list[Interaction], dict[int, list[str]], list[Interaction], int, BaselineParams], list[list[str]]]
    doc: str
    paper: str | None = None  # its row in paper_targets.yaml's main table (e.g. "SASRec"), shown beside it


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("most_popular", "Most popular", _most_popular_rows, "the training targets' SIDs by frequency"),
    Baseline("repeat_last", "Repeat last", _repeat_last_rows, "the last history item again"),
    Baseline("sasrec", "SASRec", sasrec,
             "a causal self-attention item model (Kang & McAuley 2018) trained on the train split", paper="SASRec"),
    Baseline("transition", "Item-to-item transition", _transition_rows,
             "the items most often following the last history item in the train sequences, then the most popular",
             paper=None),
)}
