"""Report stage: render reports/report.md and reports/report.html from the pipeline's artifacts.

HTML is autoescaped; Markdown cells pass through :func:`md_escape`, so text that comes from data
(titles, category names) can never inject markup into either report.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from tabulate import tabulate

from harness.errors import HarnessError
from harness.io import write_text
from harness.params import ReportParams
from harness.provenance import cpu_model, packages

TEMPLATES = Path(__file__).resolve().parents[2] / "report_templates"
MODEL_ROWS = (("sft", "SFT (constrained beams)"), ("rl", "SFT + RL (GRPO)"), ("most_popular", "Most popular"),
              ("repeat_last", "Repeat last"))


def model_blocks(metrics: dict) -> list[tuple[str, dict]]:
    """(label, metrics) per model and baseline; the RL row only when the pipeline ran RL. A model scored by
    upstream's evaluate.py says so and names the commit; with evaluate.backend both, upstream's scores of the
    same model follow as their own rows (cross-scoring)."""
    out = []
    by = metrics.get("evaluated_by", {})
    cross = metrics.get("upstream_evaluate", {})
    for key, label in MODEL_ROWS:
        block = metrics.get(key) if key in ("sft", "rl") else metrics["baselines"][key]
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


def md_escape(text: object) -> str:
    """Escape Markdown/HTML control characters in a table cell or inline text."""
    s = str(text)
    for ch in "\\`*_{}[]()#+!|<>":
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def md_table(table: tuple[list[str], list[list]]) -> str:
    """A (header, rows) table as GitHub Markdown, every cell escaped (cells can hold text from data)."""
    header, rows = table
    return tabulate([[md_escape(c) for c in r] for r in rows], headers=[md_escape(h) for h in header],
                    tablefmt="github", disable_numparse=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{path}: missing (run the earlier stages: dvc repro)") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}:{e.lineno}: broken JSON: {e.msg}") from None


def metric_tables(metrics: dict) -> dict[str, tuple[list[str], list[list]]]:
    """Two tables (HR@K with legality, NDCG@K), one row per model or baseline, formatted to 4 places."""
    return block_tables(model_blocks(metrics))


def block_tables(blocks: list[tuple[str, dict]]) -> dict[str, tuple[list[str], list[list]]]:
    """The same two tables for any (label, metrics) rows; cut-offs are the first row's."""
    ks = sorted({int(k.split("@")[1]) for k in blocks[0][1] if k.startswith("hr@")})
    hr = (["model"] + [f"HR@{k}" for k in ks] + ["legality", "illegal"],
          [[label] + [f"{m[f'hr@{k}']:.4f}" for k in ks] + [f"{m['legality_rate']:.4f}", m["illegal_count"]]
           for label, m in blocks])
    ndcg = (["model"] + [f"NDCG@{k}" for k in ks],
            [[label] + [f"{m[f'ndcg@{k}']:.4f}" for k in ks] for label, m in blocks])
    return {"Hit rate": hr, "NDCG": ndcg}


def verdict(metrics: dict, extra: dict | None = None) -> str:
    sft, pop = metrics["sft"], metrics["baselines"]["most_popular"]
    k = 10 if "hr@10" in sft else max(int(x.split("@")[1]) for x in sft if x.startswith("hr@"))
    a, b = sft[f"hr@{k}"], pop[f"hr@{k}"]
    rel = f"{a / b:.2f}× " if b > 0 else ""
    outcome = "beats" if a > b else "does not beat"
    legal = sft["legality_rate"]
    return (f"The SFT model {outcome} the most-popular baseline on HR@{k} ({a:.4f} vs {b:.4f}, {rel}the baseline) "
            f"on {metrics['protocol']['rows']} test rows with {metrics['protocol']['num_beams']} constrained beams; "
            f"{legal:.2%} of its generated SIDs are catalogue SIDs ({sft['illegal_count']} illegal). "
            + rl_sentence(metrics, k) + _significance_sentence((extra or {}).get("significance"))
            + _paper_sentence((extra or {}).get("paper"))
            + "Hits are counted at SID level, so items sharing a SID count as hits for each other.")


def _significance_sentence(sig: dict | None) -> str:
    if not sig:
        return ""
    verdict_word = "not significant" if sig["sign_test_p"] >= 0.05 else "significant"
    return (f"On the same rows the SFT+RL vs SFT difference at {sig['k']} is {verdict_word} (sign test p = "
            f"{sig['sign_test_p']:.3g}; {sig['only_b']} rows hit only after RL, {sig['only_a']} only before). ")


