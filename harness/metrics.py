"""Every key of a metrics block, defined once: what it means, how it is spelled, and how the report shows it.

A metrics block is what the scorer returns for one model on the test rows (``scores.json["metrics"]``, and
each model and baseline in ``reports/metrics.json``). Keys are either ``<name>@<K>`` (one per cut-off K,
e.g. ``hr@10``) or a plain ``<name>`` (e.g. ``legality_rate``). Code never splits a key by hand: it asks this
module (:func:`key`, :func:`parse`, :func:`cutoffs`), and the report's metric tables take their columns from
:data:`METRICS`.

How to add a metric: compute it in :class:`harness.evaluate.score.Scorer` (its ``result()`` writes the
block), add one :class:`Metric` line below (``table`` puts it in a report table), and say in
``docs/results-schema.md`` what it means. ``tests/test_metrics.py`` checks every key the scorer writes is
registered here.
"""

from __future__ import annotations

from dataclasses import dataclass

TOPK = (1, 3, 5, 10, 20, 50)  # upstream calc.py's cut-offs (those up to the number of beams are reported)
HEADLINE_K = 10  # the cut-off a one-line verdict quotes (the largest one scored when 10 is not)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # column header: "HR" becomes "HR@10" for a per-cut-off metric
    at_k: bool  # one value per cut-off K (key "name@K") or a single value (key "name")
    doc: str
    table: str | None = None  # the report table that shows it ("Hit rate", "NDCG"), or None
    fmt: str | None = ".4f"  # format of a report cell; None: the value as it is (counts)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("hr", "HR", True, "share of rows whose target SID is among the first K beams (upstream calc.py)",
           "Hit rate"),
    Metric("ndcg", "NDCG", True, "1/log2(rank+2) of the hit within K, averaged over rows (upstream calc.py)", "NDCG"),
    Metric("collision_aware_hr", "collision-aware HR", True,
           "HR where a hit on a SID shared by g catalogue items counts 1/g (the model cannot tell them apart)"),
    Metric("collision_aware_ndcg", "collision-aware NDCG", True, "NDCG with the same 1/g weighting"),
    Metric("legality_rate", "legality", False, "share of all generated beams that are catalogue SIDs", "Hit rate"),
    Metric("illegal_count", "illegal", False,
           "calc.py's CC: beams outside the catalogue up to and including the hit (all beams of a miss)",
           "Hit rate", None),
    Metric("duplicate_rows", "rows with repeated beams", False, "rows whose beams name one SID twice", None, None),
    Metric("mrr", "MRR", False, "exact ranking: mean of 1/rank of the target among all catalogue SIDs"),
    Metric("beam_recall", "beam recall", True,
           "exact ranking: share of the exact Top-K SIDs that the first K beams also return (1 = no search loss)"),
    Metric("coverage", "coverage", True, "share of catalogue SIDs recommended in the Top-K of at least one row",
           None),
    Metric("gini", "Gini", True, "Gini index of how often each catalogue SID is in a Top-K (0: even, 1: one SID)",
           None),
    Metric("entropy", "entropy", True, "Shannon entropy (bits) of the Top-K recommendation counts over SIDs",
           None),
    Metric("avg_popularity", "avg popularity", True,
           "mean train-target count of the SIDs recommended in the Top-K (compare target_popularity)",
           None, ".1f"),
    Metric("long_tail_share", "long-tail share", True,
           "share of Top-K recommendations outside the head (the most popular SIDs holding 20% of train targets)",
           None),
    Metric("novelty", "novelty", True,
           "mean self-information -log2 p(SID) of the Top-K recommendations, p from smoothed train-target counts",
           None, ".2f"),
    Metric("target_popularity", "target popularity", False, "mean train-target count of the test targets' SIDs",
           None, ".1f"),
    Metric("target_long_tail_share", "target long-tail share", False,
           "share of test targets whose SID is outside the head"),
    Metric("rows", "rows", False, "test rows scored", None, None),
    Metric("beams", "beams", False, "beams per row (the first row's count)", None, None),
)}


def key(name: str, k: int | None = None) -> str:
    """The key of metric ``name`` (at cut-off ``k`` for a per-cut-off metric)."""
    m = METRICS[name]
    if m.at_k != (k is not None):
        raise ValueError(f"metric {name!r} {'needs' if m.at_k else 'takes no'} a cut-off")
    return f"{name}@{k}" if m.at_k else name


def parse(metric_key: str) -> tuple[Metric, int | None]:
    """``"ndcg@10"`` -> (the NDCG metric, 10); an unregistered key is a ValueError naming it."""
    name, at, k = metric_key.partition("@")
    m = METRICS.get(name)
    if m is None or m.at_k != bool(at) or (at and not k.isdigit()):
        raise ValueError(f"{metric_key!r} is not a registered metric key (harness/metrics.py)")
    return m, int(k) if at else None


def cutoffs(block: dict, name: str = "hr") -> list[int]:
    """The cut-offs K a metrics block holds for ``name``, ascending."""
    return sorted(k for mk in block if mk.partition("@")[0] == name and (k := parse(mk)[1]) is not None)


def headline_k(block: dict) -> int:
    ks = cutoffs(block)
    return HEADLINE_K if HEADLINE_K in ks else max(ks)


def cell(block: dict, name: str, k: int | None = None):
    """One report cell: the value formatted as the registry says (a count stays as it is)."""
    v = block[key(name, k)]
    fmt = METRICS[name].fmt
    return v if fmt is None else format(v, fmt)


def table_columns(table: str, ks: list[int]) -> list[tuple[str, str, int | None]]:
    """(header, metric name, K) of each column of a report table: the per-cut-off metrics at every K first,
    then the single-valued ones, each group in registry order."""
    ms = [m for m in METRICS.values() if m.table == table]
    return ([(f"{m.label}@{k}", m.name, k) for m in ms if m.at_k for k in ks]
            + [(m.label, m.name, None) for m in ms if not m.at_k])


def tables() -> list[str]:
    """The report's metric tables, in registry order."""
    return list(dict.fromkeys(m.table for m in METRICS.values() if m.table))
