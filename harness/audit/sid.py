"""SID audit: coverage, collisions, length distribution and per-level code usage of an item → SID index."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from harness.audit.gx_run import ensure_context, validate
from harness.audit.locations import Locations, canonical, first
from harness.data.schema import Dataset
from harness.sid.quality import sid_quality
from harness.sid.tokens import parse_token, sid_string


def item_frame(ds: Dataset, index: dict[int, list[str]], levels: int) -> pd.DataFrame:
    rows = []
    for it in ds.items:
        toks = index.get(it.id)
        row = {"item_id": it.id, "sid": sid_string(toks) if toks else None, "sid_length": len(toks) if toks else 0}
        for level in range(levels):
            row[f"code_{level}"] = parse_token(toks[level])[1] if toks and len(toks) > level else None
        rows.append(row)
    return pd.DataFrame(rows)


def audit_sid(ds: Dataset, index: dict[int, list[str]], codebook_sizes: list[int] | None = None,
              locations: Locations | None = None) -> tuple[dict, list]:
    """Return sid.json and the raw validation records; an item-level record's ``locations`` are the first
    offending items' ``"path:line"`` in the item file (``locations``: default the canonical files)."""
    from checks.sid_suite import sid_suite

    ensure_context()

    levels = max((len(t) for t in index.values()), default=0)
    df = item_frame(ds, index, levels)
    lengths = Counter(len(t) for t in index.values())
    modal = lengths.most_common(1)[0][0] if lengths else 0
    used = [Counter(df[f"code_{lv}"].dropna().astype(int)) for lv in range(levels)]
    inferred = [1 << (max(u)).bit_length() if u else 0 for u in used]  # next power of two above the top code
    sizes = list(codebook_sizes) if codebook_sizes else inferred
    sizes = (sizes + inferred[len(sizes):])[:levels]
    results = validate(df, sid_suite(levels, sizes, modal))
    where = (locations or canonical(ds, None)).items
    for r in results:  # frame row i is ds.items[i]
        r["locations"] = first([where[ds.items[i].id] for i in r.pop("unexpected_index")])
    by = {r["finding"]: r for r in results}

    quality = sid_quality(index, ds.items)  # the figures the sid stage reports too, computed once
    groups = Counter(df["sid"].dropna())
    colliding = {s: c for s, c in groups.items() if c > 1}
    sid_of = {i: sid_string(t) for i, t in index.items()}
    test_rows = ds.split("test")
    shared_targets = sum(1 for r in test_rows if groups.get(sid_of.get(r.target), 0) > 1)
    titles = Counter(it.title for it in ds.items)
    out = {
        "items": len(ds.items),
        "items_without_sid": by["items_without_sid"]["unexpected_count"],
        "unique_sids": quality["unique_sids"],
        "collision_groups": quality["collision_groups"],
        "colliding_items": by["colliding_items"]["unexpected_count"],
        "excess_items": sum(c - 1 for c in colliding.values()),
        "largest_group": quality["largest_group"],
        "collision_group_sizes": dict(sorted(Counter(colliding.values()).items())),
        "sid_length_distribution": quality["sid_length_distribution"],
        "items_with_other_sid_length": by["items_with_other_sid_length"]["unexpected_count"],
        "levels": levels,
        "codebook_size_per_level": sizes,
        "codebook_size_source": "given" if codebook_sizes else "inferred (next power of two above the largest code)",
        "codes_used_per_level": [by[f"codes_used_level_{lv}"]["observed_value"] for lv in range(levels)],
        "perplexity_per_level": quality["perplexity_per_level"],
        "test_rows": len(test_rows),
        "test_targets_with_colliding_sid": shared_targets,
        "duplicate_title_groups": sum(1 for c in titles.values() if c > 1),
        "duplicate_title_items": sum(c for c in titles.values() if c > 1),
    }
    return out, results