def _paper_sentence(cmp: dict | None) -> str:
    if not cmp:
        return ""
    if not cmp["available"]:
        return f"No paper comparison: {cmp['reason'][0].lower()}{cmp['reason'][1:]}. "
    r10 = next((r for r in cmp["rows"] if r["metric"] == "hr@10"), None)
    within = "within" if cmp["within_all"] else "not within"
    head = (f"Against the paper's {cmp['category']} figures the reproduced metrics are {within} ±{cmp['tolerance']}"
            + (f" (HR@10 {r10['reproduced']:.4f} vs {r10['paper']:.4f}, {r10['delta_pct']:+.1f}%)"
               if r10 and r10["reproduced"] is not None else ""))
    diff = f"; protocol differences: {'; '.join(cmp['differences'])}" if cmp["differences"] else ""
    return head + diff + ". "


def rl_sentence(metrics: dict, k: int) -> str:
    rl, sft = metrics.get("rl"), metrics["sft"]
    if rl is None:
        return "RL was not run (rl.enabled: false). "
    return (f"After GRPO: HR@{k} {rl[f'hr@{k}']:.4f} ({rl[f'hr@{k}'] - sft[f'hr@{k}']:+.4f} vs SFT), "
            f"NDCG@{k} {rl[f'ndcg@{k}']:.4f} ({rl[f'ndcg@{k}'] - sft[f'ndcg@{k}']:+.4f}). ")


def collision_table(metrics: dict) -> tuple[list[str], list[list]]:
    """SID-level vs collision-aware hit rates: what sharing a SID adds to each model's score."""
    ks = [k for k in (1, 5, 10, 50) if f"hr@{k}" in metrics["sft"]]
    rows = [[label] + [f"{m[f'hr@{k}']:.4f} / {m[f'collision_aware_hr@{k}']:.4f}" for k in ks]
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


def extra_sections(p: ReportParams, metrics: dict, data_summary: dict, sid_summary: dict, training: dict,
                   rl_training: dict, eval_dir: Path, plots_dir: Path, dataset_dir: Path, sid_dir: Path) -> dict:
    """Paper comparison, decoding comparison, significance, experiments and seeds, plots, and the provenance
    record: everything issue-sized that the core tables above do not cover."""
    from harness.report import experiments, plots, tables
    from harness.report.paper import load_targets, paper_comparison
    from harness.report.significance import paired_test, ranks

    cmp = paper_comparison(load_targets(p.targets), data_summary.get("name", ""), metrics, data_summary, training,
                           p.tolerance)
    sig = None
    if metrics.get("rl") is not None:
        a, b = (json.loads((eval_dir / m / "predictions.json").read_text(encoding="utf-8")) for m in ("sft", "rl"))
        sig = paired_test(ranks(a), ranks(b), p.significance_k, p.bootstrap_samples, p.seed)
    runs, exp_note = experiments.dvc_experiments() if p.experiments else ([], "report.experiments: false")
    groups = experiments.seed_groups(runs)
    plots_dir.mkdir(parents=True, exist_ok=True)
    files = plots.metrics_at_k(model_blocks(metrics), plots_dir)
    files.append(plots.codes_per_level(sid_summary["comparison"], plots_dir))
    files += plots.training_curves(training.get("log_history", []), rl_training.get("log_history", []), plots_dir)
    lock_table, seeds = tables.lock_record()
    from harness.data.schema import read_dataset
    from harness.data.upstream_format import read_index_json

    ds = read_dataset(dataset_dir)
    index = read_index_json(sid_dir / "index.json", len(ds.items))
    sft_preds = json.loads((eval_dir / "sft" / "predictions.json").read_text(encoding="utf-8"))
    test_rows = [r for r in ds.split("test") if r.target in index]
    return {
        "examples": tables.examples(sft_preds, test_rows, ds.items, index),
        "paper": cmp,
        "paper_table": tables.paper_table(cmp) if cmp["available"] else None,
        "paper_methods": tables.paper_methods_table(cmp) if cmp["available"] else None,
        "reproductions": tables.reproductions_table(cmp) if cmp["available"] else None,
        "decoding": tables.decoding_table(metrics["decoding"]) if metrics.get("decoding") else None,
        "agreement": tables.agreement_table(metrics.get("upstream_evaluate", {})),
        "agreement_notes": {m: {k: c["agreement"].get(k) for k in ("rows", "identical_share", "top1_agreement",
                                                                    "native_dtype", "upstream_dtype", "skipped")}
                            for m, c in metrics.get("upstream_evaluate", {}).items() if c.get("agreement")},
        "significance": sig,
        "significance_table": tables.significance_table(sig) if sig else None,
        "experiments": experiments.experiment_rows(runs) if len(runs) > 1 else None,
        "experiments_note": exp_note or ("no experiments yet: `dvc exp run -S key=value` adds one"
                                         if len(runs) <= 1 else None),
        "seed_table": tables.seed_table(groups) if groups else None,
        "plots": [f"{plots_dir.name}/{f}" for f in files],
        "lock_table": lock_table,
        "seeds": seeds,
    }


def build_context(p: ReportParams, metrics: dict, data_summary: dict, sid_summary: dict, training: dict,
                  audit: dict, embedding: dict, rl_training: dict, upstream_pinned: str | None = None,
                  extra: dict | None = None) -> dict:
    tables = metric_tables(metrics)
    collision_header, collision_rows = collision_table(metrics)
    sid_header, sid_rows = sid_table(sid_summary)
    curve = [h for h in training.get("log_history", []) if "loss" in h or "eval_loss" in h]
    return {
        "title": p.title,
        "verdict": verdict(metrics, extra or {}),
        "metric_tables": tables,
        "metric_markdown": {name: tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)
                            for name, (header, rows) in tables.items()},
        "protocol": metrics["protocol"],
        "data": data_summary,
        "sid": sid_summary,
        "sid_header": sid_header,
        "sid_rows": sid_rows,
        "sid_markdown": tabulate(sid_rows, headers=sid_header, tablefmt="github", disable_numparse=True),
        "embedding": embedding,
        "rl_training": {k: v for k, v in rl_training.items() if k != "log_history"},
        "training": {k: v for k, v in training.items() if k != "log_history"},
        "loss_curve": curve,
        "collision_header": collision_header,
        "collision_rows": collision_rows,
        "collision_markdown": tabulate(collision_rows, headers=collision_header, tablefmt="github",
                                       disable_numparse=True),
        "audit": audit,
        "upstream_pinned": upstream_pinned or "none (no upstream/ gitlink in this checkout)",
        "backends": backend_rows(data_summary, embedding, sid_summary, training, rl_training, metrics),
        "versions": {k: v or "not installed" for k, v in packages().items()},
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {cpu_model()}",
        **(extra or {}),
    }


