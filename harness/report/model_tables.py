"""The report's core tables: one row per model and baseline (HR@K with legality, NDCG@K, collision-aware
HR), the SID builders side by side, and which code produced each artifact. Columns come from the metric
registry (harness/metrics.py); rows from the baseline registry (harness/evaluate/baselines.py)."""

from __future__ import annotations

from harness import metrics as registry
from harness.evaluate.baselines import BASELINES

MODEL_ROWS = (("sft", "SFT (constrained beams)"), ("rl", "SFT + RL (GRPO)"))


def model_blocks(metrics: dict) -> list[tuple[str, dict]]:
    """(label, metrics) per model and baseline; the RL row only when the pipeline ran RL. A model scored by
    upstream's evaluate.py says so and names the commit; with evaluate.backend both, upstream's scores of the
    same model follow as their own rows (cross-scoring)."""
    out = []
    by = metrics.get("evaluated_by", {})
    cross = metrics.get("upstream_evaluate", {})
    rows = [(name, label, metrics.get(name)) for name, label in MODEL_ROWS]
    rows += [(b.name, b.label, metrics["baselines"].get(b.name)) for b in BASELINES.values()]
    for key, label, block in rows:
        if block is None:
            continue
        who = by.get(key, {})
        if who.get("evaluator") == "upstream":
            label += f", upstream evaluate.py @ {str(who.get('upstream_commit'))[:12]}"
        elif who.get("prompts") == "upstream":
            label += ", native decoder on upstream's prompts"
        out.append((label, block))
        if key in cross:
            out.append((label.split(",")[0] + f", upstream evaluate.py @ {str(cross[key]['upstream_commit'])[:12]}",
                        cross[key]["metrics"]))
    return out


def metric_tables(metrics: dict) -> dict[str, tuple[list[str], list[list]]]:
    """Two tables (HR@K with legality, NDCG@K), one row per model or baseline, formatted to 4 places."""
    return block_tables(model_blocks(metrics))


def block_tables(blocks: list[tuple[str, dict]]) -> dict[str, tuple[list[str], list[list]]]:
    """The registry's metric tables (Hit rate, NDCG) for any (label, metrics) rows; cut-offs are the first
    row's."""
    ks = registry.cutoffs(blocks[0][1])
    out = {}
    for table in registry.tables():
        columns = registry.table_columns(table, ks)
        out[table] = (["model"] + [header for header, _, _ in columns],
                      [[label] + [registry.cell(m, name, k) for _, name, k in columns] for label, m in blocks])
    return out


def collision_table(metrics: dict) -> tuple[list[str], list[list]]:
    """SID-level vs collision-aware hit rates: what sharing a SID adds to each model's score."""
    ks = [k for k in (1, 5, 10, 50) if k in registry.cutoffs(metrics["sft"])]
    rows = [[label] + [f"{registry.cell(m, 'hr', k)} / {registry.cell(m, 'collision_aware_hr', k)}" for k in ks]
            for label, m in model_blocks(metrics)]
    return ["model"] + [f"HR@{k} SID-level / collision-aware" for k in ks], rows


SID_COLUMNS = [("unique_share", "unique share"), ("collision_groups", "collision groups"),
               ("colliding_items", "colliding items"), ("largest_group", "largest group"),
               ("codes_used_per_level", "codes used / level"), ("perplexity_per_level", "perplexity / level"),
               ("nmi_level0_category", "NMI level-1 vs category")]


def _cell(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, list):
        return " / ".join(str(x) for x in v)
    return str(v)


def sid_table(sid_summary: dict) -> tuple[list[str], list[list[str]]]:
    """One row per SID builder (the pipeline's own marked), plus the source's shipped index when it has one."""
    rows = [[r["method"] + (" (used)" if r["selected"] else "")] + [_cell(r[k]) for k, _ in SID_COLUMNS]
            for r in sid_summary["comparison"]]
    return ["SID index"] + [label for _, label in SID_COLUMNS], rows


def backend_rows(data: dict, embedding: dict, sid: dict, training: dict, rl_training: dict,
                 metrics: dict) -> list[list[str]]:
    """Which code produced each artifact: this package (native) or the upstream scripts at a named commit."""
    def row(stage: str, commit: str | None, native_note: str = "") -> list[str]:
        return [stage, f"upstream @ {commit}" if commit else "native" + native_note]

    rows = [row("data", (data.get("upstream") or {}).get("upstream_commit")),
            row("embed", (embedding.get("upstream") or {}).get("upstream_commit")),
            row("sid", sid.get("upstream_commit")),
            row("sft", training.get("upstream_commit"))]
    if rl_training.get("enabled"):
        rows.append(row("rl", rl_training.get("upstream_commit")))
    for model, who in metrics.get("evaluated_by", {}).items():
        note = ", on upstream's prompts" if who.get("prompts") == "upstream" else ""
        rows.append(row(f"evaluate@{model}", who.get("upstream_commit"), note))
    for model, cross in metrics.get("upstream_evaluate", {}).items():
        rows.append(row(f"evaluate@{model} (cross-score)", cross.get("upstream_commit")))
    return rows
