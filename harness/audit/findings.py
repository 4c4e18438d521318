"""Turn failed expectations into findings (figure, severity, locations, effect), render the readable summary,
and pick the findings that fail `harness audit --fail-on`."""

from __future__ import annotations

from tabulate import tabulate

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
# --fail-on: the least severe finding that makes `harness audit` exit 1 ("never": always exit 0)
FAIL_ON = ("error", "warning", "never")


def findings_from(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        if r["success"]:
            continue
        figure = r["unexpected_count"] if r["unexpected_count"] is not None else r["observed_value"]
        prefix = f"{r['split']}." if r.get("split") else ""
        f = {"id": f"{prefix}{r['finding']}", "severity": r["severity"], "figure": figure}
        if r.get("locations"):
            f["locations"] = list(r["locations"])
        out.append({**f, "effect": r["effect"]})
    return sorted(out, key=lambda f: (SEVERITY_ORDER.get(f["severity"], 9), f["id"]))


def failing(findings: list[dict], fail_on: str) -> list[dict]:
    """The findings at ``fail_on``'s severity or worse (none for "never"), in findings.json's order."""
    if fail_on not in FAIL_ON:
        raise ValueError(f"fail_on must be one of {FAIL_ON}, not {fail_on!r}")
    if fail_on == "never":
        return []
    limit = SEVERITY_ORDER[fail_on]
    return [f for f in findings if SEVERITY_ORDER.get(f["severity"], 0) <= limit]


def where(f: dict, compact: bool = False) -> str:
    """A finding's first locations ("" when it has none: a figure over the whole input); ``compact`` names each
    file once: ``a.csv:3, 44, 50``."""
    locs = f.get("locations") or []
    if not compact:
        return ", ".join(locs)
    parts, last = [], None
    for loc in locs:
        path, _, line = loc.rpartition(":")
        parts.append(line if path == last else loc)
        last = path
    return ", ".join(parts)


def finding_line(f: dict) -> str:
    """One line per finding for the terminal: severity, id, figure and where."""
    return f"{f['severity']}: {f['id']} = {f['figure']} at {where(f) or '(a figure over the whole input, no row)'}"


def summary_markdown(title: str, data: dict | None, sid: dict | None, generation: dict | None,
                     findings: list[dict]) -> str:
    parts = [f"# Audit: {title}", ""]
    if data is not None:
        keys = ["rows", "users", "items", "target_in_history_rows", "target_is_last_history_rows",
                "target_sid_in_history_rows", "repeated_item_in_history_rows", "duplicate_rows",
                "duplicate_of_earlier_split_rows", "cold_start_target_rows", "users_first_seen",
                "temporal_violation_rows"]
        splits = list(data["splits"])
        rows = [[k] + [data["splits"][s][k] for s in splits] for k in keys]
        rows.append(["history_target_conflicts (keys / rows)"] + [
            f"{data['splits'][s]['history_target_conflicts']['keys']} / {data['splits'][s]['history_target_conflicts']['rows']}"
            for s in splits])
        parts += ["## Data", "", tabulate(rows, headers=["check"] + splits, tablefmt="github"), ""]
        cross = data["cross_split"]
        parts += [f"Across splits: identical rows {cross['identical_rows_across_splits']}, temporal order "
                  f"{cross['temporal_order']}, train/valid conflicting history keys {cross['train_valid_conflict_keys']}.", ""]
        if data.get("consistency"):
            c = data["consistency"]
            parts += [f"File agreement: {c['sid_mismatches']} SID and {c['title_mismatches']} title mismatches "
                      "between the CSVs/info file and index.json/item.json.", ""]
    if sid is not None:
        rows = [[k, sid[k]] for k in ("items", "items_without_sid", "unique_sids", "collision_groups", "colliding_items",
                                      "largest_group", "sid_length_distribution", "codebook_size_per_level",
                                      "codes_used_per_level", "perplexity_per_level", "test_targets_with_colliding_sid",
                                      "duplicate_title_groups", "duplicate_title_items")]
        parts += ["## Semantic IDs", "", tabulate(rows, headers=["check", "value"], tablefmt="github"), ""]
    if generation is not None:
        inj = ", ".join(f"{k}={v}" for k, v in generation["injected"].items()) or "nothing"
        parts += ["## Generation config", "", f"`{generation['file']}` would inject: {inj}.", ""]
    parts += ["## Findings", ""]
    if findings:
        parts.append(tabulate([[f["severity"], f["id"], f["figure"], where(f, compact=True), f["effect"]] for f in findings],
                              headers=["severity", "finding", "figure", "first rows (file:line)", "effect on the metrics"],
                              tablefmt="github"))
    else:
        parts.append("No findings.")
    return "\n".join(parts) + "\n"