def _provenance_now() -> dict:
    """Upstream pin and checkout, the harness commit and dirty state when the report was rendered, hardware."""
    from harness.provenance import git_record, hardware

    try:  # the report's own outputs (removed by DVC before the stage runs) and dvc.lock do not make it dirty
        rec = git_record(dirty_ignores=("reports", "dvc.lock"))
    except HarnessError:
        rec = {}
    hw = hardware()
    return {"upstream_checked_out": rec.get("upstream_checked_out") or "not checked out",
            "upstream_dirty": rec.get("upstream_dirty"), "harness_commit": rec.get("harness_commit") or "unknown",
            "harness_dirty": rec.get("harness_dirty"),
            "gpus": f"{hw['gpu_count']} ({', '.join(hw['gpu_names'])})" if hw["gpu_count"] else "none",
            "cpu": f"{hw['cpu_model']} × {hw['cpu_count']}, {hw['memory_gib']} GiB"}


def _upstream_pin() -> str | None:
    """The pinned upstream commit (the gitlink; the same in every clone of a harness commit), or None."""
    from harness.provenance import git_record

    try:
        return git_record()["upstream_pinned"]
    except HarnessError:
        return None


def run_report(p: ReportParams, metrics_path: str | Path = "reports/metrics.json",
               dataset_dir: str | Path = "data/dataset", sid_dir: str | Path = "data/sid",
               embed_dir: str | Path = "data/embed", model_dir: str | Path = "models/sft",
               rl_dir: str | Path = "models/rl", audit_dir: str | Path = "reports/audit",
               out_dir: str | Path = "reports", eval_dir: str | Path = "reports/eval") -> dict:
    """Entry point of the ``report`` stage."""
    metrics = _read_json(Path(metrics_path))
    data_summary = _read_json(Path(dataset_dir) / "summary.json")
    sid_summary = _read_json(Path(sid_dir) / "summary.json")
    training = _read_json(Path(model_dir) / "training_log.json")
    rl_training = _read_json(Path(rl_dir) / "training_log.json")
    extra = extra_sections(p, metrics, data_summary, sid_summary, training, rl_training, Path(eval_dir),
                           Path(out_dir) / "plots", Path(dataset_dir), Path(sid_dir))
    ctx = build_context(
        p, metrics, data_summary, sid_summary, training,
        {"findings": _read_json(Path(audit_dir) / "findings.json"), "sid": _read_json(Path(audit_dir) / "sid.json"),
         "data": _read_json(Path(audit_dir) / "data.json")},
        _read_json(Path(embed_dir) / "meta.json"), rl_training, _upstream_pin(), extra)
    ctx["provenance"] = _provenance_now()
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                      autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
                      keep_trailing_newline=True)
    env.filters["md"] = md_escape
    env.filters["mdtable"] = md_table
    out = Path(out_dir)
    md = env.get_template("report.md.j2").render(**ctx)
    page = env.get_template("report.html.j2").render(**ctx)
    write_text(out / "report.md", md)
    write_text(out / "report.html", page)
    return ctx
