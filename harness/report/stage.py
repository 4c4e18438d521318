"""Report stage: render reports/report.md and reports/report.html from the pipeline's artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from harness.errors import HarnessError
from harness.io import write_text
from harness.params import ReportParams
from harness.report.context import (
    _provenance_now,
    _upstream_pin,
    build_context,
    extra_sections,
)
from harness.report.markdown import md_escape, md_table

TEMPLATES = Path(__file__).resolve().parents[2] / "report_templates"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{path}: missing (run the earlier stages: dvc repro)") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}:{e.lineno}: broken JSON: {e.msg}") from None


def run_report(p: ReportParams, metrics_path: str | Path,
               dataset_dir: str | Path, sid_dir: str | Path,
               embed_dir: str | Path, model_dir: str | Path,
               rl_dir: str | Path, audit_dir: str | Path,
               eval_dir: str | Path, out_dir: str | Path) -> dict:
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
