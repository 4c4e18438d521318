"""Data audit: per-split leakage, duplicates, repeats, cold start and history → target conflicts."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from harness.audit.gx_run import ensure_context, validate
from harness.audit.locations import Locations, canonical, first
from harness.data.schema import SPLITS, Dataset
from harness.sid.tokens import sid_string


def _conflicts(keys: list[tuple], targets: list[str]) -> dict[tuple, set[str]]:
    seen: dict[tuple, set[str]] = defaultdict(set)
    for k, t in zip(keys, targets):
        seen[k].add(t)
    return seen


def audit_data(ds: Dataset, index: dict[int, list[str]], locations: Locations | None = None) -> tuple[dict, list]:
    """Return data.json and the raw validation records (one suite per present split); each record's
    ``locations`` are the first offending rows' ``"path:line"`` (``locations``: default the canonical files)."""
    from checks.data_suite import split_suite

    ensure_context()

    where = (locations or canonical(ds, None)).rows
    sid = {i: sid_string(t) for i, t in index.items()}
    present = [s for s in SPLITS if ds.split(s)]
    has_ts = all(r.timestamp is not None for r in ds.interactions)
    splits: dict[str, dict] = {}
    records: list = []
    seen_items: set[int] = set()
    seen_users: set[str] = set()
    seen_rows: set[tuple] = set()
    latest_ts = None
    key_targets: dict[str, dict[tuple, set[str]]] = {}
    for n, split in enumerate(present):
        rows = ds.split(split)
        reference = present[:n]
        keys = [tuple(sid.get(i, f"?{i}") for i in r.history) for r in rows]
        targets = [sid.get(r.target, f"?{r.target}") for r in rows]
        conflicts = _conflicts(keys, targets)
        key_targets[split] = conflicts
        bad_keys = {k for k, ts in conflicts.items() if len(ts) > 1}
        ident = [(r.user, r.history, r.target) for r in rows]
        df = pd.DataFrame({
            "target_in_history": [r.target in r.history for r in rows],
            "target_is_last": [r.history[-1] == r.target for r in rows],
            "target_sid_in_history": [t in k for t, k in zip(targets, keys)],
            "repeated_item_in_history": [len(set(r.history)) < len(r.history) for r in rows],
            "duplicate_extra": pd.Series([repr(x) for x in ident]).duplicated().tolist(),
            "duplicate_of_earlier_split": [x in seen_rows for x in ident],
            "cold_start_target": [bool(reference) and r.target not in seen_items for r in rows],
            "conflict_key": [k in bad_keys for k in keys],
            "earlier_than_previous_split": [has_ts and latest_ts is not None and r.timestamp < latest_ts for r in rows],
        })
        results = validate(df, split_suite(split))
        for r in results:
            r["locations"] = first([where[split][i] for i in r.pop("unexpected_index")])
        records += results
        by = {r["finding"]: r["unexpected_count"] for r in results}
        users = {r.user for r in rows}
        cold_items = {r.target for r in rows if reference and r.target not in seen_items}
        splits[split] = {
            "rows": len(rows),
            "users": len(users),
            "items": len({i for r in rows for i in (*r.history, r.target)}),
            "target_items": len({r.target for r in rows}),
            "reference_splits": reference,
            "target_in_history_rows": by["target_in_history_rows"],
            "target_is_last_history_rows": by["target_is_last_history_rows"],
            "target_sid_in_history_rows": by["target_sid_in_history_rows"],
            "repeated_item_in_history_rows": by["repeated_item_in_history_rows"],
            "duplicate_rows": by["duplicate_rows"],
            "duplicate_of_earlier_split_rows": by["duplicate_of_earlier_split_rows"],
            "cold_start_target_rows": by["cold_start_target_rows"],
            "cold_start_target_items": len(cold_items),
            "users_first_seen": len(users - seen_users) if reference else 0,
            "history_target_conflicts": {"keys": len(bad_keys), "rows": by["history_target_conflict_rows"]},
            "temporal_violation_rows": by["temporal_violation_rows"] if has_ts else None,
        }
        seen_items |= {i for r in rows for i in (*r.history, r.target)}
        seen_users |= users
        seen_rows |= set(ident)
        if has_ts:
            latest_ts = max([latest_ts or 0, *(r.timestamp for r in rows)])
    cross = {
        "identical_rows_across_splits": sum(s["duplicate_of_earlier_split_rows"] for s in splits.values()),
        "temporal_order": None if not has_ts else all(not s["temporal_violation_rows"] for s in splits.values()),
        "train_valid_conflict_keys": _crossing_conflicts(key_targets, "train", "valid"),
    }
    return {"splits": splits, "cross_split": cross, "has_timestamps": has_ts}, records


def _crossing_conflicts(key_targets: dict, a: str, b: str) -> int | None:
    """History keys present in both splits whose targets, pooled, disagree (H14: valid overwrites train)."""
    if a not in key_targets or b not in key_targets:
        return None
    ka, kb = key_targets[a], key_targets[b]
    return sum(1 for k in ka.keys() & kb.keys() if len(ka[k] | kb[k]) > 1)
