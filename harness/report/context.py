"""Everything the report templates show, gathered from the pipeline's artifacts into one context dict."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from tabulate import tabulate

from harness.errors import HarnessError
from harness.evaluate.baselines import BASELINES
from harness.params import ReportParams
from harness.provenance import cpu_model, packages
from harness.report.model_tables import (
    backend_rows,
    collision_table,
    metric_tables,
    model_blocks,
    sid_table,
)
from harness.report.verdict import verdict


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
    files.append(plots.rl_diagnostics(rl_training, plots_dir))
    labels = ranker_labels()
    if metrics.get("popularity"):
        files.append(plots.popularity_bias(metrics["popularity"], labels, plots_dir))
    lock_table, seeds = tables.lock_record()
    from harness.data.schema import read_dataset
    from harness.sid.index import read_index_json

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
        "exact": tables.exact_table(metrics["exact"]) if metrics.get("exact") else None,
        "exact_depth": tables.exact_depth_table(metrics["exact"]) if metrics.get("exact") else None,
        "exact_info": next(iter(metrics["exact"].values())) if metrics.get("exact") else None,
        "beyond": tables.beyond_table(metrics, labels) if metrics.get("beyond_accuracy") else None,
        "popularity": metrics.get("popularity"),
        "baseline_paper": (tables.baseline_paper_table(metrics, cmp, BASELINES.values())
                           if cmp["available"] else None),
        "agreement": tables.agreement_table(metrics.get("upstream_evaluate", {})),
        "agreement_notes": {m: {k: c["agreement"].get(k) for k in ("rows", "identical_share", "top1_agreement",
                                                                    "native_dtype", "upstream_dtype", "skipped")}
                            for m, c in metrics.get("upstream_evaluate", {}).items() if c.get("agreement")},
        "significance": sig,
        "rl_probe": tables.rl_probe_table(rl_training),
        "rl_summary": rl_training.get("diagnostics_summary"),
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
        "base_model": base_model_text(training),
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


def ranker_labels() -> dict[str, str]:
    """Short names of every ranker a beyond-accuracy row or plot series can belong to."""
    return {"sft": "SFT", "rl": "SFT + RL", "targets": "test targets", **{b.name: b.label for b in BASELINES.values()}}


def base_model_text(training: dict) -> str:
    """One line naming the weights SFT started from, with the revision when it is known."""
    base = training.get("base")
    if not isinstance(base, dict):
        return f"{training.get('base_model', 'unknown')} (no record of its revision: trained before it was kept)"
    src = base.get("source")
    if src == "scratch":
        return f"scratch: a config-initialised {base.get('architecture')} model (no pretrained weights)"
    if base.get("manifest"):
        return (f"{base['repo_id']} at commit {base['commit']} (asked for revision {base['revision']}; pulled by "
                f"`harness pull-model`, manifest sha256 {base['manifest_sha256'][:16]})")
    if base.get("gguf_sha256"):
        return f"{src}: {base['gguf']} from the {base['package']} wheel (GGUF sha256 {base['gguf_sha256'][:16]})"
    return f"{base.get('path', src)}: a local directory without a manifest (revision unknown)"


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
